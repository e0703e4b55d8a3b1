/**
 * Today's record-by-record restore, for the mount bench to time beside `cdp-sync restore`:
 * the base image, then every record after it through the point applied in log order
 * (`replayPoint`, the oracle the block-index restore is tested against), written to a new
 * file (fsynced, renamed) as restore does. Usage: `node replayRestore.mjs DIR DISK SEQ OUT`;
 * prints the number of records applied. Plain JavaScript over the built package.
 */
import * as path from "node:path"
import { listDisks, openChain } from "../../dist/receiver/internal/chain.js"
import { replayPoint } from "../../dist/receiver/internal/replay.js"

const [dir, diskId, seq, out] = process.argv.slice(2)
const disk = (await listDisks(dir)).find((d) => d.meta.diskId === diskId)
if (disk === undefined) throw new Error(`no disk ${diskId} in ${dir}`)
const chain = await openChain(disk.diskDir, disk.meta, "read")
const applied = await replayPoint(chain, Number(seq), { _tag: "File", path: path.resolve(out) })
if (applied === undefined) throw new Error("a retention fold raced the restore")
console.log(`${applied} records applied`)

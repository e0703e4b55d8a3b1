/**
 * `npm run bench`: every benchmark group, each figure beside its baseline (the
 * same work done the plainest fast way) and the ratio. Not a test: targets are
 * marked yes/NO, and the exit code is 0 either way.
 * Run one group with `npm run bench -- core` (names: see `groups`). Every group
 * measures the built package (dist/, what `npm ci` builds and what users import),
 * not the sources through tsx: its transform keeps function names by wrapping every
 * closure as it is made, which cost the replicator about a quarter of its 4 KiB
 * rate. `npm run bench` builds first.
 */
import * as journal from "./adapters-journal.js"
import * as wire from "./adapters-wire.js"
import * as bitmap from "./bitmap.js"
import * as checkTrace from "./check-trace.js"
import * as checksum from "./checksum.js"
import * as core from "./core.js"
import * as mount from "./mount.js"
import * as nbd from "./nbd.js"
import * as receiver from "./receiver.js"
import * as replicator from "./replicator.js"
import { type BenchRow, renderTable, targetMet } from "./table.js"

const groups: ReadonlyArray<readonly [string, string, () => Promise<ReadonlyArray<BenchRow>>]> = [
  ["bitmap", "persistent bitmap (2^30 blocks)", bitmap.run],
  ["core", "core: decide / evolve (2^30 blocks of 64 KiB)", core.run],
  ["journal", "event journal: append with fsync per batch", journal.run],
  ["wire", "wire codec: encode / decode", wire.run],
  ["check-trace", "check-trace: streaming legality check of a trace", checkTrace.run],
  ["receiver", "log receiver: ingest with fsync before ack", receiver.run],
  ["replicator", "replicator: end to end on loopback (the real receiver process)", replicator.run],
  [
    "nbd",
    "NBD: fio through cdp-sync serve against qemu-nbd and QEMU's mirror (ratios of the medians)",
    nbd.run
  ],
  [
    "checksum",
    "checksum resync and online verify: a 1 GiB disk, the real receiver and filter processes (ratios of the medians)",
    checksum.run
  ],
  [
    "mount",
    "mount and restore: a recovery point over NBD and through the block index (ratios of the medians)",
    mount.run
  ]
]

const wanted = process.argv.slice(2)
const missed: Array<string> = []
for (const [name, title, run] of groups) {
  if (wanted.length > 0 && !wanted.includes(name)) continue
  process.stderr.write(`running ${name} …\n`)
  const rows = await run()
  console.log(renderTable(title, rows))
  for (const row of rows) if (!targetMet(row)) missed.push(`${name}: ${row.name} (${row.target?.text})`)
}
console.log(missed.length === 0 ? "\nall targets met" : `\ntargets missed:\n  ${missed.join("\n  ")}`)

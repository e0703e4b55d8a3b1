/**
 * nbdcopy (libnbd) copies a file onto the export — its zero runs sent as zero requests
 * over a disk first filled with a pattern — and back into a new file; both copies equal
 * the source, and after SIGTERM the latest recovery point equals the image.
 */
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { afterEach, expect, it } from "vitest"
import { MiB, mustRun, type NbdExport, serve, stopAndCompareReplica } from "../support/nbdExport.js"
import { need } from "../support/tools.js"

const SIZE = 16 * MiB
let exp: NbdExport | undefined
afterEach(async () => {
  await exp?.dispose()
  exp = undefined
})

it("nbdcopy copies a file to the export and back; the replica equals it", async (ctx) => {
  const t = need(ctx, "nbdcopy")
  exp = await serve({ size: SIZE })
  const source = Buffer.alloc(SIZE)
  // Random runs of uneven lengths between zero runs.
  for (let at = 0; at < SIZE; at += 3 * MiB) randomBytes(MiB + 4097).copy(source, at)
  const sourceFile = path.join(exp.dir, "source.img")
  const patternFile = path.join(exp.dir, "pattern.img")
  const back = path.join(exp.dir, "back.img")
  await fs.writeFile(sourceFile, source)
  await fs.writeFile(patternFile, Buffer.alloc(SIZE, 0x5c))
  await mustRun(t.nbdcopy, ["--flush", patternFile, exp.uri])
  await mustRun(t.nbdcopy, ["--flush", sourceFile, exp.uri])
  await mustRun(t.nbdcopy, [exp.uri, back])
  expect((await fs.readFile(back)).equals(source)).toBe(true)
  const image = await stopAndCompareReplica(exp)
  expect(image.equals(source)).toBe(true)
})

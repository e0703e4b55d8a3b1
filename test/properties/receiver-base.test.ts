/**
 * The base image's checksums over random geometries, with block counts around every edge
 * of the layout — a checksum unit, the copy's 1 MiB chunk, a window of the checksum table —
 * and random units and table windows: a disk is created, records are folded into its base
 * (twice, so a fold reads a base a fold wrote), and then the base verifies, restores exactly
 * the model's image, and any single flipped byte in it (image, table or trailer) is found,
 * in the image at the offset of its unit. A fold that does not hash again the units its
 * records changed (a mutant) must be caught.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import fc from "fast-check"
import { afterAll, afterEach, describe, expect, it } from "vitest"
import { baseLayout, tuning, verifyBaseImage } from "../../src/receiver/internal/base.js"
import { ReceiverMutants as mutants } from "../../src/receiver/internal/mutants.js"
import * as Restore from "../../src/receiver/Restore.js"
import { numRuns } from "../support/arbitraries.js"
import {
  captured,
  type Change,
  flipByte,
  imageAt,
  readMetaFile,
  removeTempDirs,
  tempDir,
  withStore
} from "../support/receiverDisk.js"

const defaults = { ...tuning }
afterEach(() => {
  Object.assign(tuning, defaults)
  mutants.foldSkipsRehash = false
  captured.length = 0
})
afterAll(removeTempDirs)

const MAX_DISK = 2.5 * 2 ** 20
const CHUNK = 1 << 20

interface Case {
  readonly blockSize: number
  readonly blockCount: number
  readonly unitBytes: number
  readonly tableWindowBytes: number
  readonly records: ReadonlyArray<{
    readonly block: boolean
    readonly at: number
    readonly length: number
    readonly fill: number
  }>
  /** Where the flips land, as fractions of the image and of the rest of the file. */
  readonly flipInImage: number
  readonly flipAfterImage: number
}

/** Block counts on either side of each edge of the layout (in blocks of `blockSize`). */
const edges = (blockSize: number, unitBytes: number, tableWindowBytes: number): Array<number> => {
  const windowUnits = Math.max(1, Math.floor(tableWindowBytes / 4))
  const bytes = [
    unitBytes,
    2 * unitBytes,
    CHUNK,
    2 * CHUNK,
    windowUnits * unitBytes,
    (windowUnits + 1) * unitBytes
  ]
  const counts = new Set<number>([1])
  for (const b of bytes) {
    const blocks = b / blockSize
    for (const c of [Math.floor(blocks) - 1, Math.floor(blocks), Math.ceil(blocks), Math.ceil(blocks) + 1])
      if (c >= 1 && c * blockSize <= MAX_DISK) counts.add(c)
  }
  return [...counts].sort((a, b) => a - b)
}

const arbitraryCase: fc.Arbitrary<Case> = fc
  .record({
    blockSize: fc.constantFrom(4096, 8192, 65536),
    unitBytes: fc.constantFrom(4096, 16384, 65536),
    tableWindowBytes: fc.constantFrom(4, 8, 12, 64 * 1024)
  })
  .chain(({ blockSize, unitBytes, tableWindowBytes }) =>
    fc.record({
      blockSize: fc.constant(blockSize),
      unitBytes: fc.constant(unitBytes),
      tableWindowBytes: fc.constant(tableWindowBytes),
      blockCount: fc.constantFrom(...edges(blockSize, unitBytes, tableWindowBytes)),
      records: fc.array(
        fc.record({
          block: fc.boolean(),
          at: fc.double({ min: 0, max: 1, noNaN: true }),
          length: fc.integer({ min: 1, max: 3 * unitBytes }),
          fill: fc.integer({ min: 1, max: 255 })
        }),
        { minLength: 4, maxLength: 24 }
      ),
      flipInImage: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
      flipAfterImage: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true })
    })
  )

const changesOf = (c: Case): Array<Change> => {
  const diskBytes = c.blockSize * c.blockCount
  return c.records.map((r, i) => {
    const seq = i + 1
    if (r.block) {
      const block = Math.min(c.blockCount - 1, Math.floor(r.at * c.blockCount))
      const data = new Uint8Array(c.blockSize).fill(r.fill)
      return { record: { _tag: "Block", seq, epoch: 0, block, data }, offset: block * c.blockSize, data }
    }
    const length = Math.min(r.length, diskBytes)
    const offset = Math.min(diskBytes - length, Math.floor(r.at * diskBytes))
    const data = new Uint8Array(length).fill(r.fill)
    return { record: { _tag: "Write", seq, epoch: 0, offset, data }, offset, data }
  })
}

const roundTrip = async (c: Case): Promise<void> => {
  tuning.unitBytes = c.unitBytes
  tuning.tableWindowBytes = c.tableWindowBytes
  const geometry = { blockSize: c.blockSize, blockCount: c.blockCount }
  const diskBytes = c.blockSize * c.blockCount
  const changes = changesOf(c)
  const dir = tempDir("cdp-base-property-")
  // Every record in a segment of its own (they are all larger than the segment size), so
  // each but the last is sealed and can be folded.
  const exit = await withStore(
    dir,
    (store) =>
      Effect.gen(function* () {
        const disk = yield* store.disk({ diskId: "vm", ...geometry, watermark: 0 })
        for (const change of changes) {
          disk.append(change.record, true)
          yield* disk.flushed
        }
        const sealed = disk.segments.slice(0, -1)
        const middle = sealed[Math.floor(sealed.length / 2)]!.lastSeq
        yield* Effect.promise(() => disk.foldTo(middle))
        yield* Effect.promise(() => disk.foldTo(sealed.at(-1)!.lastSeq))
        return { diskDir: disk.diskDir, baseSeq: disk.base.seq }
      }),
    { segmentBytes: 64 }
  )
  if (Exit.isFailure(exit)) throw new Error(`writing the disk failed: ${String(exit.cause)}`)
  const { diskDir, baseSeq } = exit.value
  const meta = readMetaFile(diskDir)
  const baseFile = path.join(diskDir, "base.img")
  const layout = baseLayout(diskBytes, c.unitBytes)
  expect(fs.statSync(baseFile).size).toBe(layout.fileBytes)

  // Sound, and restores exactly the model.
  expect(await verifyBaseImage(diskDir, meta)).toEqual([])
  const out = path.join(tempDir("cdp-base-property-out-"), "vm.img")
  await Effect.runPromise(Restore.restore({ dir, diskId: "vm", at: baseSeq, out }))
  expect(fs.readFileSync(out).equals(imageAt(geometry, changes, baseSeq))).toBe(true)

  // A byte flipped in the image: found, at its unit's offset.
  const inImage = Math.floor(c.flipInImage * diskBytes)
  flipByte(baseFile, inImage)
  const found = await verifyBaseImage(diskDir, meta)
  expect(found.map((e) => [e.file, e.offset])).toEqual([
    [baseFile, Math.floor(inImage / c.unitBytes) * c.unitBytes]
  ])
  const refused = await Effect.runPromiseExit(Restore.restore({ dir, diskId: "vm", at: baseSeq, out }))
  expect(Exit.isFailure(refused)).toBe(true)
  flipByte(baseFile, inImage)

  // A byte flipped in the table or the trailer: found too.
  const after = layout.tableOffset + Math.floor(c.flipAfterImage * (layout.fileBytes - layout.tableOffset))
  flipByte(baseFile, after)
  const damage = await verifyBaseImage(diskDir, meta)
  expect(damage.length).toBeGreaterThan(0)
  for (const e of damage) expect(e.file).toBe(baseFile)
  flipByte(baseFile, after)
  expect(await verifyBaseImage(diskDir, meta)).toEqual([])
}

describe("base image checksums (property)", () => {
  it("round-trip through folds, and every single flipped byte is found", async () => {
    await fc.assert(fc.asyncProperty(arbitraryCase, roundTrip), { numRuns: numRuns(25) })
  })

  it("mutant: a fold that does not hash again what its records changed is caught", async () => {
    mutants.foldSkipsRehash = true
    const details = await fc.check(fc.asyncProperty(arbitraryCase, roundTrip), { numRuns: 50 })
    expect(details.failed, `the mutant survived ${details.numRuns} runs`).toBe(true)
    expect(String(details.errorInstance)).toMatch(/do not match their CRC32C/)
  })
})

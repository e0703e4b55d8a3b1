/**
 * Issue 17: restore through the block index writes each byte of the image once — the base's
 * bytes the log does not override, then the log's surviving extents, segment by segment in
 * file order — and keeps the image sparse: a disk holding little data restores to a file
 * allocating about that much. Equal to the record-by-record replay (the oracle). The base is
 * read only where no extent covers it, and every unit read is checked: damage in a unit the
 * log wholly overrides does not stop a restore (scrub still names it), damage anywhere else
 * does. Three kept mutants (a restore writing the overridden base bytes too, one filling the
 * holes, one checking only the first unit of each read of the base) are caught.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { verifyBaseImage } from "../../src/receiver/internal/base.js"
import { type Chain, openChain } from "../../src/receiver/internal/chain.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import { imageWrites } from "../../src/receiver/internal/imageWriter.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import { openPointMap } from "../../src/receiver/internal/point.js"
import { replayPoint, writeTarget } from "../../src/receiver/internal/replay.js"
import { type Progress, writePoint } from "../../src/receiver/internal/writePoint.js"
import * as Restore from "../../src/receiver/Restore.js"
import {
  type Change,
  failureOf,
  flipByte,
  imageAt,
  makeChanges,
  readMetaFile,
  writeDisk
} from "../support/receiverDisk.js"
import { restoredBeside, tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-receiver-restore-writes-", "each")

/** 64 MiB, written only in its first 192 KiB and in one block near the end. */
const geometry = { blockSize: 4096, blockCount: 16_384 }
const diskBytes = geometry.blockSize * geometry.blockCount
const DATA = 192 * 1024

afterEach(() => {
  ReceiverMutants.restoreWritesOverriddenBase = false
  ReceiverMutants.restoreFillsHoles = false
  ReceiverMutants.restoreChecksFirstUnitOnly = false
})

/** A log folded once (the base holds data), then several segments overwriting much of it, and a far block. */
const makeLog = async (dir: string) => {
  const first = makeChanges(geometry, 60, { seed: 23, limit: DATA })
  const folded = await writeDisk(dir, "vm", geometry, first, { segmentBytes: 48 * 1024, fold: true })
  const later = makeChanges(geometry, 120, { seed: 29, limit: DATA, firstSeq: folded.lastSeq + 1 })
  const far = new Uint8Array(geometry.blockSize).fill(0xee)
  const block = geometry.blockCount - 3
  later.push({
    record: { _tag: "Block", seq: folded.lastSeq + later.length + 1, epoch: 0, block, data: far },
    offset: block * geometry.blockSize,
    data: far
  })
  const written = await writeDisk(dir, "vm", geometry, later, { segmentBytes: 48 * 1024 })
  const chain = await openChain(written.diskDir, readMetaFile(written.diskDir), "read")
  return { ...written, baseSeq: folded.baseSeq, changes: [...first, ...later], chain }
}

/** Restores `seq` of `chain` through `writePoint`, counting writes: what is wrong with them, if anything. */
const restoreCounted = async (chain: Chain, seq: number, out: string) => {
  const map = await openPointMap(chain, seq, false)
  const writes: Array<readonly [number, number]> = []
  const progress: Array<Progress> = []
  imageWrites.observe = (at, length) => writes.push([at, length])
  try {
    await writeTarget({ _tag: "File", path: out }, diskBytes, (image) =>
      writePoint(map, image, false, (p) => progress.push(p))
    )
  } finally {
    imageWrites.observe = undefined
  }
  let logBytes = 0
  for (const x of map.extents) logBytes += x.end - x.start
  const problems: Array<string> = []
  const sorted = [...writes].sort((a, b) => a[0] - b[0])
  for (let k = 1; k < sorted.length; k++)
    if (sorted[k]![0] < sorted[k - 1]![0] + sorted[k - 1]![1])
      problems.push(`bytes from ${sorted[k]![0]} written twice`)
  const total = writes.reduce((n, [, length]) => n + length, 0)
  // The base's one chunk holding data (1 MiB, less what the log overrides), and the log's extents.
  if (total > (1 << 20) + logBytes)
    problems.push(`${total} bytes written, at most ${(1 << 20) + logBytes} hold data`)
  return { problems, total, logBytes, progress, map }
}

describe("restore writes each byte once, sparse", () => {
  it("each byte once: the base where the log does not override it, then the log's extents; progress counts exactly these", async () => {
    const dir = tempDir()
    const { chain, lastSeq, baseSeq, changes } = await makeLog(dir)
    expect(baseSeq).toBeGreaterThan(0)
    expect(chain.segments.length).toBeGreaterThan(2)
    const out = restoredBeside(dir, "counted")
    const { problems, total, logBytes, progress, map } = await restoreCounted(chain, lastSeq, out)
    expect(problems).toEqual([])
    // The log's bytes are all written; the base's only where no extent lies.
    expect(total).toBeGreaterThan(logBytes)
    expect(map.extents.length).toBeGreaterThan(10)
    // Each byte of the image counted once, where it is placed.
    expect(progress[0]).toEqual({ phase: "writing", bytes: 0, total: diskBytes })
    // Then the image written back, a phase of its own: its start and its end.
    expect(progress.slice(-3)).toEqual([
      { phase: "writing", bytes: diskBytes, total: diskBytes },
      { phase: "syncing", bytes: 0, total: diskBytes },
      { phase: "syncing", bytes: diskBytes, total: diskBytes }
    ])
    const image = fs.readFileSync(out)
    expect(image.equals(imageAt(geometry, changes, lastSeq))).toBe(true)
    const replayed = restoredBeside(dir, "replayed")
    await replayPoint(chain, lastSeq, { _tag: "File", path: replayed })
    expect(image.equals(fs.readFileSync(replayed))).toBe(true)
  })

  it("sparse: the restored image allocates about the data it holds, not the disk", async () => {
    const dir = tempDir()
    const { lastSeq, changes } = await makeLog(dir)
    const out = path.join(tempDir(), "vm.img")
    await Effect.runPromise(Restore.restore({ dir, diskId: "vm", at: "latest", out }))
    const stat = fs.statSync(out)
    expect(stat.size).toBe(diskBytes)
    // The base's one data chunk (1 MiB) and the far block, with room for the file system's rounding.
    expect(stat.blocks * 512).toBeLessThanOrEqual(2 << 20)
    expect(fs.readFileSync(out).equals(imageAt(geometry, changes, lastSeq))).toBe(true)
  })

  it("catches a restore that writes the overridden base bytes too, and one that fills the holes (mutants)", async () => {
    const dir = tempDir()
    const { chain, lastSeq } = await makeLog(dir)
    ReceiverMutants.restoreWritesOverriddenBase = true
    const twice = await restoreCounted(chain, lastSeq, restoredBeside(dir, "twice"))
    expect(twice.problems.join("\n")).toMatch(/written twice/)
    ReceiverMutants.restoreWritesOverriddenBase = false
    ReceiverMutants.restoreFillsHoles = true
    const filled = await restoreCounted(chain, lastSeq, restoredBeside(dir, "filled"))
    expect(filled.problems.join("\n")).toMatch(/bytes written, at most/)
    const out = path.join(tempDir(), "filled.img")
    await Effect.runPromise(Restore.restore({ dir, diskId: "vm", at: "latest", out }))
    expect(fs.statSync(out).blocks * 512).toBeGreaterThan(2 << 20)
  })
})

describe("restore reads the base only where the log leaves bytes of it", () => {
  const UNIT = 64 * 1024
  const small = { blockSize: 4096, blockCount: 1024 }
  const write = (seq: number, offset: number, length: number, fill: number): Change => {
    const data = new Uint8Array(length).fill(fill)
    return { record: { _tag: "Write", seq, epoch: 0, offset, data }, offset, data }
  }

  /** A 4 MiB disk whose base holds units 0–3; then unit 1 overwritten whole, units 2 and 60 in part. */
  const setUp = async () => {
    const dir = tempDir()
    // Each record a segment of its own: the last stays active, the four before are folded.
    const first = [0, 1, 2, 3].map((u) => write(u + 1, u * UNIT, UNIT, 0x11 * (u + 1)))
    first.push(write(5, 60 * UNIT, 4096, 0x77))
    const folded = await writeDisk(dir, "vm", small, first, { segmentBytes: 48 * 1024, fold: true })
    expect(folded.baseSeq).toBe(4)
    const later = [write(6, UNIT, UNIT, 0xa5), write(7, 2 * UNIT + 8192, 4096, 0x5a)]
    const { diskDir, lastSeq } = await writeDisk(dir, "vm", small, later)
    const image = imageAt(small, [...first, ...later], lastSeq)
    const restore = () =>
      Effect.runPromiseExit(
        Restore.restore({ dir, diskId: "vm", at: "latest", out: path.join(tempDir(), "vm.img") })
      )
    return { diskDir, baseFile: path.join(diskDir, "base.img"), image, restore }
  }

  it("damage in a unit the log overrides whole is not read (scrub still finds it); damage elsewhere is refused, naming the unit", async () => {
    const { diskDir, baseFile, image, restore } = await setUp()
    flipByte(baseFile, UNIT + 100)
    const restored = await restore()
    if (Exit.isFailure(restored)) throw new Error(String(restored.cause))
    expect(fs.readFileSync(restored.value.out).equals(image)).toBe(true)
    expect((await verifyBaseImage(diskDir, readMetaFile(diskDir))).map((e) => e.offset)).toEqual([UNIT])
    flipByte(baseFile, UNIT + 100)
    // Unit 2 (the log overrides 4 KiB of it) and unit 40 (a hole), each in the middle of a read.
    for (const at of [2 * UNIT + 100, 40 * UNIT + 5]) {
      flipByte(baseFile, at)
      const error = failureOf(await restore())
      expect(error).toBeInstanceOf(LogCorrupt)
      expect(error).toMatchObject({ file: baseFile, offset: Math.floor(at / UNIT) * UNIT })
      expect((error as LogCorrupt).reason).toMatch(/do not match their CRC32C/)
      flipByte(baseFile, at)
    }
  })

  it("catches a restore that checks only the first unit of each read of the base (mutant)", async () => {
    const { baseFile, image, restore } = await setUp()
    flipByte(baseFile, 2 * UNIT + 100)
    ReceiverMutants.restoreChecksFirstUnitOnly = true
    const restored = await restore()
    // The damaged byte is one the image keeps: written unchecked.
    if (Exit.isFailure(restored)) throw new Error(String(restored.cause))
    expect(fs.readFileSync(restored.value.out).equals(image)).toBe(false)
  })
})

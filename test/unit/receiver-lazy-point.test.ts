/**
 * Issue 17: a mount's reader (`openLazyPointReader`), which checks each segment's `.bix` when a
 * read first needs it instead of merging every map before the first byte. For random logs
 * (several segments, a fold or none), random points and random reads in a random order, with
 * some `.bix` removed, flipped or forged with a valid CRC and `checkAll` run at a random moment,
 * every read equals the model image; each `.bix` that cannot be believed is noted and rebuilt.
 * Mutants caught: maps consulted oldest first (`lazyPointOldestFirst`), and a `.bix` taken
 * when it decodes, unchecked against its records (`lazyPointTrustsBix`). A damaged record is
 * refused naming its file and byte, never served; a segment a fold removed after the opening
 * is still served from the file held open, and no `.bix` is written back beside it.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { blockIndexName, buildMap } from "../../src/receiver/internal/blockIndex.js"
import { type Note, openChain } from "../../src/receiver/internal/chain.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import { RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import { openLazyPointReader } from "../../src/receiver/internal/lazyPoint.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import {
  type Change,
  flipByte,
  forgeOldestBlockIndex,
  imageAt,
  makeChanges,
  readMetaFile,
  writeDisk
} from "../support/receiverDisk.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-lazy-point-", "each")
const geometry = { blockSize: 4096, blockCount: 4 }
const diskBytes = geometry.blockSize * geometry.blockCount

afterEach(() => {
  ReceiverMutants.lazyPointOldestFirst = false
  ReceiverMutants.lazyPointTrustsBix = false
})

type Damage = "none" | "missing" | "flipped" | "forged"

interface Case {
  readonly seed: number
  readonly count: number
  readonly fold: boolean
  readonly at: number
  /** What happens to each sealed segment's `.bix`, in turn. */
  readonly damage: ReadonlyArray<Damage>
  readonly reads: ReadonlyArray<{ readonly offset: number; readonly length: number }>
  /** After how many reads `checkAll` runs (beyond the last: never). */
  readonly checkAllAfter: number
}

const arbitraryCase: fc.Arbitrary<Case> = fc.record({
  seed: fc.integer({ min: 1, max: 1 << 30 }),
  count: fc.integer({ min: 8, max: 60 }),
  fold: fc.boolean(),
  at: fc.double({ min: 0, max: 1, noNaN: true }),
  damage: fc.array(fc.constantFrom<Damage>("none", "none", "missing", "flipped", "forged"), {
    minLength: 1,
    maxLength: 6
  }),
  reads: fc.array(
    fc.record({
      offset: fc.integer({ min: 0, max: diskBytes - 1 }),
      length: fc.oneof(fc.integer({ min: 1, max: 700 }), fc.constantFrom(4095, 4096, 4097, 9000))
    }),
    { minLength: 1, maxLength: 12 }
  ),
  checkAllAfter: fc.integer({ min: 0, max: 14 })
})

/** Damages the `.bix` of each sealed segment as `damage` says; the files whose `.bix` cannot be believed. */
const damageIndexes = (
  chain: Awaited<ReturnType<typeof openChain>>,
  damage: ReadonlyArray<Damage>
): Set<string> => {
  const bad = new Set<string>()
  chain.segments.slice(0, -1).forEach((segment, i) => {
    const file = path.join(chain.diskDir, blockIndexName(segment.name))
    const what = damage[i % damage.length]!
    if (what === "none" || !fs.existsSync(file)) return
    if (what === "missing") fs.rmSync(file)
    else if (what === "flipped") flipByte(file, Math.floor(fs.statSync(file).size / 2))
    else {
      const { oldest } = forgeOldestBlockIndex(chain, segment)
      // A forgery that changes nothing (no overlapping writes) is no damage.
      if (oldest.length === 0) return
    }
    bad.add(file)
  })
  return bad
}

const run = async (c: Case, changes: ReadonlyArray<Change>): Promise<void> => {
  const dir = tempDir()
  let written: Awaited<ReturnType<typeof writeDisk>>
  try {
    written = await writeDisk(dir, "vm", geometry, changes, { segmentBytes: 6000, fold: c.fold })
  } catch (e) {
    if (c.fold && String(e).includes("nothing sealed to fold")) return
    throw e
  }
  const { diskDir, baseSeq, lastSeq } = written
  const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
  damageIndexes(chain, c.damage)
  const seq = baseSeq + Math.round(c.at * (lastSeq - baseSeq))
  const expected = imageAt(geometry, changes, seq)
  const notes: Array<Note> = []
  const reader = await openLazyPointReader(chain, seq, true, (n) => notes.push(n))
  if (reader === undefined) throw new Error("no fold runs here")
  try {
    for (let k = 0; k <= c.reads.length; k++) {
      if (k === c.checkAllAfter) await reader.checkAll()
      const r = c.reads[k]
      if (r === undefined) break
      const length = Math.min(r.length, diskBytes - r.offset)
      const got = Buffer.from(await reader.read(r.offset, length))
      expect(got.equals(expected.subarray(r.offset, r.offset + length)), `bytes ${r.offset}+${length}`).toBe(
        true
      )
    }
    // The whole disk, in one read and after every map was needed.
    expect(Buffer.from(await reader.read(0, diskBytes)).equals(expected), `the disk at seq ${seq}`).toBe(true)
  } finally {
    await reader.close()
  }
  // Each `.bix` it rebuilt is noted once, naming the file, and written back intact.
  const named = notes.map((n) => String(n.annotations.file))
  expect(new Set(named).size).toBe(named.length)
}

const property = fc.asyncProperty(arbitraryCase, (c) =>
  run(c, makeChanges(geometry, c.count, { seed: c.seed, limit: 12_000 }))
)

describe("a mount's reader: each segment's block index checked when a read first needs it (issue 17)", () => {
  it("random reads at random points equal the model image, whatever was done to the .bix files", async () => {
    await fc.assert(property, { numRuns: 25 })
  }, 120_000)

  it("catches a reader that consults the segments' maps oldest first (mutant)", async () => {
    ReceiverMutants.lazyPointOldestFirst = true
    const result = await fc.check(property, { numRuns: 25, seed: 17, endOnFailure: true })
    expect(result.failed).toBe(true)
  }, 120_000)

  it("a .bix forged with a valid CRC is checked against its records before a read uses it: rebuilt, noted, right bytes (a reader trusting it is caught)", async () => {
    const dir = tempDir()
    const changes = makeChanges(geometry, 40, { seed: 7, limit: 6000 })
    const { diskDir } = await writeDisk(dir, "vm", geometry, changes, { segmentBytes: 8192 })
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    // The end of the first segment: its map is the newest the point reads through a `.bix`.
    const seq = chain.segments[0]!.lastSeq
    const expected = imageAt(geometry, changes, seq)
    const read = async () => {
      const { file, oldest } = forgeOldestBlockIndex(chain, chain.segments[0]!)
      expect(oldest).not.toEqual(buildMap(geometry, chain.segments[0]!.entries!))
      const notes: Array<Note> = []
      const reader = (await openLazyPointReader(chain, seq, true, (n) => notes.push(n)))!
      try {
        return { file, notes, bytes: Buffer.from(await reader.read(0, diskBytes)) }
      } finally {
        await reader.close()
      }
    }
    const { file, notes, bytes } = await read()
    expect(bytes.equals(expected)).toBe(true)
    expect(notes.map((n) => [n.message, n.annotations.file])).toContainEqual(["rebuilt a block index", file])
    expect(String(notes[0]!.annotations.reason)).toMatch(/at odds with its segment/)
    ReceiverMutants.lazyPointTrustsBix = true
    expect((await read()).bytes.equals(expected)).toBe(false)
  })

  it("a damaged record is refused naming its file and byte, never served; other reads go on", async () => {
    const dir = tempDir()
    const changes = makeChanges(geometry, 30, { seed: 3, limit: 12_000 })
    const { diskDir, lastSeq } = await writeDisk(dir, "vm", geometry, changes, { segmentBytes: 6000 })
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const reader = (await openLazyPointReader(chain, lastSeq, false, () => undefined))!
    try {
      // The newest write: its bytes are the point's; flip one of its payload bytes (sealed or active segment).
      const last = changes.at(-1)!
      const segment = chain.segments.find(
        (s) => s.firstSeq <= last.record.seq && last.record.seq <= s.lastSeq
      )!
      const entry = segment.entries!.find((e) => e.seq === last.record.seq)!
      const file = path.join(diskDir, segment.name)
      flipByte(file, entry.offset + RECORD_HEADER_BYTES + 1)
      const error = await reader.read(last.offset, 1).then(
        () => undefined,
        (e: unknown) => e
      )
      expect(error).toBeInstanceOf(LogCorrupt)
      expect(error).toMatchObject({ file, offset: entry.offset })
      // Bytes no later record holds are read from elsewhere, still checked.
      const expected = imageAt(geometry, changes, lastSeq)
      const outside = [0, 4096, 8192, 12_288].find(
        (at) => at + 4096 <= last.offset || at >= last.offset + last.data.length
      )!
      const got = await reader.read(outside, 4096).then(
        (b) => Buffer.from(b).equals(expected.subarray(outside, outside + 4096)),
        (e: unknown) => e instanceof LogCorrupt
      )
      expect(got).toBe(true)
    } finally {
      await reader.close()
    }
  })

  it("a segment a fold removed after the opening is read from the file held open; no .bix is written back beside it", async () => {
    const dir = tempDir()
    const changes = makeChanges(geometry, 60, { seed: 11, limit: 12_000 })
    const { diskDir, lastSeq } = await writeDisk(dir, "vm", geometry, changes, { segmentBytes: 6000 })
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    expect(chain.segments.length).toBeGreaterThan(2)
    const notes: Array<Note> = []
    const reader = (await openLazyPointReader(chain, lastSeq, true, (n) => notes.push(n)))!
    try {
      // What a fold does to the segments it folds: their files unlinked (the base replaced too, held open here).
      const folded = chain.segments[0]!
      fs.rmSync(path.join(diskDir, blockIndexName(folded.name)))
      fs.rmSync(path.join(diskDir, folded.name))
      expect(Buffer.from(await reader.read(0, diskBytes)).equals(imageAt(geometry, changes, lastSeq))).toBe(
        true
      )
      await reader.checkAll()
      expect(notes.map((n) => n.annotations.file)).toContain(path.join(diskDir, blockIndexName(folded.name)))
      expect(fs.existsSync(path.join(diskDir, blockIndexName(folded.name)))).toBe(false)
    } finally {
      await reader.close()
    }
  })
})

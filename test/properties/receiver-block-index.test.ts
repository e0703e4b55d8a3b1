/**
 * Issue 17: the block index. For random logs (writes of random sizes at random offsets, some
 * overlapping, resync blocks, several segments, a fold or none) and random recovery points,
 * reads through the index (`openPointReader`, in random pieces, and random ranges around the
 * map's extent edges and the base's units) and the index-based restore
 * equal the model image, and the restore is byte-identical to the record-by-record replay.
 * A block index that keeps the oldest version of each range (`blockIndexKeepsOldest`), and a
 * point whose segments' maps are merged without the newer ones' union (`pointMergeForgetsNewer`),
 * are caught. The restore's reads are shrunk at random (`writePoint`'s tuning) so they split at
 * every edge: between records, inside a run, a record larger than a read, buffers reused.
 */
import * as fs from "node:fs"
import { Effect } from "effect"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { openChain } from "../../src/receiver/internal/chain.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import { buildMap, mergeUnder, recordRange } from "../../src/receiver/internal/blockIndex.js"
import { type IndexEntry, Kind, RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import {
  mergeNewestFirst,
  openPointMap,
  openPointReader,
  type PointExtent
} from "../../src/receiver/internal/point.js"
import { replayPoint } from "../../src/receiver/internal/replay.js"
import { tuning } from "../../src/receiver/internal/writePoint.js"
import * as Restore from "../../src/receiver/Restore.js"
import { type Change, imageAt, readMetaFile, writeDisk } from "../support/receiverDisk.js"
import { restoredBeside, tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-block-index-", "each")
const geometry = { blockSize: 4096, blockCount: 16 }
const diskBytes = geometry.blockSize * geometry.blockCount

const defaultTuning = { ...tuning }

afterEach(() => {
  ReceiverMutants.blockIndexKeepsOldest = false
  ReceiverMutants.pointMergeForgetsNewer = false
  Object.assign(tuning, defaultTuning)
})

interface Case {
  readonly changes: ReadonlyArray<Change>
  readonly segmentBytes: number
  readonly fold: false | true | "mid-segment"
  /** Fractions of the way from the base to the last seq: the points read. */
  readonly at: ReadonlyArray<number>
  /** Piece sizes the reader is asked for, in turn. */
  readonly pieces: ReadonlyArray<number>
  /** How the restore reads and writes (`writePoint`'s tuning). */
  readonly tuning: typeof tuning
}

const change = (seq: number, c: { block: boolean; offset: number; length: number; fill: number }): Change => {
  if (c.block) {
    const block = c.offset % geometry.blockCount
    const data = new Uint8Array(geometry.blockSize).fill(c.fill)
    return { record: { _tag: "Block", seq, epoch: 0, block, data }, offset: block * geometry.blockSize, data }
  }
  // Offsets cluster near the start so writes overlap; sizes cross block and unit edges.
  const offset = Math.min(c.offset * 37, diskBytes - c.length)
  const data = new Uint8Array(c.length).map((_, i) => (c.fill + i) & 0xff || 1)
  return { record: { _tag: "Write", seq, epoch: 0, offset, data }, offset, data }
}

const arbitraryCase: fc.Arbitrary<Case> = fc.record({
  changes: fc
    .array(
      fc.record({
        block: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
        offset: fc.nat({ max: 255 }),
        length: fc.oneof(fc.integer({ min: 1, max: 600 }), fc.constantFrom(4095, 4096, 4097, 8192, 12_000)),
        fill: fc.integer({ min: 1, max: 255 })
      }),
      { minLength: 4, maxLength: 40 }
    )
    .map((cs) => cs.map((c, i) => change(i + 1, c))),
  segmentBytes: fc.constantFrom(4096, 9000, 20_000),
  fold: fc.constantFrom<Case["fold"]>(false, true, "mid-segment"),
  at: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 3 }),
  pieces: fc.array(fc.integer({ min: 1, max: 20_000 }), { minLength: 1, maxLength: 5 }),
  tuning: fc.record({
    batchBytes: fc.constantFrom(0, 1, 5000, 1 << 20),
    writesInFlight: fc.constantFrom(1, 2, 32),
    runGap: fc.constantFrom(0, 1, 100, 64 << 10),
    runBytes: fc.constantFrom(1, 700, 5000, 4 << 20),
    recordBytes: fc.constantFrom(1, 5000, 4 << 20),
    readsAhead: fc.constantFrom(0, 1, 4),
    direct: fc.boolean(),
    worker: fc.boolean(),
    flushBytes: fc.constantFrom(0, 1, 10_000)
  })
})

/** Whether the log can be folded as asked (`writeDisk` dies when nothing is sealed). */
const run = async (c: Case): Promise<void> => {
  const dir = tempDir()
  let written: Awaited<ReturnType<typeof writeDisk>>
  try {
    written = await writeDisk(dir, "vm", geometry, c.changes, { segmentBytes: c.segmentBytes, fold: c.fold })
  } catch (e) {
    if (c.fold !== false && String(e).includes("nothing sealed to fold")) return
    throw e
  }
  const { diskDir, baseSeq, lastSeq } = written
  Object.assign(tuning, c.tuning)
  const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
  for (const fraction of c.at) {
    const seq = baseSeq + Math.round(fraction * (lastSeq - baseSeq))
    const expected = imageAt(geometry, c.changes, seq)
    const map = await openPointMap(chain, seq, true)
    // The map is sorted and disjoint (each byte names one record), and names no record after the point.
    for (let i = 0; i < map.extents.length; i++) {
      const x = map.extents[i]!
      expect(x.start < x.end && x.seq <= seq && (i === 0 || map.extents[i - 1]!.end <= x.start)).toBe(true)
    }
    const reader = await openPointReader(map)
    if (reader === undefined) throw new Error("no fold runs here")
    try {
      const read = Buffer.alloc(diskBytes)
      for (let at = 0, k = 0; at < diskBytes; k++) {
        const length = Math.min(c.pieces[k % c.pieces.length]!, diskBytes - at)
        read.set(await reader.read(at, length), at)
        at += length
      }
      expect(read.equals(expected), `read through the index at seq ${seq}`).toBe(true)
      // Ranges that start and end just around the map's extent edges and the base's 4 KiB units.
      const edges = [...map.extents.flatMap((x) => [x.start, x.end]), 4096, 8192, diskBytes - 4096]
      for (let k = 0; k < Math.min(edges.length, 12); k++) {
        const edge = edges[(k * 7) % edges.length]!
        const before = c.pieces[k % c.pieces.length]! % 700
        const after = 1 + (c.pieces[(k + 1) % c.pieces.length]! % 5000)
        const from = Math.max(0, edge - before)
        const to = Math.min(diskBytes, edge + after)
        const piece = Buffer.from(await reader.read(from, to - from))
        expect(piece.equals(expected.subarray(from, to)), `bytes ${from}..${to} at seq ${seq}`).toBe(true)
      }
    } finally {
      await reader.close()
    }
    const restored = await Effect.runPromise(
      Restore.restore({ dir, diskId: "vm", at: seq, out: restoredBeside(dir, seq) })
    )
    const image = fs.readFileSync(restored.out)
    expect(image.equals(expected), `restored at seq ${seq}`).toBe(true)
    const replayed = `${restoredBeside(dir, seq)}.replayed`
    await replayPoint(chain, seq, { _tag: "File", path: replayed })
    expect(image.equals(fs.readFileSync(replayed)), `restore = replay at seq ${seq}`).toBe(true)
    fs.rmSync(replayed)
  }
}

describe("the block index (issue 17)", () => {
  it("reads and restores at random points equal a replay of the records", async () => {
    await fc.assert(fc.asyncProperty(arbitraryCase, run), { numRuns: 20 })
  }, 120_000)

  it("catches a block index that keeps the oldest version of each range (mutant)", async () => {
    ReceiverMutants.blockIndexKeepsOldest = true
    const result = await fc.check(fc.asyncProperty(arbitraryCase, run), {
      numRuns: 30,
      seed: 17,
      endOnFailure: true
    })
    expect(result.failed).toBe(true)
  }, 120_000)

  it("a record split by later writes is read from the segment, only what survives", async () => {
    // One 12 000-byte write, then three small writes inside it: four extents, two from the first record.
    const changes = [
      change(1, { block: false, offset: 0, length: 12_000, fill: 1 }),
      change(2, { block: false, offset: 28, length: 100, fill: 2 }),
      change(3, { block: false, offset: 139, length: 100, fill: 3 }),
      change(4, { block: true, offset: 1, length: 0, fill: 4 })
    ]
    const dir = tempDir()
    const { diskDir } = await writeDisk(dir, "vm", geometry, changes, { segmentBytes: 4096 })
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const map = await openPointMap(chain, 4, true)
    expect(map.extents.map((x) => [x.start, x.end, x.seq])).toEqual([
      [0, 1036, 1],
      [1036, 1136, 2],
      [1136, 4096, 1],
      [4096, 8192, 4],
      [8192, 12_000, 1]
    ])
  })
})

/** Segments' maps, newest first: each sorted and disjoint, extents touching, overlapping across maps. */
const arbitraryMaps = fc
  .array(
    fc.array(fc.record({ gap: fc.integer({ min: 0, max: 3 }), length: fc.integer({ min: 1, max: 9 }) }), {
      maxLength: 6
    }),
    { minLength: 1, maxLength: 6 }
  )
  .map((segments) =>
    segments.map((pieces, s) => {
      let at = 0
      const map = pieces.map(({ gap, length }) => {
        const start = at + gap
        at = start + length
        return { start, end: at, seq: 100 - s, fileOffset: 1000 * s + start }
      })
      return { map, segment: segments.length - 1 - s }
    })
  )

/** The model: the maps folded one by one, each under the newer ones (`mergeUnder`). */
const foldedUnder = (
  maps: ReadonlyArray<{ map: ReadonlyArray<PointExtent | Omit<PointExtent, "segment">>; segment: number }>
) => {
  let acc: Array<PointExtent> = []
  for (const { map, segment } of maps)
    acc = mergeUnder(
      acc,
      map.map((x) => ({ ...x, segment }))
    )
  return acc
}

describe("merging a point's segment maps (issue 17)", () => {
  it("one sweep per map equals folding them one by one under the newer ones", () => {
    fc.assert(
      fc.property(arbitraryMaps, (maps) => {
        expect(mergeNewestFirst(maps)).toEqual(foldedUnder(maps))
      }),
      { numRuns: 2000 }
    )
  })

  it("catches a merge that does not grow the union of the newer maps (mutant)", () => {
    ReceiverMutants.pointMergeForgetsNewer = true
    const result = fc.check(
      fc.property(arbitraryMaps, (maps) => {
        expect(mergeNewestFirst(maps)).toEqual(foldedUnder(maps))
      }),
      { numRuns: 2000, seed: 17 }
    )
    expect(result.failed).toBe(true)
  })
})

/** Records of one segment over a small disk: writes and blocks, overlapping, touching, nested; markers. */
const arbitraryEntries = fc
  .array(
    fc.record({
      kind: fc.constantFrom(Kind.Write, Kind.Write, Kind.Write, Kind.Block, Kind.ResyncBegin),
      position: fc.integer({ min: 0, max: 63 }),
      length: fc.integer({ min: 0, max: 24 })
    }),
    { maxLength: 60 }
  )
  .map((records) => {
    let offset = 32
    return records.map(({ kind, position, length }, i): IndexEntry => {
      const data = kind === Kind.Write || kind === Kind.Block
      const entry: IndexEntry = {
        seq: 10 + i,
        kind,
        flags: 0,
        epoch: 0,
        position: kind === Kind.Block ? position % 8 : position,
        length: data ? (kind === Kind.Block ? 8 : length) : 0,
        time: 0,
        offset,
        crc: 0
      }
      offset += RECORD_HEADER_BYTES + entry.length
      return entry
    })
  })

describe("a segment's map (buildMap)", () => {
  const g = { blockSize: 8, blockCount: 8 }
  /** The model: each record's range folded under the newer ones, oldest first. */
  const folded = (entries: ReadonlyArray<IndexEntry>) => {
    let acc: Array<{ start: number; end: number; seq: number; fileOffset: number }> = []
    for (const e of entries) {
      const range = recordRange(g, e)
      if (range === undefined || range.end === range.start) continue
      acc = mergeUnder([{ ...range, seq: e.seq, fileOffset: e.offset + RECORD_HEADER_BYTES }], acc)
    }
    return acc
  }

  it("the sweep equals folding each record under the newer ones, one by one", () => {
    fc.assert(
      fc.property(arbitraryEntries, (entries) => {
        expect(buildMap(g, entries)).toEqual(folded(entries))
      }),
      { numRuns: 3000 }
    )
  })

  it("catches a map that keeps the oldest version (mutant)", () => {
    ReceiverMutants.blockIndexKeepsOldest = true
    const result = fc.check(
      fc.property(arbitraryEntries, (entries) => {
        expect(buildMap(g, entries)).toEqual(folded(entries))
      }),
      { numRuns: 3000, seed: 17 }
    )
    expect(result.failed).toBe(true)
  })
})

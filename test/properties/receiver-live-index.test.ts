/**
 * Issue 18: the live block index (`internal/liveIndex.ts`). Through the real store, random
 * appends (writes and blocks of random sizes, overlapping), group commits that seal
 * segments, and retention folds; the live index — built before, between or after them —
 * equals the map `openPointMap(chain, lastSeq)` builds from the files, extent for extent,
 * each naming the byte its record begins at. Mutants caught: a live index not told of
 * appends, and a fold that keeps the extents of the records it folded into the base.
 */
import { Effect } from "effect"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { entryOf } from "../../src/receiver/internal/blockIndex.js"
import { openChain } from "../../src/receiver/internal/chain.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import { openPointMap } from "../../src/receiver/internal/point.js"
import type * as LogStore from "../../src/receiver/LogStore.js"
import { type Change, readMetaFile, withStore } from "../support/receiverDisk.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-live-index-", "each")
// Two regions of the live index (1 MiB each) and a bit: extents straddle a region edge.
const geometry = { blockSize: 4096, blockCount: 520 }
const diskBytes = geometry.blockSize * geometry.blockCount
const RUNS = Math.round(25 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1))

afterEach(() => {
  ReceiverMutants.liveIndexSkipsAppend = false
  ReceiverMutants.liveIndexFoldKeepsExtents = false
})

type Step =
  | { readonly _tag: "Append"; readonly block: boolean; readonly at: number; readonly length: number }
  | { readonly _tag: "Commit" }
  | { readonly _tag: "Fold" }
  | { readonly _tag: "Build" }

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      _tag: fc.constant("Append" as const),
      block: fc.boolean(),
      // Clustered at the region edge (1 MiB) and the disk's start, so writes overlap.
      at: fc.oneof(fc.integer({ min: (1 << 20) - 9000, max: (1 << 20) + 9000 }), fc.nat({ max: 20_000 })),
      length: fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.constantFrom(4096, 8192, 70_000))
    })
  },
  { weight: 2, arbitrary: fc.constant<Step>({ _tag: "Commit" }) },
  { weight: 1, arbitrary: fc.constant<Step>({ _tag: "Fold" }) },
  { weight: 1, arbitrary: fc.constant<Step>({ _tag: "Build" }) }
)

interface Case {
  readonly steps: ReadonlyArray<Step>
  readonly segmentBytes: number
}
const arbitraryCase: fc.Arbitrary<Case> = fc.record({
  steps: fc.array(step, { minLength: 3, maxLength: 40 }),
  segmentBytes: fc.constantFrom(9000, 30_000, 120_000)
})

const changeOf = (seq: number, s: Extract<Step, { _tag: "Append" }>): Change => {
  if (s.block) {
    const block = Math.floor(s.at / geometry.blockSize) % geometry.blockCount
    const data = new Uint8Array(geometry.blockSize).fill(seq & 0xff)
    return { record: { _tag: "Block", seq, epoch: 0, block, data }, offset: block * geometry.blockSize, data }
  }
  const offset = Math.min(s.at, diskBytes - s.length)
  const data = new Uint8Array(s.length).fill(seq & 0xff)
  return { record: { _tag: "Write", seq, epoch: 0, offset, data }, offset, data }
}

/** The live map and the one the files give, both as plain rows; each live extent's record byte checked. */
const compare = async (disk: LogStore.DiskLog) => {
  const chain = await openChain(disk.diskDir, readMetaFile(disk.diskDir), "read")
  const map = await openPointMap(chain, chain.lastSeq, false)
  const expected = map.extents.map((x) => [
    x.start,
    x.end,
    x.seq,
    x.fileOffset,
    chain.segments[x.segment]!.name
  ])
  const live = disk.live.extents()
  const actual = live.map((x) => [x.start, x.end, x.seq, x.fileOffset, x.segment.name])
  expect(actual).toEqual(expected)
  for (const x of live) {
    const entries = chain.segments.find((s) => s.name === x.segment.name)!.entries!
    expect(x.record).toBe(entries[entryOf(entries, x.seq)]!.offset)
  }
}

const run = async (c: Case): Promise<void> => {
  const exit = await withStore(
    tempDir(),
    (store) =>
      Effect.gen(function* () {
        const disk = yield* store.disk({ diskId: "vm", ...geometry, watermark: 0 })
        let seq = 0
        for (const s of c.steps) {
          if (s._tag === "Append") disk.append(changeOf(++seq, s).record, true)
          else if (s._tag === "Commit") yield* disk.flushed
          else if (s._tag === "Build") yield* Effect.promise(() => disk.live.ensure(disk))
          else {
            yield* disk.flushed
            const sealed = disk.segments.slice(0, -1).filter((x) => x.lastSeq > disk.base.seq)
            const last = sealed.at(-1)
            if (last !== undefined) yield* Effect.promise(() => disk.foldTo(last.lastSeq))
          }
        }
        yield* disk.flushed
        yield* Effect.promise(() => disk.live.ensure(disk))
        yield* Effect.promise(() => compare(disk))
      }),
    { segmentBytes: c.segmentBytes, verifyRate: 0 }
  )
  if (exit._tag === "Failure") throw new Error(String(exit.cause))
}

describe("the live block index (issue 18)", () => {
  it("equals the map of the whole chain after random appends, seals and folds, whenever it was built", async () => {
    await fc.assert(fc.asyncProperty(arbitraryCase, run), { numRuns: RUNS })
  }, 180_000)

  it("catches a live index not told of appends (mutant)", async () => {
    ReceiverMutants.liveIndexSkipsAppend = true
    const result = await fc.check(fc.asyncProperty(arbitraryCase, run), { numRuns: 40, seed: 18 })
    expect(result.failed).toBe(true)
  }, 180_000)

  it("catches a fold that keeps the folded records' extents (mutant)", async () => {
    ReceiverMutants.liveIndexFoldKeepsExtents = true
    const result = await fc.check(fc.asyncProperty(arbitraryCase, run), { numRuns: 60, seed: 18 })
    expect(result.failed).toBe(true)
  }, 180_000)
})

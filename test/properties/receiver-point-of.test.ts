/**
 * `--at` resolved without listing every point (`pointOf`, what `mount` opens a point with)
 * names the point, or refuses, exactly as the listing does (`pointAt` over `pointsOf`), and
 * finds every point without the listing (`findPoint`; the listing only names the nearest
 * points in a refusal): for
 * random chains — segments with resync gaps, points and markers, receive times that step
 * back or are unknown (0), a base anywhere, cutting into a segment or not — and `latest`,
 * seqs (points, records that are none, the base, beyond the log), times and relative times
 * around every record's. A resolver that takes records folded into the base for points
 * (`pointOfKeepsFolded`) is caught.
 */
import { Effect, Exit } from "effect"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import type { AtSpec } from "../../src/receiver/internal/at.js"
import { type Chain, endsInResync, type Segment, summarize } from "../../src/receiver/internal/chain.js"
import { findPoint, pointAt, pointOf, pointsOf } from "../../src/receiver/internal/chainPoints.js"
import {
  FLAG_BATCH_START,
  FLAG_RECOVERY_POINT,
  type IndexEntry,
  Kind,
  segmentName
} from "../../src/receiver/internal/format.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"

afterEach(() => {
  ReceiverMutants.pointOfKeepsFolded = false
})

const NOW = 1_000_000

interface Case {
  readonly segments: ReadonlyArray<
    ReadonlyArray<{
      readonly kind: Kind
      readonly point: boolean
      readonly gap: number
      readonly time: number
    }>
  >
  /** Where the base lies, as a fraction of the log, and its receive time (0: unknown). */
  readonly base: number
  readonly baseTime: number
  readonly specs: ReadonlyArray<{ readonly tag: "Latest" | "Seq" | "Time" | "Ago"; readonly pick: number }>
}

const record = fc.record({
  kind: fc.constantFrom<Kind>(Kind.Write, Kind.Write, Kind.Block, Kind.ResyncBegin, Kind.ResyncEnd),
  point: fc.boolean(),
  gap: fc.constantFrom(0, 0, 0, 3),
  time: fc.oneof(fc.integer({ min: 1, max: 60 }), fc.constant(0))
})

const arbitraryCase: fc.Arbitrary<Case> = fc.record({
  segments: fc.array(fc.array(record, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 5 }),
  base: fc.double({ min: 0, max: 1, noNaN: true }),
  baseTime: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 60 })),
  specs: fc.array(
    fc.record({ tag: fc.constantFrom("Latest", "Seq", "Time", "Ago"), pick: fc.nat({ max: 1000 }) }),
    { minLength: 1, maxLength: 8 }
  )
})

/** The chain `openChain` would give of such a log: the segments a fold left, the base among them. */
const chainOf = (c: Case): Chain => {
  let seq = 0
  let time = 1000
  const all = c.segments.map((records) =>
    records.map((r, i): IndexEntry => {
      // A resync-begin may skip seqs; times mostly go up, sometimes back, sometimes unknown.
      seq += r.kind === Kind.ResyncBegin ? 1 + r.gap : 1
      time += r.time === 0 ? 0 : r.time - 10
      const data = r.kind === Kind.Write || r.kind === Kind.Block
      return {
        offset: 32 + 40 * i,
        seq,
        position: 0,
        time: r.time === 0 ? 0 : time,
        length: data ? 1 : 0,
        epoch: 0,
        kind: r.kind,
        flags: (r.point ? FLAG_RECOVERY_POINT : 0) | (i === 0 ? FLAG_BATCH_START : 0),
        crc: 0
      }
    })
  )
  const lastSeq = seq
  const baseSeq = Math.round(c.base * lastSeq)
  const segments: Array<Segment> = all
    .map((entries) => summarize(segmentName(entries[0]!.seq), entries, 32 + 41 * entries.length, true))
    // What a fold leaves: the segment holding base + 1 and those after it.
    .filter((_, i, list) => i === list.length - 1 || list[i + 1]!.firstSeq > baseSeq + 1)
  if (segments.length > 0 && segments.at(-1)!.lastSeq < baseSeq) segments.pop()
  return {
    diskDir: "/nowhere/vm",
    meta: { format: 2, diskId: "vm", blockSize: 4096, blockCount: 16, createdAt: "2026-01-01T00:00:00Z" },
    base: {
      format: 2,
      seq: baseSeq,
      time: baseSeq === 0 ? 0 : c.baseTime,
      blockSize: 4096,
      blockCount: 16,
      unitBytes: 4096,
      tableCrc: 0,
      anchor: 0,
      trailerOffset: 65536 + 64
    },
    segments,
    lastSeq: Math.max(baseSeq, segments.at(-1)?.lastSeq ?? 0),
    inResync: endsInResync(segments, baseSeq),
    damaged: undefined,
    notes: []
  }
}

/** A spec aimed at the chain's seqs and times, on both sides of each. */
const specOf = (chain: Chain, s: Case["specs"][number]): AtSpec => {
  const seqs = [
    0,
    chain.base.seq,
    chain.lastSeq + 1,
    ...chain.segments.flatMap((x) => (x.entries ?? []).map((e) => e.seq))
  ]
  const times = [0, chain.base.time, ...chain.segments.flatMap((x) => (x.entries ?? []).map((e) => e.time))]
  const time = times[s.pick % times.length]! + ((s.pick >> 4) % 3) - 1
  switch (s.tag) {
    case "Latest":
      return { _tag: "Latest" }
    case "Seq":
      return { _tag: "Seq", seq: seqs[s.pick % seqs.length]! + ((s.pick >> 5) % 3) - 1 }
    case "Time":
      return { _tag: "Time", time, text: String(time) }
    case "Ago":
      return { _tag: "Ago", ms: NOW - time, text: `-${NOW - time}ms` }
  }
}

const agrees = (c: Case): void => {
  const chain = chainOf(c)
  const listed = pointsOf(chain).points
  for (const s of c.specs) {
    const spec = specOf(chain, s)
    const slow = Effect.runSyncExit(pointAt(chain, listed, spec, NOW))
    // Found without the listing whenever there is a point (and never one that is not).
    expect(findPoint(chain, spec, NOW), JSON.stringify(spec)).toEqual(
      Exit.isSuccess(slow) ? slow.value : undefined
    )
    expect(Effect.runSyncExit(pointOf(chain, spec, NOW)), JSON.stringify(spec)).toEqual(slow)
  }
}

describe("--at without listing the points (issue 17, first byte)", () => {
  it("names the point the listing names, or refuses as it does", () => {
    fc.assert(fc.property(arbitraryCase, agrees), { numRuns: 300 })
  })

  it("catches a resolver that takes records folded into the base for points (mutant)", () => {
    ReceiverMutants.pointOfKeepsFolded = true
    expect(() => fc.assert(fc.property(arbitraryCase, agrees), { numRuns: 300 })).toThrow()
  })
})

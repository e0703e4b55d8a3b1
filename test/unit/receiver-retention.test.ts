/**
 * Retention planning (pure): a fold goes only up to a recovery point at or before the
 * horizon, and only when it frees a sealed segment; never a recovery point inside the
 * horizon. Plus the `--retain` / size parsers.
 */
import { Either } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  parsePolicy,
  parseSize,
  planFold,
  type SegmentSummary
} from "../../src/programs/receiver/Retention.js"

const seg = (
  lastSeq: number,
  bytes: number,
  lastTime: number,
  lastPoint: number | undefined,
  sealed = true
) => ({ lastSeq, bytes, lastTime, lastPoint, sealed }) satisfies SegmentSummary

describe("parsing", () => {
  it("ages and sizes", () => {
    expect(parsePolicy("7d")).toEqual(Either.right({ _tag: "Age", millis: 7 * 86_400_000 }))
    expect(parsePolicy("12h")).toEqual(Either.right({ _tag: "Age", millis: 12 * 3_600_000 }))
    expect(parsePolicy("90s")).toEqual(Either.right({ _tag: "Age", millis: 90_000 }))
    expect(parsePolicy("10GiB")).toEqual(Either.right({ _tag: "Size", bytes: 10 * 2 ** 30 }))
    expect(parsePolicy("500MB")).toEqual(Either.right({ _tag: "Size", bytes: 500e6 }))
    expect(parsePolicy("65536B")).toEqual(Either.right({ _tag: "Size", bytes: 65536 }))
    for (const bad of ["5", "", "7 days", "-3d", "10XB", "0s"])
      expect(Either.isLeft(parsePolicy(bad))).toBe(true)
    expect(parseSize("segment-bytes", "4096")).toEqual(Either.right(4096))
    expect(parseSize("segment-bytes", "64MiB")).toEqual(Either.right(64 * 2 ** 20))
    expect(Either.isLeft(parseSize("segment-bytes", "lots"))).toBe(true)
  })
})

describe("planFold", () => {
  it("by size: folds to the last recovery point of the newest segment wholly outside the horizon", () => {
    const segments = [
      seg(10, 100, 1, 10),
      seg(20, 100, 2, 18),
      seg(30, 100, 3, 30),
      seg(40, 100, 4, 39, false)
    ]
    // Keep 150 bytes: segments 3 and 4 hold 200 ≥ 150, so segment 2 is outside; its last point is 18.
    expect(planFold({ _tag: "Size", bytes: 150 }, 0, segments, 0)).toBe(18)
    // Keep 250: only segment 1 is outside.
    expect(planFold({ _tag: "Size", bytes: 250 }, 0, segments, 0)).toBe(10)
    // Keep 400: nothing is outside.
    expect(planFold({ _tag: "Size", bytes: 400 }, 0, segments, 0)).toBeUndefined()
  })

  it("inside a long resync: falls back to an earlier recovery point, or does nothing", () => {
    const resync = [seg(20, 100, 2, undefined), seg(30, 100, 3, undefined, false)]
    expect(planFold({ _tag: "Size", bytes: 100 }, 0, [seg(10, 100, 1, 10), ...resync], 0)).toBe(10)
    // A point that frees no segment (its segment goes on after it) is not worth a fold.
    expect(planFold({ _tag: "Size", bytes: 100 }, 0, [seg(10, 100, 1, 5), ...resync], 0)).toBeUndefined()
    // No point at all before the horizon: nothing to fold to.
    expect(
      planFold({ _tag: "Size", bytes: 100 }, 0, [seg(10, 100, 1, undefined), ...resync], 0)
    ).toBeUndefined()
    // Already folded there.
    expect(planFold({ _tag: "Size", bytes: 100 }, 10, [seg(10, 100, 1, 10), ...resync], 0)).toBeUndefined()
  })

  it("by age: only segments whose last record is older than the horizon", () => {
    const segments = [seg(10, 1, 1000, 10), seg(20, 1, 2000, 20), seg(30, 1, 3000, 29, false)]
    expect(planFold({ _tag: "Age", millis: 1500 }, 0, segments, 3000)).toBe(10)
    expect(planFold({ _tag: "Age", millis: 500 }, 0, segments, 3000)).toBe(20)
    // The active segment is never folded, however old.
    expect(planFold({ _tag: "Age", millis: 1 }, 20, segments, 10_000)).toBeUndefined()
  })

  it("never folds past a recovery point inside the horizon (size)", () => {
    const arbitrary = fc.record({
      segments: fc.array(
        fc.record({
          records: fc.integer({ min: 1, max: 5 }),
          bytes: fc.integer({ min: 1, max: 50 }),
          points: fc.array(fc.boolean(), { minLength: 5, maxLength: 5 })
        }),
        { minLength: 1, maxLength: 12 }
      ),
      keep: fc.integer({ min: 1, max: 400 })
    })
    fc.assert(
      fc.property(arbitrary, ({ segments, keep }) => {
        let seq = 0
        const summaries: Array<SegmentSummary> = []
        const pointsBySeg: Array<Array<number>> = []
        segments.forEach((s, i) => {
          const points: Array<number> = []
          for (let r = 0; r < s.records; r++) {
            seq++
            if (s.points[r]) points.push(seq)
          }
          pointsBySeg.push(points)
          summaries.push(seg(seq, s.bytes, i, points.at(-1), i < segments.length - 1))
        })
        const target = planFold({ _tag: "Size", bytes: keep }, 0, summaries, 0)
        if (target === undefined) return
        // The target is a recovery point of a sealed segment…
        const at = pointsBySeg.findIndex((p) => p.includes(target))
        expect(at).toBeGreaterThanOrEqual(0)
        expect(summaries[at]!.sealed).toBe(true)
        // …and the segments after the one holding it still hold at least `keep` bytes.
        const after = summaries.slice(at + 1).reduce((n, s) => n + s.bytes, 0)
        expect(after).toBeGreaterThanOrEqual(keep)
        // It frees at least the oldest segment.
        expect(summaries[0]!.lastSeq).toBeLessThanOrEqual(target)
      })
    )
  })
})

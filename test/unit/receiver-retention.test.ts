/**
 * Retention planning (pure): a fold goes only up to a recovery point at or before the
 * horizon, and only when it frees a sealed segment; never a recovery point inside the
 * horizon; ages by the monotonic clock, whatever the wall clock does. Plus the receive
 * clock (never backwards, advancing while the wall clock is behind) and the `--retain` /
 * size parsers.
 */
import { Either } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { ReceiveClock } from "../../src/receiver/internal/clock.js"
import { parsePolicy, planFold, type SegmentSummary } from "../../src/receiver/Retention.js"
import * as Mutants from "../support/receiverMutants.js"
import { ageHorizonHolds, type MakeClock, type Plan, receiveTimesHold, YEAR } from "../support/retention.js"

const seg = (
  lastSeq: number,
  bytes: number,
  lastMonotonic: number,
  lastPoint: number | undefined,
  sealed = true
) => ({ lastSeq, bytes, lastMonotonic, lastPoint, sealed }) satisfies SegmentSummary

const receiveClock: MakeClock = (clocks, lastTime) => new ReceiveClock(clocks, lastTime)
const plan: Plan = (policy, baseSeq, segments, now) => planFold(policy, baseSeq, segments, now.monotonic)

/** fast-check searches for a counterexample; a mutant must not survive this many runs. */
const budget = { numRuns: 5000 }
const caught = <T extends [unknown, ...Array<unknown>]>(property: fc.IProperty<T>) => {
  const details = fc.check(property, budget)
  expect(details.failed, `survived ${details.numRuns} runs`).toBe(true)
  return String(details.errorInstance)
}

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
    // Sizes read by the one size grammar (test/properties/units.test.ts); an age unit wins.
    expect(parsePolicy("64m")).toEqual(Either.right({ _tag: "Age", millis: 64 * 60_000 }))
    expect(parsePolicy("64k")).toEqual(Either.right({ _tag: "Size", bytes: 64 * 2 ** 10 }))
    expect(parsePolicy("1.5GB")).toEqual(Either.right({ _tag: "Size", bytes: 1.5e9 }))
    for (const bad of ["64M", "1.5", "0.1k", "0B", `${2 ** 53}B`])
      expect(Either.isLeft(parsePolicy(bad))).toBe(true)
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

  it("by age: judged on the monotonic clock, not the wall clock", () => {
    // Stored receive times a year ahead (a wall clock that jumped), monotonic ages of seconds and hours.
    const segments = [
      { ...seg(10, 1, 1_000, 10), lastTime: YEAR },
      { ...seg(20, 1, 7_200_000, 20), lastTime: YEAR + 1 },
      { ...seg(30, 1, 7_201_000, 29, false), lastTime: YEAR + 2 }
    ]
    const hour = { _tag: "Age", millis: 3_600_000 } as const
    // Two hours on, by the monotonic clock: only the first segment is older than an hour…
    expect(planFold(hour, 0, segments, 7_202_000)).toBe(10)
    // …whatever the wall clock reads (the old planner, by the wall clock: nothing, or everything).
    expect(Mutants.wallClockPlan(hour, 0, segments, { wall: 0, monotonic: 7_202_000 })).toBeUndefined()
    expect(Mutants.wallClockPlan(hour, 0, segments, { wall: 3 * YEAR, monotonic: 7_202_000 })).toBe(20)
  })

  it("by age: never folds a record younger than the horizon, and folds what is older, whatever the wall clock does", () => {
    fc.assert(ageHorizonHolds(receiveClock, plan), { numRuns: 2000 })
  })

  it("the age property catches a planner that reads the wall clock", () => {
    expect(caught(ageHorizonHolds(receiveClock, Mutants.wallClockPlan))).toMatch(
      /under the horizon|not folded/
    )
  })
})

describe("receive clock", () => {
  const clocksAt = (t: { wall: number; monotonic: number }) => ({
    wall: () => t.wall,
    monotonic: () => t.monotonic
  })

  it("follows the wall clock while it is ahead, and the monotonic rate while it is behind", () => {
    const t = { wall: 1_000_000, monotonic: 50 }
    const clock = new ReceiveClock(clocksAt(t), 0)
    expect(clock.stamp().time).toBe(1_000_000)
    // A year ahead: taken.
    t.wall += YEAR
    t.monotonic += 1
    expect(clock.stamp().time).toBe(1_000_000 + YEAR)
    // Back: the time goes on from the last stamp at the real rate, distinct for each millisecond.
    t.wall = 1_000_010
    const times: Array<number> = []
    for (let i = 0; i < 5; i++) {
      t.monotonic += 1.5
      times.push(clock.stamp().time)
    }
    expect(times).toEqual([1, 3, 4, 6, 7].map((d) => 1_000_000 + YEAR + d))
  })

  it("after a restart, goes on from the log's last time and places older records by the wall clock at opening", () => {
    const t = { wall: 5_000, monotonic: 100 }
    const clock = new ReceiveClock(clocksAt(t), 9_000)
    // The log's last time is ahead of the wall clock: from there on, at the real rate.
    t.monotonic += 40
    expect(clock.stamp()).toEqual({ time: 9_040, monotonic: 140 })
    // A record received at wall time 3 000 was 2 000 ms old at opening; one "from the future", 0.
    expect(clock.monotonicOf(3_000)).toBe(100 - 2_000)
    expect(clock.monotonicOf(9_000)).toBe(100)
    // Later wall jumps change nothing.
    t.wall = 5_000 + YEAR
    expect(clock.monotonicOf(3_000)).toBe(100 - 2_000)
  })

  it("never runs backwards, never behind the wall clock, and advances while the wall clock is behind", () => {
    fc.assert(receiveTimesHold(receiveClock), { numRuns: 2000 })
  })

  it("the receive-time property catches the clock that froze at the future time", () => {
    expect(caught(receiveTimesHold(Mutants.frozenClock))).toMatch(/the same receive time|advanced/)
  })
})

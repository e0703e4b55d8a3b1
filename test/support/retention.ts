/**
 * A model of receive times and age-based retention under a wall clock that jumps,
 * as properties of the receive clock and the fold planner under test, so the same
 * property runs against the receiver's (must hold) and against the mutants in
 * test/support/receiverMutants.ts (must be caught).
 *
 * The model has a true time `T` (ms). The wall clock reads `T + offset`, where the
 * offset jumps (a year ahead, hours back, …); each process's monotonic clock reads
 * `T + origin`, with a new origin after every restart. Records are grouped into
 * segments as the log store does: every segment but the last is sealed.
 */
import fc from "fast-check"
import type { Clocks, Stamp } from "../../src/receiver/internal/clock.js"
import type { Policy, SegmentSummary } from "../../src/receiver/Retention.js"

export const YEAR = 365 * 86_400_000
const HOUR = 3_600_000
const T0 = 1_700_000_000_000

/** What the model needs of a receive clock (`internal/clock.ts`'s `ReceiveClock`). */
export interface ReceiveClockLike {
  stamp(): Stamp
  monotonicOf(time: number): number
}
export type MakeClock = (clocks: Clocks, lastTime: number) => ReceiveClockLike

/** A fold planner given everything the receiver could know, wall clock included. */
export type Plan = (
  policy: Policy,
  baseSeq: number,
  segments: ReadonlyArray<SegmentSummary & { readonly lastTime: number }>,
  now: { readonly wall: number; readonly monotonic: number }
) => number | undefined

interface Step {
  readonly elapsed: number
  /** The wall clock's offset from the true time from this step on (`undefined`: unchanged). */
  readonly offset: number | undefined
  readonly restart: boolean
  readonly origin: number
  readonly point: boolean
  readonly seal: boolean
}

const offsetArb = fc.oneof(
  fc.constant(0),
  fc.constantFrom(YEAR, -YEAR, 2 * HOUR, -2 * HOUR),
  fc.integer({ min: -3 * HOUR, max: 3 * HOUR })
)

const elapsedArb = fc.oneof(
  fc.integer({ min: 0, max: 5 }),
  fc.integer({ min: 0, max: 120_000 }),
  fc.integer({ min: 0, max: 2 * HOUR })
)

const stepArb: fc.Arbitrary<Step> = fc.record({
  elapsed: elapsedArb,
  offset: fc.option(offsetArb, { nil: undefined, freq: 2 }),
  restart: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  origin: fc.integer({ min: -1e9, max: 1e9 }),
  point: fc.boolean(),
  seal: fc.integer({ min: 0, max: 3 }).map((n) => n === 0)
})

export const ageScenario = fc.record({
  steps: fc.array(stepArb, { minLength: 1, maxLength: 60 }),
  horizon: fc.integer({ min: 1, max: 3 * HOUR }),
  end: fc.record({ elapsed: elapsedArb, offset: fc.option(offsetArb, { nil: undefined }) })
})
export type AgeScenario = typeof ageScenario extends fc.Arbitrary<infer A> ? A : never

interface Received {
  readonly seq: number
  readonly trueTime: number
  /** The wall clock's reading when it was received. */
  readonly wall: number
  readonly offset: number
  readonly process: number
  readonly stamp: Stamp
  readonly point: boolean
}

export interface World {
  readonly records: ReadonlyArray<Received>
  readonly segments: ReadonlyArray<ReadonlyArray<Received>>
  readonly trueNow: number
  readonly wallNow: number
  readonly monotonicNow: number
  readonly process: number
  /** The wall clock's offset when the log was last opened. */
  readonly openOffset: number
  readonly clock: ReceiveClockLike
}

/** Runs a scenario: receives every step's record with the clock under test. */
export const simulate = (s: AgeScenario, makeClock: MakeClock): World => {
  let T = T0
  let offset = 0
  let origin = 0
  const clocks: Clocks = { wall: () => T + offset, monotonic: () => T + origin }
  let clock = makeClock(clocks, 0)
  let process = 0
  let openOffset = 0
  const records: Array<Received> = []
  const segments: Array<Array<Received>> = [[]]
  for (const step of s.steps) {
    T += step.elapsed
    if (step.offset !== undefined) offset = step.offset
    if (step.restart && records.length > 0) {
      process++
      origin = step.origin
      openOffset = offset
      clock = makeClock(clocks, records.at(-1)!.stamp.time)
    }
    const wall = T + offset
    const r: Received = {
      seq: records.length + 1,
      trueTime: T,
      wall,
      offset,
      process,
      stamp: clock.stamp(),
      point: step.point
    }
    records.push(r)
    segments.at(-1)!.push(r)
    if (step.seal) segments.push([])
  }
  if (segments.at(-1)!.length === 0) segments.pop()
  T += s.end.elapsed
  if (s.end.offset !== undefined) offset = s.end.offset
  return {
    records,
    segments,
    trueNow: T,
    wallNow: T + offset,
    monotonicNow: T + origin,
    process,
    openOffset,
    clock
  }
}

/** What the log store hands retention: the monotonic time of each segment's newest record. */
export const summaries = (w: World): Array<SegmentSummary & { readonly lastTime: number }> =>
  w.segments.map((records, i) => {
    const newest = records.at(-1)!
    return {
      lastSeq: newest.seq,
      bytes: records.length,
      lastTime: newest.stamp.time,
      // Received by this process: its monotonic reading; before the last open: placed by the clock.
      lastMonotonic:
        newest.process === w.process ? newest.stamp.monotonic : w.clock.monotonicOf(newest.stamp.time),
      lastPoint: records.filter((r) => r.point).at(-1)?.seq,
      sealed: i < w.segments.length - 1
    }
  })

/**
 * Receive times: never below the previous one (across restarts too), never below the
 * wall clock's reading, and — within one process — strictly increasing for records a
 * millisecond or more apart, advancing at least at the real rate while the wall clock
 * is behind the last stamp.
 */
export const receiveTimesHold = (makeClock: MakeClock) =>
  fc.property(ageScenario, (s) => {
    const w = simulate(s, makeClock)
    w.records.forEach((r, i) => {
      if (!Number.isSafeInteger(r.stamp.time) || r.stamp.time < 0)
        throw new Error(`seq ${r.seq}: receive time ${r.stamp.time} is not a u64`)
      if (r.stamp.time < Math.floor(r.wall))
        throw new Error(`seq ${r.seq}: receive time ${r.stamp.time} behind the wall clock ${r.wall}`)
      const prev = w.records[i - 1]
      if (prev === undefined) return
      if (r.stamp.time < prev.stamp.time)
        throw new Error(`seq ${r.seq}: receive time ran backwards (${prev.stamp.time} → ${r.stamp.time})`)
      const elapsed = r.trueTime - prev.trueTime
      if (prev.process === r.process && elapsed >= 1 && r.stamp.time <= prev.stamp.time)
        throw new Error(
          `seq ${r.seq}: ${elapsed} ms after seq ${prev.seq}, the same receive time ${r.stamp.time}`
        )
      if (prev.process === r.process && r.wall <= prev.stamp.time && r.stamp.time < prev.stamp.time + elapsed)
        throw new Error(
          `seq ${r.seq}: the wall clock behind, the receive time advanced ${r.stamp.time - prev.stamp.time} ms in ${elapsed} ms`
        )
    })
  })

/**
 * Age-based retention, safety: a fold never takes a record whose true age is under the
 * horizon — for a record received before the last restart, unless the wall clock was
 * further ahead when the log was opened than when the record was received (the one
 * case only wall times can judge; docs/receiver.md). Liveness: every sealed segment this
 * process received that is older than the horizon is folded (up to its last recovery
 * point), whatever the wall clock says.
 */
export const ageHorizonHolds = (makeClock: MakeClock, plan: Plan) =>
  fc.property(ageScenario, (s) => {
    const w = simulate(s, makeClock)
    const segments = summaries(w)
    const policy: Policy = { _tag: "Age", millis: s.horizon }
    const target = plan(policy, 0, segments, { wall: w.wallNow, monotonic: w.monotonicNow })
    const age = (r: Received) => w.trueNow - r.trueTime
    if (target !== undefined) {
      const at = w.segments.findIndex((records) => records.some((r) => r.seq === target && r.point))
      if (at < 0) throw new Error(`fold target ${target} is not a recovery point`)
      if (!segments[at]!.sealed) throw new Error(`fold target ${target} is in the active segment`)
      if (segments[0]!.lastSeq > target) throw new Error(`fold to ${target} frees no segment`)
      for (const r of w.records) {
        if (r.seq > target) break
        const excused = r.process < w.process && w.openOffset > r.offset
        if (age(r) < s.horizon && !excused)
          throw new Error(
            `folded seq ${r.seq}, ${age(r)} ms old, under the horizon of ${s.horizon} ms (wall clock now ${w.wallNow - w.trueNow} ms off)`
          )
      }
    }
    // The newest sealed segment this process received, wholly older than the horizon.
    let due = -1
    segments.forEach((summary, i) => {
      const newest = w.segments[i]!.at(-1)!
      if (summary.sealed && newest.process === w.process && age(newest) >= s.horizon) due = i
    })
    const point = segments
      .slice(0, due + 1)
      .map((x) => x.lastPoint)
      .filter((p) => p !== undefined)
      .at(-1)
    if (point !== undefined && segments[0]!.lastSeq <= point && (target === undefined || target < point))
      throw new Error(
        `recovery point ${point} is ${age(w.records[point - 1]!)} ms old (horizon ${s.horizon} ms) and not folded (target ${target})`
      )
  })

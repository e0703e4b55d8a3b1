/**
 * Deliberately broken receive clocks and fold planners: what the receiver did before
 * issue 13 (finding 6, clock jumps). The properties of test/support/retention.ts must
 * catch each one (test/unit/receiver-retention.test.ts proves it does).
 */
import { type Clocks, ReceiveClock, type Stamp } from "../../src/receiver/internal/clock.js"
import type { MakeClock, Plan } from "./retention.js"

/** Receive time = max(last, wall): freezes at a future time once the wall clock comes back. */
export const frozenClock: MakeClock = (clocks: Clocks, lastTime: number) => {
  const clock = new ReceiveClock(clocks, lastTime)
  let last = lastTime
  return {
    stamp: (): Stamp => {
      last = Math.max(last, clocks.wall())
      return { time: last, monotonic: clocks.monotonic() }
    },
    monotonicOf: (time) => clock.monotonicOf(time)
  }
}

/** Ages by the wall clock against the records' receive times (the old `planFold`). */
export const wallClockPlan: Plan = (policy, baseSeq, segments, now) => {
  if (policy._tag !== "Age") throw new Error("age policies only")
  const horizon = now.wall - policy.millis
  let outside = -1
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!
    if (!s.sealed || s.lastTime > horizon) break
    outside = i
  }
  for (let i = outside; i >= 0; i--) {
    const point = segments[i]!.lastPoint
    if (point === undefined) continue
    return point > baseSeq && segments[0]!.lastSeq <= point ? point : undefined
  }
  return undefined
}

/**
 * Retention (`--retain AGE|SIZE`): which part of a disk's log is folded into its base
 * image. Pure: the receiver's log store asks `planFold` after each segment roll and
 * on a timer.
 *
 * The horizon is the oldest moment (age) or byte (size) the operator wants to be able
 * to restore to. A fold only goes up to a recovery point at or before the horizon (the
 * new base must be a consistent image), and only whole sealed segments are dropped, so
 * every recovery point inside the horizon stays restorable: the log keeps at least the
 * newest `SIZE` bytes, or every record younger than `AGE`, plus what lies between the
 * fold point and the horizon.
 *
 * Ages are measured on the monotonic clock, never the wall clock: a wall clock stepped
 * ahead must not make seconds-old records look old, nor one stepped back freeze the
 * horizon. Each segment is summarized by the monotonic time of its newest record
 * (`internal/clock.ts` says how records from before a restart get one).
 */
import { Either } from "effect"
import { parseSize } from "../internal/units.js"
import { InvalidOption } from "./internal/errors.js"

export type Policy =
  /** Keep every recovery point received within the last `millis`. */
  | { readonly _tag: "Age"; readonly millis: number }
  /** Keep at least the newest `bytes` of log (segment files). */
  | { readonly _tag: "Size"; readonly bytes: number }

const AGE_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000
}
/**
 * `--retain`: an age (`7d`, `12h`, `30m`, `90s`, `2w`) or a size (`10GiB`, `500MB`, `65536B`;
 * the sizes' grammar is `parseSize`'s, but an age unit wins: `30m` is thirty minutes).
 */
export const parsePolicy = (text: string): Either.Either<Policy, InvalidOption> => {
  const age = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$/.exec(text)
  if (age !== null) {
    const millis = Math.floor(Number(age[1]) * AGE_UNITS[age[2]!]!)
    if (!Number.isSafeInteger(millis) || millis < 1)
      return Either.left(
        new InvalidOption({ option: "retain", value: text, reason: "the age must be positive" })
      )
    return Either.right({ _tag: "Age", millis })
  }
  if (/^\s*[\d.]+\s*M\s*$/.test(text))
    return Either.left(
      new InvalidOption({
        option: "retain",
        value: text,
        reason: "M is ambiguous here (m is minutes): write MiB or MB for a size"
      })
    )
  if (/^\s*\d+(?:\.\d+)?\s*$/.test(text))
    return Either.left(
      new InvalidOption({
        option: "retain",
        value: text,
        reason: "give a unit: an age (7d, 12h, 30m, 90s) or a size (10GiB, 500MB, 65536B)"
      })
    )
  return Either.mapBoth(parseSize(text), {
    onLeft: () =>
      new InvalidOption({
        option: "retain",
        value: text,
        reason: "expected an age (7d, 12h, 30m, 90s, 2w) or a size (10GiB, 500MB, 65536B)"
      }),
    onRight: (bytes): Policy => ({ _tag: "Size", bytes })
  })
}

export const describe = (policy: Policy): string =>
  policy._tag === "Age"
    ? `records younger than ${policy.millis} ms`
    : `the newest ${policy.bytes} bytes of log`

/** What retention needs to know of a segment (oldest first; the last one may be the active one). */
export interface SegmentSummary {
  readonly lastSeq: number
  readonly bytes: number
  /** Monotonic time (ms, the receiver's monotonic clock) of its newest record. */
  readonly lastMonotonic: number
  /** Its last recovery point, if any. */
  readonly lastPoint: number | undefined
  /** Sealed segments are complete; only they are ever dropped. */
  readonly sealed: boolean
}

/**
 * The recovery point to fold the base forward to, or `undefined` when nothing is due.
 * Finds the newest sealed segment lying wholly outside the horizon, then the last
 * recovery point at or before its end; folds only when that drops at least one segment.
 * `monotonicNow` is the monotonic clock now (the one `lastMonotonic` was read from).
 */
export const planFold = (
  policy: Policy,
  baseSeq: number,
  segments: ReadonlyArray<SegmentSummary>,
  monotonicNow: number
): number | undefined => {
  let outside = -1
  if (policy._tag === "Age") {
    const horizon = monotonicNow - policy.millis
    for (let i = 0; i < segments.length; i++) {
      const s = segments[i]!
      // Stops at the first segment with a record younger than the horizon: all after it are younger.
      if (!s.sealed || s.lastMonotonic > horizon) break
      outside = i
    }
  } else {
    // Segment i is outside when the segments after it already hold the newest `bytes`.
    let newer = 0
    for (let i = segments.length - 1; i >= 0; i--) {
      const s = segments[i]!
      if (newer >= policy.bytes && s.sealed) {
        outside = i
        break
      }
      newer += s.bytes
    }
  }
  for (let i = outside; i >= 0; i--) {
    const point = segments[i]!.lastPoint
    if (point === undefined) continue
    // Worth a fold only when it frees a segment: the oldest one ends at or before the point.
    return point > baseSeq && segments[0]!.lastSeq <= point ? point : undefined
  }
  return undefined
}

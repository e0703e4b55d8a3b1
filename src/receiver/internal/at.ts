/**
 * `--at` / `At`: which recovery point. A seq, `latest`, an ISO 8601 time (`2024-05-01T10:00Z`,
 * `2024-05-01`; without a zone, local time) or a time relative to now (`-15m`, `-2h`, `-1d`,
 * also `s` and `w`): the newest recovery point at or before it. Parsing is pure; relative
 * times are resolved when the point is (`resolveAt`), against the caller's clock.
 */
import { Either } from "effect"
import { InvalidOption } from "./errors.js"

/** A recovery point asked for, parsed. */
export type AtSpec =
  | { readonly _tag: "Seq"; readonly seq: number }
  | { readonly _tag: "Latest" }
  /** A time, ms since the Unix epoch. */
  | { readonly _tag: "Time"; readonly time: number; readonly text: string }
  /** `ms` before now. */
  | { readonly _tag: "Ago"; readonly ms: number; readonly text: string }

const UNITS: Readonly<Record<string, number>> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000
}
const ISO = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$/i

const invalid = (text: string, reason: string) => new InvalidOption({ option: "at", value: text, reason })

/** Parses `--at`'s text (see the module comment). */
export const parseAt = (text: string): Either.Either<AtSpec, InvalidOption> => {
  const t = text.trim()
  if (t === "latest") return Either.right({ _tag: "Latest" })
  if (/^\d+$/.test(t)) {
    const seq = Number(t)
    return Number.isSafeInteger(seq)
      ? Either.right({ _tag: "Seq", seq })
      : Either.left(invalid(text, "the seq is too large"))
  }
  const ago = /^-(\d+(?:\.\d+)?)\s*([smhdw])$/.exec(t)
  if (ago !== null) {
    const ms = Math.round(Number(ago[1]) * UNITS[ago[2]!]!)
    return Number.isSafeInteger(ms)
      ? Either.right({ _tag: "Ago", ms, text: t })
      : Either.left(invalid(text, "too far back"))
  }
  if (ISO.test(t)) {
    const time = Date.parse(t)
    if (Number.isFinite(time) && time >= 0) return Either.right({ _tag: "Time", time, text: t })
    return Either.left(invalid(text, "not a valid date and time"))
  }
  return Either.left(
    invalid(
      text,
      'expected a seq, "latest", an ISO 8601 time (2024-05-01T10:00:00Z) or a relative one (-15m, -2h, -1d)'
    )
  )
}

/** A recovery point as listed (`Restore.Point`). */
export interface PointLike {
  readonly seq: number
  readonly time: number
}

export type Resolved<P extends PointLike> =
  | { readonly _tag: "Point"; readonly point: P }
  /** A seq that is no recovery point. */
  | { readonly _tag: "NoSeq"; readonly seq: number }
  /** A time before every recovery point with a time. */
  | {
      readonly _tag: "TooEarly"
      readonly time: number
      readonly text: string
      readonly oldest: P | undefined
    }

/**
 * The point `spec` names among `points` (oldest first, the base first). By time: the newest
 * point received at or before it; the empty base (time 0: its time is unknown) is never
 * matched by time.
 */
export const resolveAt = <P extends PointLike>(
  points: ReadonlyArray<P>,
  spec: AtSpec,
  now: number
): Resolved<P> => {
  switch (spec._tag) {
    case "Latest":
      return { _tag: "Point", point: points.at(-1)! }
    case "Seq": {
      const point = points.find((p) => p.seq === spec.seq)
      return point === undefined ? { _tag: "NoSeq", seq: spec.seq } : { _tag: "Point", point }
    }
    default: {
      const time = spec._tag === "Time" ? spec.time : now - spec.ms
      const timed = points.filter((p) => p.time > 0)
      let found: P | undefined
      for (const p of timed) if (p.time <= time) found = p
      return found === undefined
        ? { _tag: "TooEarly", time, text: spec.text, oldest: timed[0] }
        : { _tag: "Point", point: found }
    }
  }
}

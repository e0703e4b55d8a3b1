/**
 * Sizes as operators write and read them. One grammar for every size the CLI and the
 * retention policy take (README "Sizes"): a whole number of bytes (`4096`), or a number
 * and a unit, case-insensitive, with or without a space: `k`/`KiB` = 2^10, `m`/`MiB` =
 * 2^20, `g`/`GiB` = 2^30, `t`/`TiB` = 2^40 (binary), `KB`/`MB`/`GB`/`TB` = 10^3 … 10^12
 * (decimal, as the SI and `dd` have it), `B` = 1. A fraction is fine when it makes
 * whole bytes (`1.5GiB`, `0.5k`), never rounded (`1.5`, `0.1k` are refused).
 */
import { Data, Either } from "effect"

/** Bytes as an operator reads them in logs and reports: `12.5 MiB`. */
export const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`

/** A size that is not one: garbage, no whole bytes, zero, or more than 2^53 - 1 bytes. */
export class InvalidSize extends Data.TaggedError("InvalidSize")<{
  readonly text: string
  readonly reason: string
}> {
  override get message() {
    return `${JSON.stringify(this.text)}: ${this.reason}`
  }
}

const UNITS: Readonly<Record<string, bigint>> = {
  "": 1n,
  b: 1n,
  k: 2n ** 10n,
  kib: 2n ** 10n,
  kb: 10n ** 3n,
  m: 2n ** 20n,
  mib: 2n ** 20n,
  mb: 10n ** 6n,
  g: 2n ** 30n,
  gib: 2n ** 30n,
  gb: 10n ** 9n,
  t: 2n ** 40n,
  tib: 2n ** 40n,
  tb: 10n ** 12n
}

const EXAMPLES = "a size such as 4096, 64k, 64MiB, 1G or 500MB"

/** `text` → bytes (at least 1), by the grammar above; exact (no floating point on the way). */
export const parseSize = (text: string): Either.Either<number, InvalidSize> => {
  const m = /^\s*(\d+)(?:\.(\d+))?\s*([a-z]*)\s*$/i.exec(text)
  const unit = m === null ? undefined : UNITS[m[3]!.toLowerCase()]
  if (m === null || unit === undefined)
    return Either.left(new InvalidSize({ text, reason: `expected ${EXAMPLES}` }))
  const fraction = m[2] ?? ""
  const scaled = BigInt(m[1]! + fraction) * unit
  const divisor = 10n ** BigInt(fraction.length)
  if (scaled % divisor !== 0n)
    return Either.left(new InvalidSize({ text, reason: "not a whole number of bytes" }))
  const bytes = scaled / divisor
  if (bytes < 1n) return Either.left(new InvalidSize({ text, reason: "the size must be at least 1 byte" }))
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER))
    return Either.left(new InvalidSize({ text, reason: `more than ${Number.MAX_SAFE_INTEGER} bytes` }))
  return Either.right(Number(bytes))
}

const BINARY: ReadonlyArray<readonly [string, number]> = [
  ["TiB", 2 ** 40],
  ["GiB", 2 ** 30],
  ["MiB", 2 ** 20],
  ["KiB", 2 ** 10]
]

/** Bytes in the largest binary unit that holds them whole (`64MiB`, `1536KiB`, `4097`); `parseSize` reads it back. */
export const formatSize = (bytes: number): string => {
  for (const [name, unit] of BINARY) if (bytes >= unit && bytes % unit === 0) return `${bytes / unit}${name}`
  return String(bytes)
}

const DURATION_UNITS: Readonly<Record<string, number>> = {
  "": 1,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000
}

/**
 * A duration as operators write it (README "Conventions"): a number and a unit, `ms`, `s`,
 * `m`, `h` or `d` (`500ms`, `2s`, `1.5m`, `7d`); a bare number is milliseconds (what the
 * `…-ms` spellings took). → whole milliseconds, at least 1.
 */
export const parseDuration = (text: string): Either.Either<number, InvalidSize> => {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*$/i.exec(text)
  const unit = m === null ? undefined : DURATION_UNITS[m[2]!.toLowerCase()]
  if (m === null || unit === undefined)
    return Either.left(
      new InvalidSize({ text, reason: "expected a duration such as 500ms, 2s, 5m, 12h or 7d" })
    )
  const millis = Number(m[1]) * unit
  if (!Number.isSafeInteger(millis))
    return Either.left(new InvalidSize({ text, reason: "not a whole number of milliseconds" }))
  if (millis < 1) return Either.left(new InvalidSize({ text, reason: "the duration must be at least 1ms" }))
  return Either.right(millis)
}

/** Milliseconds in the largest unit that holds them whole (`2s`, `30s`, `1500ms`); `parseDuration` reads it back. */
export const formatDuration = (millis: number): string => {
  for (const [name, unit] of [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1000]
  ] as const)
    if (millis >= unit && millis % unit === 0) return `${millis / unit}${name}`
  return `${millis}ms`
}

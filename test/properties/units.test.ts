/**
 * The one size grammar (src/internal/units.ts) every size option of the CLI and the
 * retention policy read: what `formatSize` writes reads back; every unit and spelling
 * means what the README says; zero, negatives, past 2^53 - 1, fractions of a byte and
 * garbage are a typed refusal, never a crash or a rounded number.
 */
import { Either } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { formatSize, InvalidSize, parseSize } from "../../src/internal/units.js"

const RUNS = Math.round(500 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1))

const UNITS: ReadonlyArray<readonly [ReadonlyArray<string>, bigint]> = [
  [["", "b", "B"], 1n],
  [["k", "K", "KiB", "kib"], 2n ** 10n],
  [["m", "M", "MiB"], 2n ** 20n],
  [["g", "G", "GiB"], 2n ** 30n],
  [["t", "T", "TiB"], 2n ** 40n],
  [["KB", "kb"], 10n ** 3n],
  [["MB"], 10n ** 6n],
  [["GB"], 10n ** 9n],
  [["TB"], 10n ** 12n]
]
const MAX = BigInt(Number.MAX_SAFE_INTEGER)

const refused = (text: string) => {
  const parsed = parseSize(text)
  expect(Either.isLeft(parsed), text).toBe(true)
  if (Either.isLeft(parsed)) {
    expect(parsed.left).toBeInstanceOf(InvalidSize)
    expect(parsed.left.text).toBe(text)
  }
}

describe("parseSize / formatSize", () => {
  it("the spellings the README names", () => {
    const cases: ReadonlyArray<readonly [string, number]> = [
      ["4096", 4096],
      ["64KiB", 64 * 2 ** 10],
      ["64k", 64 * 2 ** 10],
      ["64MiB", 64 * 2 ** 20],
      ["64m", 64 * 2 ** 20],
      ["64 MiB", 64 * 2 ** 20],
      ["1GiB", 2 ** 30],
      ["1G", 2 ** 30],
      ["1.5GiB", 1.5 * 2 ** 30],
      ["0.5k", 512],
      ["500MB", 500e6],
      ["1.5GB", 1.5e9],
      ["65536B", 65536],
      [`${Number.MAX_SAFE_INTEGER}`, Number.MAX_SAFE_INTEGER]
    ]
    for (const [text, bytes] of cases) expect(parseSize(text), text).toEqual(Either.right(bytes))
    for (const text of [
      "",
      "lots",
      "0",
      "0k",
      "-1",
      "-64m",
      "1.5",
      "0.1k",
      "1e3",
      "64 m b",
      "64x",
      "1..5k",
      ".5k"
    ])
      refused(text)
    refused(`${MAX + 1n}`)
    refused("8192TiB") // 2^53 bytes
  })

  it("what formatSize writes, parseSize reads back (every byte count up to 2^53 - 1)", () => {
    const bytes = fc.oneof(
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      // whole multiples of each unit, and one byte either side of them
      fc
        .tuple(
          fc.integer({ min: 1, max: 2 ** 20 }),
          fc.constantFrom(2 ** 10, 2 ** 20, 2 ** 30, 2 ** 40),
          fc.constantFrom(-1, 0, 1)
        )
        .map(([n, unit, delta]) => n * unit + delta)
        .filter((n) => n >= 1 && n <= Number.MAX_SAFE_INTEGER)
    )
    fc.assert(
      fc.property(bytes, (n) => {
        expect(parseSize(formatSize(n))).toEqual(Either.right(n))
      }),
      { numRuns: RUNS }
    )
  })

  it("a number and a unit: exact bytes when whole and in range, else a typed refusal", () => {
    const unit = fc
      .constantFrom(...UNITS)
      .chain(([spellings, factor]) => fc.tuple(fc.constantFrom(...spellings), fc.constant(factor)))
    const number = fc.tuple(
      fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 60n }), fc.bigInt({ min: 0n, max: 10n })),
      fc.option(fc.stringMatching(/^\d{1,4}$/), { nil: undefined })
    )
    fc.assert(
      fc.property(number, unit, fc.constantFrom("", " "), ([whole, fraction], [spelling, factor], space) => {
        const text = `${whole}${fraction === undefined ? "" : `.${fraction}`}${space}${spelling}`
        const digits = fraction ?? ""
        const scaled = BigInt(`${whole}${digits}`) * factor
        const divisor = 10n ** BigInt(digits.length)
        const parsed = parseSize(text)
        if (scaled % divisor === 0n && scaled / divisor >= 1n && scaled / divisor <= MAX)
          expect(parsed).toEqual(Either.right(Number(scaled / divisor)))
        else refused(text)
      }),
      { numRuns: RUNS }
    )
  })

  it("any text: a safe positive integer or an InvalidSize, never a throw", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 24 }), (text) => {
        const parsed = parseSize(text)
        if (Either.isRight(parsed)) {
          expect(Number.isSafeInteger(parsed.right)).toBe(true)
          expect(parsed.right).toBeGreaterThanOrEqual(1)
        } else expect(parsed.left).toBeInstanceOf(InvalidSize)
      }),
      { numRuns: RUNS }
    )
  })
})

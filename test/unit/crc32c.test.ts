import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { crc32c, crc32cCombine, crc32cSpan } from "../../src/internal/crc32c.js"

const bytes = (max: number) => fc.uint8Array({ maxLength: max })

describe("CRC32C combining", () => {
  it("the CRC of a ++ b from the CRCs of a and b and b's length, for any a and b", () => {
    fc.assert(
      fc.property(bytes(200), fc.oneof(bytes(300), bytes(70_000)), (a, b) => {
        const whole = new Uint8Array(a.length + b.length)
        whole.set(a)
        whole.set(b, a.length)
        expect(crc32cCombine(crc32c(a), crc32c(b), b.length)).toBe(crc32c(whole))
        // The same length again takes the cached operator.
        expect(crc32cCombine(crc32c(a), crc32c(b), b.length)).toBe(crc32c(whole))
      }),
      { numRuns: 300 }
    )
  })

  it("a span's CRC in JS equals the native one over the same bytes, from any initial CRC", () => {
    fc.assert(
      fc.property(bytes(300), fc.nat(), fc.nat(), fc.nat(), (b, x, y, initial) => {
        const start = b.length === 0 ? 0 : x % (b.length + 1)
        const end = start + (b.length === 0 ? 0 : y % (b.length - start + 1))
        expect(crc32cSpan(b, start, end, initial >>> 0)).toBe(crc32c(b.subarray(start, end), initial >>> 0))
      }),
      { numRuns: 500 }
    )
  })
})

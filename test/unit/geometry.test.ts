import { Either } from "effect"
import { describe, expect, it } from "vitest"
import * as Geometry from "../../src/domain/Geometry.js"

describe("geometry", () => {
  it("accepts power-of-two block sizes from 4 KiB to 1 MiB and up to 2^30 blocks", () => {
    expect(Either.isRight(Geometry.make(4096, 1))).toBe(true)
    expect(Either.isRight(Geometry.make(1 << 20, 2 ** 30))).toBe(true)
    for (const [bs, n] of [
      [2048, 1],
      [3 * 4096, 1],
      [2 << 20, 1],
      [65536, 0],
      [65536, 2 ** 30 + 1],
      [65536, 1.5]
    ] as const)
      expect(Either.getLeft(Geometry.make(bs, n)).pipe((o) => o._tag === "Some" && o.value._tag)).toBe(
        "InvalidGeometry"
      )
  })

  it("maps byte ranges to inclusive block ranges", () => {
    const g = Either.getOrThrow(Geometry.make(65536, 1024))
    expect(Geometry.blockRange(g, 0, 1)).toEqual(Either.right({ first: 0, last: 0 }))
    expect(Geometry.blockRange(g, 65535, 2)).toEqual(Either.right({ first: 0, last: 1 }))
    expect(Geometry.blockRange(g, 65536, 131072)).toEqual(Either.right({ first: 1, last: 2 }))
    expect(Geometry.blockRange(g, 1024 * 65536 - 1, 1)).toEqual(Either.right({ first: 1023, last: 1023 }))
  })

  it("rejects empty, negative, fractional and out-of-disk ranges with a typed value", () => {
    const g = Either.getOrThrow(Geometry.make(65536, 16))
    const reason = (o: number, l: number) =>
      Either.match(Geometry.blockRange(g, o, l), { onLeft: (e) => e.reason, onRight: () => "ok" })
    expect(reason(0, 0)).toBe("empty")
    expect(reason(-1, 10)).toBe("negative")
    expect(reason(0, -10)).toBe("negative")
    expect(reason(0.5, 10)).toBe("not-an-integer")
    expect(reason(16 * 65536 - 1, 2)).toBe("beyond-disk")
    expect(reason(16 * 65536, 1)).toBe("beyond-disk")
  })

  it("handles a 64 TiB disk exactly", () => {
    const g = Either.getOrThrow(Geometry.make(65536, 2 ** 30))
    expect(Geometry.diskBytes(g)).toBe(2 ** 46)
    expect(Geometry.blockRange(g, 2 ** 46 - 4096, 4096)).toEqual(
      Either.right({ first: 2 ** 30 - 1, last: 2 ** 30 - 1 })
    )
  })
})

/**
 * `Wire.blockDigestsInto` (docs/wire.md "Checksums"): the digests of many blocks, each written
 * at its own block's place in a digest buffer, at an offset. A property over block sizes,
 * counts (0, 1, many) and offsets against SHA-256 of each block alone, with the digests
 * before and after the range left alone; views on shared memory hash the same; a call that
 * does not fit refuses.
 */
import { createHash } from "node:crypto"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Wire from "../../src/protocol/Wire.js"

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest()

/** Blocks that all differ (block k starts with k), the rest patterned by `seed`. */
const blocksOf = (blockSize: number, count: number, seed: number) => {
  const bytes = new Uint8Array(blockSize * count)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + seed) & 0xff
  for (let k = 0; k < count; k++) new DataView(bytes.buffer).setUint32(k * blockSize, k)
  return bytes
}

describe("blockDigestsInto", () => {
  it("puts each block's SHA-256 at its own place, at any offset, with the digests around it left alone", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(4, 512, 4096, 65536),
        fc.oneof(fc.constantFrom(0, 1, 2), fc.integer({ min: 0, max: 300 })),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 255 }),
        (blockSize, count, at, after, seed) => {
          const bytes = blocksOf(blockSize, count + 1, seed) // one more block than hashed: not read
          const into = new Uint8Array((at + count + after) * Wire.DIGEST_BYTES).fill(0xee)
          Wire.blockDigestsInto(bytes, blockSize, count, into, at)
          const want = new Uint8Array(into.length).fill(0xee)
          for (let k = 0; k < count; k++)
            want.set(sha(bytes.subarray(k * blockSize, (k + 1) * blockSize)), (at + k) * Wire.DIGEST_BYTES)
          expect(Buffer.from(into).equals(Buffer.from(want))).toBe(true)
        }
      ),
      { numRuns: 60 }
    )
  })

  it("hashes views on shared memory the same", () => {
    const plain = blocksOf(4096, 9, 7)
    const shared = new Uint8Array(new SharedArrayBuffer(plain.byteLength + 4096), 4096)
    shared.set(plain)
    expect(Buffer.from(Wire.blockDigests(shared, 4096, 9))).toEqual(
      Buffer.from(Wire.blockDigests(plain, 4096, 9))
    )
  })

  it("refuses blocks beyond the bytes, or digests beyond the room given", () => {
    const bytes = blocksOf(512, 4, 1)
    expect(() => Wire.blockDigestsInto(bytes, 512, 5, new Uint8Array(5 * 32))).toThrow(RangeError)
    expect(() => Wire.blockDigestsInto(bytes, 512, 4, new Uint8Array(4 * 32), 1)).toThrow(RangeError)
  })
})

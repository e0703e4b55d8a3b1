/**
 * `Wire.blockDigestsInto` (docs/wire.md "Checksums"): many blocks hashed in libuv's pool,
 * `DIGEST_LANES` at once, each digest written at its own block's place whatever order the
 * pool finishes in. A property over block sizes and counts around the lanes (0, 1, lanes ± 1,
 * many) and offsets into the digests, against SHA-256 of each block alone; shared memory is
 * hashed on the main thread the same; a call that does not fit refuses; and a broken variant
 * whose lanes take their slot after their digest (mutant `slotAfterDigest`) is caught.
 */
import { createHash } from "node:crypto"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { digestMutants } from "../../src/protocol/internal/blockDigest.js"
import * as Wire from "../../src/protocol/Wire.js"

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest()

/** Each block's own digest, concatenated at `at`. */
const expected = (bytes: Uint8Array, blockSize: number, count: number, size: number, at: number) => {
  const out = new Uint8Array(size * Wire.DIGEST_BYTES)
  for (let k = 0; k < count; k++)
    out.set(sha(bytes.subarray(k * blockSize, (k + 1) * blockSize)), (at + k) * Wire.DIGEST_BYTES)
  return out
}

/** Blocks that all differ (block k starts with k), the rest random. */
const blocksOf = (blockSize: number, count: number, seed: number) => {
  const bytes = new Uint8Array(blockSize * count)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + seed) & 0xff
  for (let k = 0; k < count; k++) new DataView(bytes.buffer).setUint32(k * blockSize, k)
  return bytes
}

const counts = fc.oneof(
  fc.constantFrom(0, 1, Wire.DIGEST_LANES - 1, Wire.DIGEST_LANES, Wire.DIGEST_LANES + 1),
  fc.integer({ min: 0, max: 300 })
)

afterEach(() => {
  digestMutants.slotAfterDigest = false
})

describe("blockDigestsInto", () => {
  it("puts each block's SHA-256 at its own place, at any offset, with the blocks after left alone", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(4, 512, 4096, 65536),
        counts,
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 255 }),
        async (blockSize, count, at, after, seed) => {
          const bytes = blocksOf(blockSize, count + 1, seed) // one more block than hashed: not read
          const into = new Uint8Array((at + count + after) * Wire.DIGEST_BYTES).fill(0xee)
          await Wire.blockDigestsInto(bytes, blockSize, count, into, at)
          const want = expected(bytes, blockSize, count, at + count + after, at)
          want.fill(0xee, 0, at * Wire.DIGEST_BYTES)
          want.fill(0xee, (at + count) * Wire.DIGEST_BYTES)
          expect(Buffer.from(into).equals(Buffer.from(want))).toBe(true)
        }
      ),
      { numRuns: 60 }
    )
  })

  it("hashes views on shared memory (which WebCrypto refuses) the same, on the main thread", async () => {
    const plain = blocksOf(4096, 9, 7)
    const shared = new Uint8Array(new SharedArrayBuffer(plain.byteLength + 4096), 4096)
    shared.set(plain)
    expect(Buffer.from(await Wire.blockDigests(shared, 4096, 9))).toEqual(
      Buffer.from(await Wire.blockDigests(plain, 4096, 9))
    )
  })

  it("refuses blocks beyond the bytes, or digests beyond the room given", async () => {
    const bytes = blocksOf(512, 4, 1)
    await expect(Wire.blockDigestsInto(bytes, 512, 5, new Uint8Array(5 * 32))).rejects.toThrow(RangeError)
    await expect(Wire.blockDigestsInto(bytes, 512, 4, new Uint8Array(4 * 32), 1)).rejects.toThrow(RangeError)
  })

  it("catches lanes that take their slot after their digest (mutant slotAfterDigest)", async () => {
    digestMutants.slotAfterDigest = true
    const bytes = blocksOf(65536, 64, 3)
    const got = await Wire.blockDigests(bytes, 65536, 64)
    expect(Buffer.from(got).equals(Buffer.from(expected(bytes, 65536, 64, 64, 0)))).toBe(false)
  })
})

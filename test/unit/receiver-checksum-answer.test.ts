/**
 * Issue 18, the receiver's checksum answer in-process (`internal/checksums.ts` on a real
 * store): digests equal SHA-256 of the model image's blocks (base bytes after a fold, record
 * payloads, zeros); a flipped byte of `base.img` under a requested block is a `LogCorrupt`
 * naming `base.img` and the unit's byte, never a digest, while blocks outside that unit are
 * still answered. An answer over several runs (each run's records read ahead while the last
 * run is hashed) gives every block its own digest, and damage in a record read ahead is a
 * `LogCorrupt` naming its segment. Session 11: the records are read into pooled buffers given
 * back run by run and hashed as views (no copy): a property over record layouts (writes
 * across runs, segments and the pool's buffer size, block records, a fold, sparse requests)
 * checks every digest against the model, answer after answer on the same reused buffers,
 * and an answer of many runs makes a few pooled buffers, the next one none.
 */
import { createHash, randomBytes } from "node:crypto"
import * as path from "node:path"
import { Effect } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { blake3Loading } from "../../src/protocol/internal/blake3.js"
import * as Wire from "../../src/protocol/Wire.js"
import { SPAN_BYTES, spanPool } from "../../src/receiver/internal/checkedRecords.js"
import { answer, digestsOf } from "../../src/receiver/internal/checksums.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import { RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import { type Change, failureOf, flipByte, imageAt, makeChanges, withStore } from "../support/receiverDisk.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-checksum-answer-")
// 64 KiB base units: 16 blocks each.
const geometry = { blockSize: 4096, blockCount: 64 }
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest()

describe("a checksum answer on a real store (issue 18)", () => {
  it("hashes the newest bytes (base after a fold, records, zeros); refuses a damaged base unit", async () => {
    const dir = tempDir()
    // Writes only in the first half: the last 32 blocks are zeros in the base, never written.
    const changes = makeChanges(geometry, 60, { seed: 5, limit: 32 * geometry.blockSize })
    const exit = await withStore(
      dir,
      (store) =>
        Effect.gen(function* () {
          const disk = yield* store.disk({ diskId: "vm", ...geometry, watermark: 0 })
          for (const c of changes) disk.append(c.record, true)
          yield* disk.flushed
          const sealed = disk.segments.slice(0, -1).at(-1)!
          yield* Effect.promise(() => disk.foldTo(sealed.lastSeq))
          expect(disk.base.seq).toBeGreaterThan(0)
          const all = Array.from({ length: geometry.blockCount }, (_, b) => b)
          const { digests } = yield* Effect.promise(() => digestsOf(disk, all))
          const image = imageAt(geometry, changes, disk.durable)
          all.forEach((b) => {
            const expected = sha256(image.subarray(b * geometry.blockSize, (b + 1) * geometry.blockSize))
            expect(Buffer.from(digests.subarray(b * 32, (b + 1) * 32)).equals(expected), `block ${b}`).toBe(
              true
            )
          })
          // Damage in the base's third unit (blocks 32..47), which no record covers.
          flipByte(path.join(disk.diskDir, "base.img"), 40 * geometry.blockSize + 7)
          const damaged = yield* Effect.either(Effect.tryPromise(() => digestsOf(disk, [40])))
          expect(damaged._tag).toBe("Left")
          const cause = damaged._tag === "Left" ? (damaged.left.error as LogCorrupt) : undefined
          expect(cause).toBeInstanceOf(LogCorrupt)
          expect(cause?.file).toBe(path.join(disk.diskDir, "base.img"))
          expect(cause?.offset).toBe(32 * geometry.blockSize)
          // The answer the service sends for it: a refusal, not a digest.
          const refused = yield* answer(
            disk,
            { _tag: "ChecksumRequest", algorithm: 0, id: 3, blocks: [40] },
            disk.durable
          )
          expect(refused._tag).toBe("ChecksumRefused")
          expect(refused._tag === "ChecksumRefused" && refused.reason).toBe("damaged")
          // Outside that unit, still answered.
          const { digests: last } = yield* Effect.promise(() => digestsOf(disk, [63]))
          expect(Buffer.from(last).equals(sha256(Buffer.alloc(geometry.blockSize)))).toBe(true)
          expect(last.byteLength).toBe(Wire.DIGEST_BYTES)
        }),
      { segmentBytes: 16 * 1024, verifyRate: 0 }
    )
    expect(failureOf(exit)).toBeUndefined()
  })
})

describe("an answer over several runs (each read ahead while the last is hashed)", () => {
  // 64 KiB blocks: a run is 1 MiB (16 blocks), so 200 blocks are 13 runs, across segments.
  const big = { blockSize: 65536, blockCount: 200 }
  it("gives every block its own digest, and names the segment of a damaged record read ahead", async () => {
    const dir = tempDir()
    // Every block written once with bytes of its own, then a few writes across block edges.
    const changes: Array<Change> = []
    for (let block = 0; block < big.blockCount; block++) {
      const data = randomBytes(big.blockSize)
      changes.push({
        record: { _tag: "Block", seq: block + 1, epoch: 0, block, data },
        offset: block * big.blockSize,
        data
      })
    }
    for (let i = 0; i < 20; i++) {
      const offset = (i * 10 + 1) * big.blockSize - 100
      const data = randomBytes(300)
      const seq = big.blockCount + 1 + i
      changes.push({ record: { _tag: "Write", seq, epoch: 0, offset, data }, offset, data })
    }
    const exit = await withStore(
      dir,
      (store) =>
        Effect.gen(function* () {
          const disk = yield* store.disk({ diskId: "vm", ...big, watermark: 0 })
          for (const c of changes) disk.append(c.record, true)
          yield* disk.flushed
          const all = Array.from({ length: big.blockCount }, (_, b) => b)
          const { digests } = yield* Effect.promise(() => digestsOf(disk, all))
          const image = imageAt(big, changes, disk.durable)
          all.forEach((b) => {
            const expected = sha256(image.subarray(b * big.blockSize, (b + 1) * big.blockSize))
            expect(Buffer.from(digests.subarray(b * 32, (b + 1) * 32)).equals(expected), `block ${b}`).toBe(
              true
            )
          })
          // Damage in the payload of block 150's record: the tenth run's, read ahead.
          yield* Effect.promise(() => disk.live.ensure(disk))
          const [x] = disk.live.extentsIn(150 * big.blockSize, 150 * big.blockSize + 1)
          const segment = path.join(disk.diskDir, x!.segment.name)
          flipByte(segment, x!.record + RECORD_HEADER_BYTES + 7)
          const damaged = yield* Effect.either(Effect.tryPromise(() => digestsOf(disk, all)))
          const cause = damaged._tag === "Left" ? (damaged.left.error as LogCorrupt) : undefined
          expect(cause).toBeInstanceOf(LogCorrupt)
          expect(cause?.file).toBe(segment)
          expect(cause?.offset).toBe(x!.record)
        }),
      { segmentBytes: 3 << 20, verifyRate: 0 }
    )
    expect(failureOf(exit)).toBeUndefined()
  })
})

describe("answers from pooled buffers, hashed as views (session 11)", () => {
  // 64 KiB blocks: 1 MiB runs of 16 blocks; 48 blocks are three runs.
  const g = { blockSize: 65536, blockCount: 48 }
  const diskBytes = g.blockSize * g.blockCount
  // A write: anywhere, from a byte to past a run and past a pooled buffer (`SPAN_BYTES`).
  const write = fc.record({
    offset: fc.nat({ max: diskBytes - 1 }),
    length: fc.oneof(
      fc.integer({ min: 1, max: 4096 }),
      fc.integer({ min: 60_000, max: 140_000 }),
      fc.constantFrom(SPAN_BYTES - 40, SPAN_BYTES, SPAN_BYTES + 1)
    ),
    block: fc.option(fc.nat({ max: g.blockCount - 1 }), { freq: 2 }),
    fill: fc.integer({ min: 1, max: 255 })
  })

  it("gives every block the model's digest, answer after answer, over any record layout", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(write, { minLength: 1, maxLength: 40 }),
        fc.boolean(),
        fc.array(fc.uniqueArray(fc.nat({ max: g.blockCount - 1 }), { minLength: 1 }), {
          minLength: 1,
          maxLength: 3
        }),
        async (writes, fold, requests) => {
          const changes: Array<Change> = writes.map((w, i) => {
            const seq = i + 1
            if (w.block !== null) {
              const data = new Uint8Array(g.blockSize).fill(w.fill)
              return {
                record: { _tag: "Block", seq, epoch: 0, block: w.block, data },
                offset: w.block * g.blockSize,
                data
              }
            }
            const length = Math.min(w.length, diskBytes - w.offset)
            const data = randomBytes(length)
            return {
              record: { _tag: "Write", seq, epoch: 0, offset: w.offset, data },
              offset: w.offset,
              data
            }
          })
          const exit = await withStore(
            tempDir(),
            (store) =>
              Effect.gen(function* () {
                const disk = yield* store.disk({ diskId: "vm", ...g, watermark: 0 })
                for (const c of changes) disk.append(c.record, true)
                yield* disk.flushed
                const sealed = disk.segments.slice(0, -1).at(-1)
                if (fold && sealed !== undefined) yield* Effect.promise(() => disk.foldTo(sealed.lastSeq))
                const image = imageAt(g, changes, disk.durable)
                for (const request of [...requests, Array.from({ length: g.blockCount }, (_, b) => b)]) {
                  const blocks = [...request].sort((a, b) => a - b)
                  const { digests } = yield* Effect.promise(() => digestsOf(disk, blocks))
                  blocks.forEach((b, k) => {
                    const expected = sha256(image.subarray(b * g.blockSize, (b + 1) * g.blockSize))
                    expect(
                      Buffer.from(digests.subarray(k * 32, (k + 1) * 32)).equals(expected),
                      `block ${b}`
                    ).toBe(true)
                  })
                }
              }),
            { segmentBytes: 512 << 10, verifyRate: 0 }
          )
          expect(failureOf(exit)).toBeUndefined()
        }
      ),
      { numRuns: 12 }
    )
  }, 120_000)

  it("makes a few pooled buffers for an answer of many runs, and none for the next answer", async () => {
    const big = { blockSize: 65536, blockCount: 200 }
    const exit = await withStore(
      tempDir(),
      (store) =>
        Effect.gen(function* () {
          const disk = yield* store.disk({ diskId: "vm", ...big, watermark: 0 })
          for (let block = 0; block < big.blockCount; block++)
            disk.append(
              { _tag: "Block", seq: block + 1, epoch: 0, block, data: randomBytes(big.blockSize) },
              true
            )
          yield* disk.flushed
          const all = Array.from({ length: big.blockCount }, (_, b) => b)
          yield* Effect.promise(() => digestsOf(disk, all))
          const made = spanPool.made
          // 13 runs, one span read each: a fresh buffer per read would be 13 more.
          yield* Effect.promise(() => digestsOf(disk, all))
          expect(spanPool.made - made).toBe(0)
          expect(spanPool.kept).toBeGreaterThan(0)
          expect(spanPool.kept).toBeLessThanOrEqual(8)
        }),
      { segmentBytes: 3 << 20, verifyRate: 0 }
    )
    expect(failureOf(exit)).toBeUndefined()
  })

  it("reads scattered small records into buffers of their own size, not a pooled 1 MiB each", async () => {
    // 4 KiB blocks: one run of 256 blocks, each its own record, none next to another in the log.
    const small = { blockSize: 4096, blockCount: 256 }
    const exit = await withStore(
      tempDir(),
      (store) =>
        Effect.gen(function* () {
          const disk = yield* store.disk({ diskId: "vm", ...small, watermark: 0 })
          const filler = randomBytes(100 << 10)
          let seq = 0
          for (let block = 0; block < small.blockCount; block++) {
            disk.append(
              { _tag: "Block", seq: ++seq, epoch: 0, block, data: randomBytes(small.blockSize) },
              true
            )
            // 100 KiB written elsewhere after each: no two records of the run share a span read.
            disk.append({ _tag: "Write", seq: ++seq, epoch: 0, offset: 0, data: filler.subarray(0, 1) }, true)
            disk.append({ _tag: "Write", seq: ++seq, epoch: 0, offset: 4096, data: filler }, true)
          }
          yield* disk.flushed
          const made = spanPool.made
          const blocks = Array.from({ length: small.blockCount - 26 }, (_, k) => k + 26)
          const { digests } = yield* Effect.promise(() => digestsOf(disk, blocks))
          expect(digests.byteLength).toBe(blocks.length * 32)
          expect(spanPool.made - made).toBeLessThanOrEqual(1)
        }),
      { segmentBytes: 8 << 20, verifyRate: 0 }
    )
    expect(failureOf(exit)).toBeUndefined()
  })
})

describe("the digest's algorithm (session 13)", () => {
  it("answers BLAKE3 when asked (code 1, echoed), block by block as the model image; refuses a code it cannot compute", async () => {
    const dir = tempDir()
    // Writes of any size anywhere: most blocks are pieces of several records and the base,
    // hashed incrementally (Blake3Hasher), the rest whole in one piece (one-shot).
    const changes = makeChanges(geometry, 80, { seed: 13 })
    const all = Array.from({ length: geometry.blockCount }, (_, b) => b)
    const exit = await withStore(
      dir,
      (store) =>
        Effect.gen(function* () {
          const disk = yield* store.disk({ diskId: "vm", ...geometry, watermark: 0 })
          for (const c of changes) disk.append(c.record, true)
          yield* disk.flushed
          const sealed = disk.segments.slice(0, -1).at(-1)!
          yield* Effect.promise(() => disk.foldTo(sealed.lastSeq))
          const image = imageAt(geometry, changes, disk.durable)
          const block = (b: number) => image.subarray(b * geometry.blockSize, (b + 1) * geometry.blockSize)
          for (const algorithm of Wire.DIGEST_ALGORITHMS) {
            const reply = yield* answer(
              disk,
              { _tag: "ChecksumRequest", algorithm: Wire.DigestCode[algorithm], id: 1, blocks: all },
              disk.durable
            )
            expect(reply._tag).toBe("ChecksumReply")
            if (reply._tag !== "ChecksumReply") return
            expect(reply.algorithm).toBe(Wire.DigestCode[algorithm])
            all.forEach((b) => {
              expect(
                Buffer.from(Wire.digestAt(reply, b)).equals(
                  Buffer.from(Wire.blockDigest(block(b), algorithm))
                ),
                `${algorithm} block ${b}`
              ).toBe(true)
            })
          }
          // Codes no algorithm has: refused as unsupported (the connection stays up), no digest.
          for (const code of [2, 0xffff_ffff]) {
            const refused = yield* answer(
              disk,
              { _tag: "ChecksumRequest", algorithm: code, id: 2, blocks: [0] },
              disk.durable
            )
            expect(refused).toMatchObject({ _tag: "ChecksumRefused", id: 2, reason: "unsupported" })
          }
          // A receiver where BLAKE3's module does not load: refused too; SHA-256 still answered.
          blake3Loading.refuse = true
          blake3Loading.reset()
          try {
            const without = yield* answer(
              disk,
              { _tag: "ChecksumRequest", algorithm: 1, id: 3, blocks: [0] },
              disk.durable
            )
            expect(without).toMatchObject({ _tag: "ChecksumRefused", id: 3, reason: "unsupported" })
            const sha = yield* answer(
              disk,
              { _tag: "ChecksumRequest", algorithm: 0, id: 4, blocks: [0] },
              disk.durable
            )
            expect(sha._tag === "ChecksumReply" && Buffer.from(sha.digests).equals(sha256(block(0)))).toBe(
              true
            )
          } finally {
            blake3Loading.refuse = false
            blake3Loading.reset()
          }
        }),
      { segmentBytes: 16 * 1024, verifyRate: 0 }
    )
    expect(failureOf(exit)).toBeUndefined()
  })
})

/**
 * Issue 18, `Checksums.blockDigests` (the receiver's side of online verify): the digests of
 * a range of blocks at a recovery point equal SHA-256 (or BLAKE3, asked) of the model image's blocks there —
 * every point of a log with sealed segments and a fold; ranges at their edges (empty, the
 * first and the last block, the whole disk) and beyond them refused; a flipped payload byte
 * is `LogCorrupt`, never a digest; `rate` paces the reads (a TestClock: not done before
 * bytes / rate has passed).
 */
import { createHash } from "node:crypto"
import * as path from "node:path"
import { Chunk, Effect, Exit, Fiber, TestClock, TestContext } from "effect"
import { describe, expect, it } from "vitest"
import * as Wire from "../../src/protocol/Wire.js"
import { openChain } from "../../src/receiver/internal/chain.js"
import { openPointMap } from "../../src/receiver/internal/point.js"
import * as Checksums from "../../src/receiver/Checksums.js"
import {
  failureOf,
  flipByte,
  imageAt,
  makeChanges,
  readMetaFile,
  writeDisk
} from "../support/receiverDisk.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-block-digests-")
const geometry = { blockSize: 4096, blockCount: 24 }
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest()

const digestsOf = (image: Buffer, first: number, count: number) =>
  Buffer.concat(
    Array.from({ length: count }, (_, i) =>
      sha256(image.subarray((first + i) * geometry.blockSize, (first + i + 1) * geometry.blockSize))
    )
  )

const written = async () => {
  const dir = tempDir()
  const changes = makeChanges(geometry, 40, { seed: 18 })
  const disk = await writeDisk(dir, "vm", geometry, changes, { segmentBytes: 16 * 1024, fold: "mid-segment" })
  return { dir, changes, ...disk }
}

describe("blockDigests (issue 18)", () => {
  it("equals SHA-256 of the image's blocks at every recovery point, for ranges at their edges", async () => {
    const { dir, changes, baseSeq, lastSeq } = await written()
    expect(baseSeq).toBeGreaterThan(0)
    const ranges: ReadonlyArray<readonly [number, number]> = [
      [0, geometry.blockCount],
      [0, 1],
      [geometry.blockCount - 1, 1],
      [5, 7],
      [geometry.blockCount, 0]
    ]
    for (let seq = baseSeq; seq <= lastSeq; seq++) {
      const image = imageAt(geometry, changes, seq)
      for (const [first, count] of ranges) {
        const got = await Effect.runPromise(
          Checksums.blockDigests({ dir, diskId: "vm", at: seq, first, count })
        )
        expect(got.seq).toBe(seq)
        expect(got.count).toBe(count)
        expect(
          Buffer.from(got.digests).equals(digestsOf(image, first, count)),
          `seq ${seq} ${first}+${count}`
        ).toBe(true)
      }
    }
    // Defaults: the whole disk, the only disk, SHA-256.
    const latest = await Effect.runPromise(Checksums.blockDigests({ dir, at: "latest" }))
    expect(latest.digests.byteLength).toBe(geometry.blockCount * Wire.DIGEST_BYTES)
    expect(latest.algorithm).toBe("sha256")
    // BLAKE3 when asked: each block's own BLAKE3 digest at the point.
    const image = imageAt(geometry, changes, latest.seq)
    const blake3 = await Effect.runPromise(Checksums.blockDigests({ dir, at: "latest", algorithm: "blake3" }))
    expect(blake3.algorithm).toBe("blake3")
    for (let b = 0; b < geometry.blockCount; b++)
      expect(
        Buffer.from(blake3.digests.subarray(b * 32, (b + 1) * 32)).equals(
          Buffer.from(
            Wire.blockDigest(image.subarray(b * geometry.blockSize, (b + 1) * geometry.blockSize), "blake3")
          )
        ),
        `blake3 block ${b}`
      ).toBe(true)
    // Another name is an InvalidOption.
    const md5 = await Effect.runPromiseExit(
      Checksums.blockDigests({ dir, at: "latest", algorithm: "md5" as Wire.DigestAlgorithm })
    )
    expect((failureOf(md5) as { _tag?: string })._tag).toBe("InvalidOption")
  }, 60_000)

  it("refuses a range beyond the disk, and a point the log does not have", async () => {
    const { dir, baseSeq } = await written()
    for (const [first, count] of [
      [geometry.blockCount + 1, 0],
      [geometry.blockCount - 1, 2],
      [-1, 1],
      [0, 1.5]
    ] as const) {
      const exit = await Effect.runPromiseExit(Checksums.blockDigests({ dir, at: "latest", first, count }))
      expect((failureOf(exit) as { _tag?: string })._tag, `${first}+${count}`).toBe("InvalidOption")
    }
    const folded = await Effect.runPromiseExit(Checksums.blockDigests({ dir, at: baseSeq - 1 }))
    expect((failureOf(folded) as { _tag?: string })._tag).toBe("NotARecoveryPoint")
  })

  it("a flipped payload byte under a block is LogCorrupt naming the segment, never a digest", async () => {
    const { dir, diskDir, lastSeq } = await written()
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const x = (await openPointMap(chain, lastSeq, false)).extents[0]!
    flipByte(path.join(diskDir, chain.segments[x.segment]!.name), x.fileOffset)
    const block = Math.floor(x.start / geometry.blockSize)
    const exit = await Effect.runPromiseExit(
      Checksums.blockDigests({ dir, at: lastSeq, first: block, count: 1 })
    )
    const error = failureOf(exit) as { _tag?: string; file?: string }
    expect(Exit.isFailure(exit)).toBe(true)
    expect(error._tag).toBe("LogCorrupt")
    expect(error.file).toContain(chain.segments[x.segment]!.name.replace(/\.seg$/, ""))
  })

  it("paces its reads at `rate`: not done before bytes / rate has passed", async () => {
    const { dir } = await written()
    const bytes = geometry.blockSize * geometry.blockCount
    const program = Effect.gen(function* () {
      // 10 seconds' worth at this rate; the virtual clock stands still until told.
      const fiber = yield* Effect.fork(Checksums.blockDigests({ dir, at: "latest", rate: bytes / 10 }))
      // Real time for the reads (however loaded the machine), until it waits on the clock.
      for (let i = 0; i < 6000 && Chunk.isEmpty(yield* TestClock.sleeps()); i++) {
        expect(fiber.unsafePoll()).toBeNull()
        yield* Effect.promise(() => new Promise((done) => setTimeout(done, 10)))
      }
      expect(Chunk.toReadonlyArray(yield* TestClock.sleeps())).toEqual([10_000])
      yield* TestClock.adjust("9 seconds")
      yield* Effect.promise(() => new Promise((done) => setTimeout(done, 20)))
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 second")
      const result = yield* Fiber.join(fiber)
      expect(result.count).toBe(geometry.blockCount)
    })
    await Effect.runPromise(program.pipe(Effect.provide(TestContext.TestContext)))
  }, 30_000)
})

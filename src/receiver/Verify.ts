/**
 * Compares a recovery point with a disk image (an embedder's "is my replica whole?"):
 * the point is restored into a scratch file (removed afterwards) and compared with the
 * image block by block; the blocks that differ are reported as ranges.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Data, Effect } from "effect"
import { LogIoError } from "./internal/errors.js"
import { preadFully } from "./internal/files.js"
import { type At, points, restore } from "./Restore.js"

/** The image is not the size of the disk the receiver holds. */
export class ImageSizeMismatch extends Data.TaggedError("ImageSizeMismatch")<{
  readonly image: string
  readonly bytes: number
  readonly expected: number
}> {
  override get message() {
    return `${this.image} holds ${this.bytes} bytes; the disk has ${this.expected}`
  }
}

/** A run of consecutive tracking blocks that differ. */
export interface BlockRange {
  readonly first: number
  readonly count: number
}

export interface Verified {
  readonly diskId: string
  /** The recovery point compared. */
  readonly seq: number
  readonly time: number
  readonly blockSize: number
  readonly blockCount: number
  /** Number of blocks whose bytes differ. */
  readonly differing: number
  readonly ranges: ReadonlyArray<BlockRange>
  readonly equal: boolean
}

const CHUNK_BYTES = 4 << 20

/** Block ranges where `a` and `b` differ, read in chunks of whole blocks. */
const compare = async (a: string, b: string, blockSize: number, blockCount: number) => {
  const [ha, hb] = [await fs.open(a, "r"), await fs.open(b, "r")]
  try {
    const blocksPerChunk = Math.max(1, Math.floor(CHUNK_BYTES / blockSize))
    const bufA = Buffer.allocUnsafe(blocksPerChunk * blockSize)
    const bufB = Buffer.allocUnsafe(blocksPerChunk * blockSize)
    const ranges: Array<{ first: number; count: number }> = []
    let differing = 0
    for (let block = 0; block < blockCount; block += blocksPerChunk) {
      const n = Math.min(blocksPerChunk, blockCount - block)
      await preadFully(ha, bufA.subarray(0, n * blockSize), block * blockSize)
      await preadFully(hb, bufB.subarray(0, n * blockSize), block * blockSize)
      for (let i = 0; i < n; i++) {
        const at = i * blockSize
        if (bufA.compare(bufB, at, at + blockSize, at, at + blockSize) === 0) continue
        differing++
        const last = ranges.at(-1)
        if (last !== undefined && last.first + last.count === block + i) last.count++
        else ranges.push({ first: block + i, count: 1 })
      }
    }
    return { differing, ranges }
  } finally {
    await ha.close()
    await hb.close()
  }
}

/**
 * Compares the disk image `image` with the recovery point `at` of `diskId` in the receiver
 * directory `dir` (read-only: safe beside a running receiver).
 */
export const verify = Effect.fn("Receiver.verify")(function* (options: {
  readonly dir: string
  readonly diskId?: string | undefined
  readonly at: At
  readonly image: string
}) {
  const image = path.resolve(options.image)
  const scratch = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () => fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-verify-")),
      catch: (cause) => new LogIoError({ op: "restore", path: os.tmpdir(), cause })
    }),
    (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
  )
  const restored = yield* restore({
    dir: options.dir,
    diskId: options.diskId,
    at: options.at,
    out: path.join(scratch, "point.img")
  })
  const stat = yield* Effect.tryPromise({
    try: () => fs.stat(image),
    catch: (cause) => new LogIoError({ op: "read", path: image, cause })
  })
  if (stat.size !== restored.bytes)
    return yield* new ImageSizeMismatch({ image, bytes: stat.size, expected: restored.bytes })
  // The geometry as the receiver holds it (points reads disk.json, checked).
  const [held] = yield* points(options.dir, restored.diskId)
  const { blockSize, blockCount } = held!
  const { differing, ranges } = yield* Effect.tryPromise({
    try: () => compare(restored.out, image, blockSize, blockCount),
    catch: (cause) => new LogIoError({ op: "read", path: image, cause })
  })
  const verified: Verified = {
    diskId: restored.diskId,
    seq: restored.seq,
    time: restored.time,
    blockSize,
    blockCount,
    differing,
    ranges,
    equal: differing === 0
  }
  return verified
}, Effect.scoped)

/**
 * The receiver's side of online verify (issue 18, docs/receiver.md "Checksums"): the block
 * digests (`Wire.blockDigest`, SHA-256 or BLAKE3) of a range of a disk's blocks at a recovery point,
 * read from a receiver directory — read-only, so beside a running receiver, and at a rate
 * limit. `cdp-sync verify` compares them with the disk's at a point where both must match.
 *
 * The point is read through its block index (`openPointMap`, `openPointReader`): every byte
 * checked before it is hashed (a record's CRC32C and index entry, a base unit's CRC32C; a
 * format-1 base has no checksums and is read as it is). The reader holds the base and the
 * segments open, so a retention fold after it opened changes nothing it reads; one that
 * got there first is retried (`openPointAt`, as `mount` opens a point).
 */
import { Duration, Effect } from "effect"
import * as Wire from "../protocol/Wire.js"
import { type At, attempt, openPointAt } from "./internal/chainPoints.js"
import { InvalidOption } from "./internal/errors.js"

export interface BlockDigests {
  readonly diskId: string
  /** The recovery point read, and its receive time. */
  readonly seq: number
  readonly time: number
  readonly blockSize: number
  readonly blockCount: number
  /** The digests' algorithm. */
  readonly algorithm: Wire.DigestAlgorithm
  /** The first block hashed; `digests` holds one `Wire.DIGEST_BYTES` digest per block from it. */
  readonly first: number
  readonly count: number
  readonly digests: Uint8Array
}

/** Whole blocks read at a time. */
const CHUNK_BYTES = 4 << 20

const invalid = (option: string, value: number, reason: string) =>
  new InvalidOption({ option, value: String(value), reason })

/**
 * The digests of blocks `[first, first + count)` (default: every block) of disk `diskId`
 * (default: the only one) in receiver directory `dir`, at the recovery point `at` (a seq,
 * `"latest"`, a time: as `restore` takes it). With `rate` (bytes per second), reads are paced
 * so that the whole takes at least bytes / rate. `algorithm` BLAKE3 where its native module
 * does not load is an `InvalidOption`.
 */
export const blockDigests = Effect.fn("Receiver.blockDigests")(function* (options: {
  readonly dir: string
  readonly diskId?: string | undefined
  readonly at: At
  readonly first?: number | undefined
  readonly count?: number | undefined
  readonly rate?: number | undefined
  /** The digest's algorithm (default `"sha256"`, `Wire.blockDigest`'s); `"blake3"` where it is available. */
  readonly algorithm?: Wire.DigestAlgorithm | undefined
  /** The clock relative times (`-15m`) count back from (default `Date.now`). */
  readonly now?: (() => number) | undefined
}) {
  const algorithm = options.algorithm ?? Wire.DIGEST_ALGORITHM
  if (!Wire.DIGEST_ALGORITHMS.includes(algorithm) || !Wire.digestAvailable(algorithm))
    return yield* new InvalidOption({
      option: "algorithm",
      value: String(algorithm),
      reason: Wire.DIGEST_ALGORITHMS.includes(algorithm)
        ? "not available here (its native module did not load)"
        : "sha256 or blake3"
    })
  const { diskDir, meta, point, reader } = yield* openPointAt({
    dir: options.dir,
    diskId: options.diskId,
    at: options.at,
    now: options.now,
    writeIndexes: false
  })
  const { blockSize, blockCount } = meta
  const first = options.first ?? 0
  if (!Number.isSafeInteger(first) || first < 0 || first > blockCount)
    return yield* invalid("first", first, `the disk has ${blockCount} blocks`)
  const count = options.count ?? blockCount - first
  if (!Number.isSafeInteger(count) || count < 0 || first + count > blockCount)
    return yield* invalid("count", count, `blocks ${first}.. of a disk of ${blockCount} blocks`)
  const rate = options.rate ?? 0
  if (!(rate >= 0)) return yield* invalid("rate", rate, "bytes per second, 0 for no limit")

  const digests = new Uint8Array(count * Wire.DIGEST_BYTES)
  const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / blockSize))
  const started = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
  for (let done = 0; done < count; ) {
    const n = Math.min(perChunk, count - done)
    const bytes = yield* attempt(diskDir, "read", () =>
      reader.read((first + done) * blockSize, n * blockSize)
    )
    for (let i = 0; i < n; i++)
      digests.set(
        Wire.blockDigest(bytes.subarray(i * blockSize, (i + 1) * blockSize), algorithm),
        (done + i) * Wire.DIGEST_BYTES
      )
    done += n
    if (rate > 0) {
      // Paced: `done` blocks are due no sooner than their bytes / rate after the start.
      const due = started + ((done * blockSize) / rate) * 1000
      const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      if (due > now) yield* Effect.sleep(Duration.millis(due - now))
    }
  }
  const result: BlockDigests = {
    diskId: meta.diskId,
    seq: point.seq,
    time: point.time,
    blockSize,
    blockCount,
    algorithm,
    first,
    count,
    digests
  }
  return result
}, Effect.scoped)

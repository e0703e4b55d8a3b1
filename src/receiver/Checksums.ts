/**
 * The receiver's side of online verify (issue 18, docs/receiver.md "Checksums"): the block
 * digests (`Wire.blockDigest`, SHA-256) of a range of a disk's blocks at a recovery point,
 * read from a receiver directory — read-only, so beside a running receiver, and at a rate
 * limit. `cdp-sync verify` compares them with the disk's at a point where both must match.
 *
 * The point is read through its block index (`openPointMap`, `openPointReader`): every byte
 * checked before it is hashed (a record's CRC32C and index entry, a base unit's CRC32C; a
 * format-1 base has no checksums and is read as it is). The reader holds the base and the
 * segments open, so a retention fold after it opened changes nothing it reads; one that
 * got there first is retried.
 */
import * as path from "node:path"
import { Duration, Effect } from "effect"
import * as Wire from "../protocol/Wire.js"
import { diskDirName, openChain, readMeta } from "./internal/chain.js"
import { DiskNotFound, InvalidOption, type LogError, LogCorrupt, LogIoError } from "./internal/errors.js"
import { openPointMap, openPointReader, type PointReader } from "./internal/point.js"
import { type At, points } from "./Restore.js"

export interface BlockDigests {
  readonly diskId: string
  /** The recovery point read, and its receive time. */
  readonly seq: number
  readonly time: number
  readonly blockSize: number
  readonly blockCount: number
  /** The first block hashed; `digests` holds one `Wire.DIGEST_BYTES` digest per block from it. */
  readonly first: number
  readonly count: number
  readonly digests: Uint8Array
}

/** Whole blocks read at a time. */
const CHUNK_BYTES = 4 << 20

const attempt = <A>(file: string, f: () => Promise<A>): Effect.Effect<A, LogError> =>
  Effect.tryPromise({
    try: f,
    catch: (cause) =>
      cause instanceof LogCorrupt || cause instanceof LogIoError
        ? cause
        : new LogIoError({ op: "read", path: file, cause })
  })

const invalid = (option: string, value: number, reason: string) =>
  new InvalidOption({ option, value: String(value), reason })

/**
 * The digests of blocks `[first, first + count)` (default: every block) of disk `diskId`
 * (default: the only one) in receiver directory `dir`, at the recovery point `at` (a seq,
 * `"latest"`, a time: as `restore` takes it). With `rate` (bytes per second), reads are paced
 * so that the whole takes at least bytes / rate.
 */
export const blockDigests = Effect.fn("Receiver.blockDigests")(function* (options: {
  readonly dir: string
  readonly diskId?: string | undefined
  readonly at: At
  readonly first?: number | undefined
  readonly count?: number | undefined
  readonly rate?: number | undefined
  /** The clock relative times (`-15m`) count back from (default `Date.now`). */
  readonly now?: (() => number) | undefined
}) {
  const listed = yield* points(options.dir, options.diskId, { at: options.at, now: options.now })
  if (listed.length !== 1)
    return yield* new DiskNotFound({
      dir: options.dir,
      diskId: undefined,
      available: listed.map((d) => d.diskId)
    })
  const disk = listed[0]!
  const point = disk.points[0]!
  const { blockSize, blockCount } = disk
  const first = options.first ?? 0
  if (!Number.isSafeInteger(first) || first < 0 || first > blockCount)
    return yield* invalid("first", first, `the disk has ${blockCount} blocks`)
  const count = options.count ?? blockCount - first
  if (!Number.isSafeInteger(count) || count < 0 || first + count > blockCount)
    return yield* invalid("count", count, `blocks ${first}.. of a disk of ${blockCount} blocks`)
  const rate = options.rate ?? 0
  if (!(rate >= 0)) return yield* invalid("rate", rate, "bytes per second, 0 for no limit")

  const diskDir = path.join(options.dir, diskDirName(disk.diskId))
  /** The point's reader, or `undefined` when a fold removed what it needs (read the chain again). */
  const open = attempt(diskDir, async (): Promise<PointReader | undefined> => {
    const meta = await readMeta(diskDir)
    if (meta === undefined)
      throw new LogCorrupt({ file: path.join(diskDir, "disk.json"), offset: 0, reason: "missing" })
    const chain = await openChain(diskDir, meta, "read")
    if (point.seq < chain.base.seq)
      throw new LogIoError({
        op: "read",
        path: diskDir,
        cause: new Error(
          `recovery point ${point.seq} was folded into the base image (now at ${chain.base.seq})`
        )
      })
    return openPointReader(await openPointMap(chain, point.seq, false))
  })
  const opened = Effect.gen(function* () {
    for (let round = 0; ; round++) {
      const r = yield* open
      if (r !== undefined) return r
      if (round >= 3)
        return yield* new LogIoError({
          op: "read",
          path: diskDir,
          cause: new Error("the log kept changing under the read (retention folds); try again")
        })
    }
  })
  const reader = yield* Effect.acquireRelease(opened, (r) =>
    Effect.promise(() => r.close().catch(() => undefined))
  )

  const digests = new Uint8Array(count * Wire.DIGEST_BYTES)
  const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / blockSize))
  const started = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
  for (let done = 0; done < count; ) {
    const n = Math.min(perChunk, count - done)
    const bytes = yield* attempt(diskDir, () => reader.read((first + done) * blockSize, n * blockSize))
    for (let i = 0; i < n; i++)
      digests.set(
        Wire.blockDigest(bytes.subarray(i * blockSize, (i + 1) * blockSize)),
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
    diskId: disk.diskId,
    seq: point.seq,
    time: point.time,
    blockSize,
    blockCount,
    first,
    count,
    digests
  }
  return result
}, Effect.scoped)

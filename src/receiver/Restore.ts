/**
 * Reading a receiver directory back (docs/receiver.md): the recovery points of a disk
 * (`cdp-sync points`) and the disk image at one of them (`cdp-sync restore`).
 *
 * Both open the chain read-only, so they may run while the receiver does: a torn tail
 * is ignored (the receiver cuts it off when it restarts), the sealed segments are listed
 * from their indexes, and a fold racing the restore is detected and retried. Records the
 * receiver has written but not yet fsynced may already be listed.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect } from "effect"
import { type AtSpec, parseAt } from "./internal/at.js"
import { type Chain, diskBytesOf, tableOf } from "./internal/chain.js"
import {
  type At,
  attempt,
  type DiskPoints,
  type Point,
  pointAt,
  pointOf,
  pointsOf,
  readChain,
  resolve,
  retryingFolds,
  specOf
} from "./internal/chainPoints.js"
import {
  DiskNotFound,
  InvalidOption,
  LogIoError,
  NoRecoveryPointAt,
  NotARecoveryPoint,
  PointBeyondDamage,
  RestoreTargetRefused
} from "./internal/errors.js"
import { isEnoent, realPathOutside } from "./internal/files.js"
import { openPointMap, type PointMap } from "./internal/point.js"
import { type Target, writeTarget } from "./internal/replay.js"
import { bootThreads, type Progress, writePoint } from "./internal/writePoint.js"

export {
  DiskNotFound,
  InvalidOption,
  NoRecoveryPointAt,
  NotARecoveryPoint,
  PointBeyondDamage,
  RestoreTargetRefused
}
export { type At, type AtSpec, type DiskPoints, parseAt, type Point, type Progress }

/**
 * The recovery points of one disk (`diskId`) or of every disk in `dir`; with `at`, each
 * disk's list holds only the point `at` names (refused as `restore` refuses it).
 */
export const points = Effect.fn("Receiver.points")(function* (
  dir: string,
  diskId?: string,
  options?: { readonly at?: At | undefined; readonly now?: (() => number) | undefined }
) {
  const spec = options?.at === undefined ? undefined : yield* specOf(options.at)
  const disks = yield* resolve(dir, diskId, false)
  const out: Array<DiskPoints> = []
  for (const { diskDir, meta } of disks) {
    const chain = yield* readChain(diskDir, meta)
    const listed = pointsOf(chain)
    if (spec === undefined) out.push(listed)
    else {
      const point = yield* pointAt(chain, listed.points, spec, (options?.now ?? Date.now)())
      out.push({ ...listed, points: [point] })
    }
  }
  return out
})

export interface Restored {
  readonly diskId: string
  readonly seq: number
  readonly time: number
  readonly out: string
  readonly bytes: number
  readonly records: number
}

/** Size of a block device, from sysfs (Node cannot ask the device itself). */
const blockDeviceBytes = async (rdev: bigint): Promise<number | undefined> => {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)
  const text = await fs.readFile(`/sys/dev/block/${major}:${minor}/size`, "utf8").catch(() => undefined)
  const sectors = Number(text?.trim())
  return text === undefined || !Number.isSafeInteger(sectors) ? undefined : sectors * 512
}

/**
 * Checks `--out` before anything is written: never inside the receiver directory (paths
 * resolved with realpath, so no symbolic link leads there), only a regular file or a new
 * path — or, with `force`, a block device other than the one holding the receiver directory,
 * large enough for the image. Devices, FIFOs, sockets and directories are refused.
 */
const prepareTarget = async (
  dir: string,
  out: string,
  force: boolean,
  diskBytes: number
): Promise<Target> => {
  const refuse = (reason: string) => new RestoreTargetRefused({ out, reason })
  const { target, home } = await realPathOutside(dir, out, "restore writes outside it", refuse)
  const stat = await fs.stat(target, { bigint: true }).catch((e: unknown) => {
    if (isEnoent(e)) return undefined
    throw e
  })
  if (stat === undefined || stat.isFile()) return { _tag: "File", path: target }
  if (stat.isBlockDevice()) {
    if (!force) throw refuse(`${target} is a block device: pass --force to write the image into it in place`)
    const receiverDevice = home === undefined ? undefined : (await fs.stat(home, { bigint: true })).dev
    if (receiverDevice === stat.rdev) throw refuse(`${target} holds the receiver directory's file system`)
    const bytes = await blockDeviceBytes(stat.rdev)
    if (bytes === undefined) throw refuse(`cannot tell the size of block device ${target}`)
    if (bytes < diskBytes)
      throw refuse(`block device ${target} holds ${bytes} bytes, the image needs ${diskBytes}`)
    return { _tag: "Device", path: target, bytes }
  }
  const kind = stat.isDirectory()
    ? "a directory"
    : stat.isCharacterDevice()
      ? "a character device"
      : stat.isFIFO()
        ? "a FIFO"
        : stat.isSocket()
          ? "a socket"
          : "not a regular file"
  throw refuse(
    `${target} is ${kind}: restore writes a regular file, a new path or (with --force) a block device`
  )
}

/**
 * Materialises a disk at a recovery point: the base image (checked against its checksums)
 * plus every record through `at`, written to `out` atomically (a temporary file, fsynced,
 * renamed) — or, for a block device and `force`, into the device in place. A seq that is not
 * a recovery point is refused with the nearest ones named; an `out` that is the receiver's
 * own, or neither a regular file nor a new path, is refused before anything is written.
 */
export const restore = Effect.fn("Receiver.restore")(function* (options: {
  readonly dir: string
  readonly diskId?: string | undefined
  readonly at: At
  readonly out: string
  /** Allows a block device as `out` (written in place). */
  readonly force?: boolean | undefined
  /**
   * Called as the point's block indexes are read or rebuilt (`indexing`: after each sealed
   * segment), as the image is written (`writing`: as each read is placed, at most once a
   * MiB; the total is the image's bytes) and as it is written back (`syncing`: at its start
   * and end); each phase at its start and end.
   */
  readonly onProgress?: ((progress: Progress) => void) | undefined
  /** The clock relative times (`-15m`) count back from (default `Date.now`). */
  readonly now?: (() => number) | undefined
}) {
  const spec = yield* specOf(options.at)
  const now = (options.now ?? Date.now)()
  const [disk] = yield* resolve(options.dir, options.diskId, true)
  const { diskDir, meta } = disk!
  const run = Effect.gen(function* () {
    const chain = yield* readChain(diskDir, meta)
    // Found without listing every point (a refusal lists them to name the nearest).
    const target = yield* pointOf(chain, spec, now)
    const out = yield* Effect.tryPromise({
      try: () => prepareTarget(options.dir, options.out, options.force === true, diskBytesOf(meta)),
      catch: (cause) =>
        cause instanceof RestoreTargetRefused
          ? cause
          : new LogIoError({ op: "restore", path: path.resolve(options.out), cause })
    })
    const records = yield* attempt(out.path, "restore", () =>
      materialise(chain, target.seq, out, options.onProgress)
    )
    if (records === undefined) return undefined
    const restored: Restored = {
      diskId: meta.diskId,
      seq: target.seq,
      time: target.time,
      out: out.path,
      bytes: diskBytesOf(meta),
      records
    }
    return restored
  })
  // `undefined`: a fold replaced the base meanwhile; the chain is read again.
  return yield* retryingFolds(diskDir, "restore", run)
})

/**
 * Writes the image at `seq` to `out` through the block index (`writePoint`): the number of
 * records after the base through `seq`, or `undefined` when a fold raced it.
 */
const materialise = async (
  chain: Chain,
  seq: number,
  out: Target,
  onProgress: ((progress: Progress) => void) | undefined
): Promise<number | undefined> => {
  // The threads start while the point is opened (writePoint ends them).
  let booted = bootThreads()
  let map: PointMap
  try {
    map = await openPointMap(
      chain,
      seq,
      true,
      onProgress === undefined ? undefined : (p) => onProgress({ phase: "indexing", ...p })
    )
  } catch (e) {
    await booted?.close()
    throw e
  }
  let written: true | undefined
  try {
    written = await writeTarget(out, diskBytesOf(chain.meta), async (image, device) => {
      const threads = booted ?? bootThreads()
      booted = undefined
      return (await writePoint(map, image, device, onProgress, threads)) ? true : undefined
    })
  } finally {
    await booted?.close()
  }
  if (written === undefined) return undefined
  // Counted on the columns (the entries as objects cost more than the count).
  let records = 0
  for (const segment of chain.segments) {
    if (segment.lastSeq <= chain.base.seq || segment.firstSeq > seq) continue
    const seqs = tableOf(segment).seq
    for (let i = 0; i < seqs.length; i++) if (seqs[i]! > chain.base.seq && seqs[i]! <= seq) records++
  }
  return records
}

export const formatTime = (ms: number): string => (ms === 0 ? "-" : new Date(ms).toISOString())

/** The human listing of `points`; `picked`: each disk's list is the one point `--at` named. */
export const render = (disks: ReadonlyArray<DiskPoints>, picked = false): string => {
  const lines: Array<string> = []
  for (const d of disks) {
    lines.push(
      `disk ${d.diskId}: ${d.blockCount} blocks of ${d.blockSize} bytes; base at seq ${d.baseSeq}, log through seq ${d.lastSeq} (${d.segments} segments, ${d.logBytes} bytes); ${picked ? "the recovery point asked for" : `${d.points.length} recovery points`}`
    )
    lines.push(`  ${"seq".padStart(12)}  ${"received".padEnd(24)}  kind`)
    for (const p of d.points)
      lines.push(`  ${String(p.seq).padStart(12)}  ${formatTime(p.time).padEnd(24)}  ${p.kind}`)
    for (const w of d.warnings) lines.push(`  warning: ${w}`)
  }
  return lines.join("\n")
}

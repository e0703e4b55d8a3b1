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
import {
  BASE_FILE,
  type Chain,
  diskBytesOf,
  diskDirName,
  listDisks,
  openChain,
  readBase,
  readMeta
} from "./internal/chain.js"
import { DiskNotFound, type LogError, LogCorrupt, LogIoError, NotARecoveryPoint } from "./internal/errors.js"
import { isEnoent, sparseCopy, syncDirectory } from "./internal/files.js"
import { type IndexEntry, isRecoveryPoint, Kind, kindName } from "./internal/format.js"
import { defaultTuning, readRange } from "./internal/segment.js"
import { applyRecord } from "./LogStore.js"

export { DiskNotFound, NotARecoveryPoint }

export interface Point {
  readonly seq: number
  /** Receive time of the record (ms since the Unix epoch); 0 for the empty base. */
  readonly time: number
  /** `base`: the base image itself; `write`: an acked write in sync; `resync-end`: the end of a resync. */
  readonly kind: "base" | "write" | "block" | "resync-begin" | "resync-end"
}

export interface DiskPoints {
  readonly diskId: string
  readonly blockSize: number
  readonly blockCount: number
  /** The base image is the disk after this seq. */
  readonly baseSeq: number
  /** The last record the log holds. */
  readonly lastSeq: number
  readonly segments: number
  readonly logBytes: number
  /** Oldest first; the base is the first. */
  readonly points: ReadonlyArray<Point>
  /** What the reader noticed: a torn tail it ignored, damage where the readable log stops. */
  readonly warnings: ReadonlyArray<string>
}

const attempt = <A>(file: string, op: "read" | "restore", f: () => Promise<A>): Effect.Effect<A, LogError> =>
  Effect.tryPromise({
    try: f,
    catch: (cause) =>
      cause instanceof LogCorrupt || cause instanceof LogIoError
        ? cause
        : new LogIoError({ op, path: file, cause })
  })

/** The disk directories to look at: the one named, or every disk (exactly one when `single`). */
const resolve = (dir: string, diskId: string | undefined, single: boolean) =>
  Effect.gen(function* () {
    const disks = yield* attempt(dir, "read", () => listDisks(dir))
    const available = disks.map((d) => d.meta.diskId)
    if (diskId !== undefined) {
      const found = disks.find((d) => d.meta.diskId === diskId)
      if (found === undefined) {
        // Not listed (e.g. its disk.json is unreadable): try its directory by name for a precise error.
        const diskDir = path.join(dir, diskDirName(diskId))
        const meta = yield* attempt(diskDir, "read", () =>
          readMeta(diskDir).catch((e) => (isEnoent(e) ? undefined : Promise.reject(e)))
        )
        if (meta === undefined || meta.diskId !== diskId)
          return yield* new DiskNotFound({ dir, diskId, available })
        return [{ diskDir, meta }]
      }
      return [found]
    }
    if (disks.length === 0 || (single && disks.length > 1))
      return yield* new DiskNotFound({ dir, diskId: undefined, available })
    return disks
  })

const pointsOf = (chain: Chain): DiskPoints => {
  const points: Array<Point> = [{ seq: chain.base.seq, time: chain.base.time, kind: "base" }]
  let logBytes = 0
  for (const segment of chain.segments) {
    logBytes += segment.bytes
    for (const e of segment.entries ?? [])
      if (e.seq > chain.base.seq && isRecoveryPoint(e))
        points.push({ seq: e.seq, time: e.time, kind: kindName(e.kind) })
  }
  return {
    diskId: chain.meta.diskId,
    blockSize: chain.meta.blockSize,
    blockCount: chain.meta.blockCount,
    baseSeq: chain.base.seq,
    lastSeq: chain.lastSeq,
    segments: chain.segments.length,
    logBytes,
    points,
    warnings: chain.notes.map(
      (n) =>
        `${n.message} (${Object.entries(n.annotations)
          .map(([k, v]) => `${k}=${String(v)}`)
          .join(" ")})`
    )
  }
}

const readChain = (diskDir: string, meta: Parameters<typeof openChain>[1]) =>
  attempt(diskDir, "read", () => openChain(diskDir, meta, "read")).pipe(
    // A fold may remove a segment between listing and opening it: read again.
    Effect.retry({ times: 3, while: (e) => e._tag === "LogIoError" && isEnoent(e.cause) })
  )

/** The recovery points of one disk (`diskId`) or of every disk in `dir`. */
export const points = Effect.fn("Receiver.points")(function* (dir: string, diskId?: string) {
  const disks = yield* resolve(dir, diskId, false)
  const out: Array<DiskPoints> = []
  for (const { diskDir, meta } of disks) out.push(pointsOf(yield* readChain(diskDir, meta)))
  return out
})

export type At = number | "latest"

export interface Restored {
  readonly diskId: string
  readonly seq: number
  readonly time: number
  readonly out: string
  readonly bytes: number
  readonly records: number
}

/** Where `seq` lies, for the refusal: before the base, inside a resync, beyond the log, … */
const refusal = (chain: Chain, all: ReadonlyArray<Point>, seq: number): NotARecoveryPoint => {
  const before = all.filter((p) => p.seq < seq).at(-1)?.seq
  const after = all.find((p) => p.seq > seq)?.seq
  let reason: string
  if (seq < chain.base.seq) reason = `it was folded into the base image (at seq ${chain.base.seq})`
  else if (seq > chain.lastSeq)
    reason =
      chain.damaged === undefined
        ? `the log ends at seq ${chain.lastSeq}`
        : `the log is readable only through seq ${chain.lastSeq}: ${chain.damaged.message}`
  else {
    const entry = chain.segments.flatMap((s) => s.entries ?? []).find((e) => e.seq === seq)
    reason =
      entry === undefined
        ? "no record has this seq (a resync skipped it)"
        : entry.kind === Kind.Write
          ? "this write was received during a resync: the image is inconsistent there"
          : `a ${kindName(entry.kind)} record: the image is inconsistent inside a resync`
  }
  return new NotARecoveryPoint({ diskId: chain.meta.diskId, seq, reason, before, after })
}

/**
 * Materialises a disk at a recovery point: the base image plus every record through `at`,
 * written to `out` atomically (a temporary file, fsynced, renamed). A seq that is not a
 * recovery point is refused with the nearest ones named.
 */
export const restore = Effect.fn("Receiver.restore")(function* (options: {
  readonly dir: string
  readonly diskId?: string | undefined
  readonly at: At
  readonly out: string
}) {
  const [disk] = yield* resolve(options.dir, options.diskId, true)
  const { diskDir, meta } = disk!
  const run = Effect.gen(function* () {
    const chain = yield* readChain(diskDir, meta)
    const all = pointsOf(chain).points
    const target = options.at === "latest" ? all.at(-1)! : all.find((p) => p.seq === options.at)
    if (target === undefined) return yield* refusal(chain, all, options.at as number)
    const out = path.resolve(options.out)
    const records = yield* attempt(out, "restore", () => materialise(chain, target.seq, out))
    if (records === undefined) return undefined
    const restored: Restored = {
      diskId: meta.diskId,
      seq: target.seq,
      time: target.time,
      out,
      bytes: diskBytesOf(meta),
      records
    }
    return restored
  })
  // `undefined`: a fold replaced the base meanwhile; the chain is read again.
  for (let round = 0; ; round++) {
    const restored = yield* run
    if (restored !== undefined) return restored
    if (round >= 3)
      return yield* new LogIoError({
        op: "restore",
        path: diskDir,
        cause: new Error("the log kept changing under the restore (retention folds); try again")
      })
  }
})

/** Writes the image at `seq` to `out`; the number of records applied, or `undefined` when a fold raced it. */
const materialise = async (chain: Chain, seq: number, out: string): Promise<number | undefined> => {
  const diskBytes = diskBytesOf(chain.meta)
  const geometry = { blockSize: chain.meta.blockSize, blockCount: chain.meta.blockCount }
  const temp = `${out}.tmp-${process.pid}`
  const image = await fs.open(temp, "w", 0o644)
  let applied = 0
  let complete = false
  try {
    await image.truncate(diskBytes)
    const baseFile = path.join(chain.diskDir, BASE_FILE)
    const base = await fs.open(baseFile, "r")
    try {
      // The open handle keeps this base even if a fold renames a new one over it.
      const trailer = await readBase(base, baseFile, diskBytes)
      if (trailer.seq !== chain.base.seq) return undefined
      await sparseCopy(base, image, diskBytes)
    } finally {
      await base.close()
    }
    for (const segment of chain.segments) {
      const entries: ReadonlyArray<IndexEntry> = segment.entries ?? []
      const first = entries.find((e) => e.seq > chain.base.seq)
      if (first === undefined) continue
      if (first.seq > seq) break
      const file = path.join(chain.diskDir, segment.name)
      let handle: fs.FileHandle
      try {
        handle = await fs.open(file, "r")
      } catch (e) {
        if (isEnoent(e)) return undefined
        throw e
      }
      let done = false
      try {
        // Every record applied is checked against the entry it was listed by (index or scan).
        const expected = { entries, indexFile: segment.indexFile }
        await readRange(
          handle,
          file,
          first.offset,
          segment.bytes,
          undefined,
          async (h, payload) => {
            if (h.seq > seq) return (done = true)
            await applyRecord(image, geometry, h, payload)
            applied++
            return h.seq === seq ? (done = true) : false
          },
          defaultTuning,
          expected
        )
      } finally {
        await handle.close()
      }
      if (done) break
    }
    await image.sync()
    complete = true
  } finally {
    await image.close()
    if (!complete) await fs.unlink(temp).catch(() => undefined)
  }
  await fs.rename(temp, out)
  await syncDirectory(path.dirname(out))
  return applied
}

export const formatTime = (ms: number): string => (ms === 0 ? "-" : new Date(ms).toISOString())

/** The human listing of `points`. */
export const render = (disks: ReadonlyArray<DiskPoints>): string => {
  const lines: Array<string> = []
  for (const d of disks) {
    lines.push(
      `disk ${d.diskId}: ${d.blockCount} blocks of ${d.blockSize} bytes; base at seq ${d.baseSeq}, log through seq ${d.lastSeq} (${d.segments} segments, ${d.logBytes} bytes); ${d.points.length} recovery points`
    )
    lines.push(`  ${"seq".padStart(12)}  ${"received".padEnd(24)}  kind`)
    for (const p of d.points)
      lines.push(`  ${String(p.seq).padStart(12)}  ${formatTime(p.time).padEnd(24)}  ${p.kind}`)
    for (const w of d.warnings) lines.push(`  warning: ${w}`)
  }
  return lines.join("\n")
}

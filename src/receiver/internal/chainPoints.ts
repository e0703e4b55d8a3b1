/**
 * Opening a recovery point of a receiver directory read-only (`points`, `restore`,
 * `mount`): the disk named (or the only one), its chain (a fold removing a segment between
 * listing and opening it is read again), its recovery points, and the one `at` names — or
 * why there is none, with the nearest points named. `retryingFolds` runs what reads the
 * chain's files again when a fold replaced them first.
 */
import * as path from "node:path"
import { Effect } from "effect"
import { type AtSpec, parseAt, resolveAt } from "./at.js"
import { type Chain, diskDirName, openChain, surveyDisks } from "./chain.js"
import {
  DiskNotFound,
  type InvalidOption,
  type LogError,
  LogCorrupt,
  LogIoError,
  NoRecoveryPointAt,
  NotARecoveryPoint
} from "./errors.js"
import { isEnoent } from "./files.js"
import { isRecoveryPoint, Kind, kindName } from "./format.js"
import { openPointMap, openPointReader } from "./point.js"

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

export const attempt = <A>(
  file: string,
  op: "read" | "write" | "restore",
  f: () => Promise<A>
): Effect.Effect<A, LogError> =>
  Effect.tryPromise({
    try: f,
    catch: (cause) =>
      cause instanceof LogCorrupt || cause instanceof LogIoError
        ? cause
        : new LogIoError({ op, path: file, cause })
  })

/**
 * The disk directories to look at: the one named, or every disk (exactly one when `single`).
 * A disk whose `disk.json` is missing beside acked records, or damaged, is its `LogCorrupt`.
 */
export const resolve = (dir: string, diskId: string | undefined, single: boolean) =>
  Effect.gen(function* () {
    const found = yield* attempt(dir, "read", () => surveyDisks(dir))
    const disks = found.flatMap((d) => (d._tag === "Disk" ? [{ diskDir: d.diskDir, meta: d.meta }] : []))
    const available = disks.map((d) => d.meta.diskId)
    if (diskId !== undefined) {
      const match = disks.find((d) => d.meta.diskId === diskId)
      if (match !== undefined) return [match]
      const named = found.find((d) => d.diskDir === path.join(dir, diskDirName(diskId)))
      if (named?._tag === "Refused") return yield* named.error
      return yield* new DiskNotFound({ dir, diskId, available })
    }
    const refused = found.find((d) => d._tag === "Refused")
    if (refused !== undefined) return yield* refused.error
    if (disks.length === 0 || (single && disks.length > 1))
      return yield* new DiskNotFound({ dir, diskId: undefined, available })
    return disks
  })

export const pointsOf = (chain: Chain): DiskPoints => {
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

export const readChain = (diskDir: string, meta: Parameters<typeof openChain>[1]) =>
  attempt(diskDir, "read", () => openChain(diskDir, meta, "read")).pipe(
    // A fold may remove a segment between listing and opening it: read again.
    Effect.retry({ times: 3, while: (e) => e._tag === "LogIoError" && isEnoent(e.cause) })
  )

/**
 * A recovery point: a seq, `"latest"`, a parsed `AtSpec`, or the text `--at` takes — a seq,
 * `latest`, an ISO 8601 time or a relative one (`-15m`, `-2h`, `-1d`): the newest recovery
 * point received at or before it (`parseAt`; a text that does not parse is `InvalidOption`).
 */
export type At = number | "latest" | string | AtSpec

export const specOf = (at: At): Effect.Effect<AtSpec, InvalidOption> =>
  typeof at === "number"
    ? Effect.succeed({ _tag: "Seq", seq: at })
    : typeof at === "string"
      ? parseAt(at)
      : Effect.succeed(at)

/** The point `at` names among `all`, or why there is none (a seq that is none, a time before every point). */
export const pointAt = (chain: Chain, all: ReadonlyArray<Point>, spec: AtSpec, now: number) => {
  const found = resolveAt(all, spec, now)
  if (found._tag === "Point") return Effect.succeed(found.point)
  if (found._tag === "NoSeq") return Effect.fail(refusal(chain, all, found.seq))
  return Effect.fail(
    new NoRecoveryPointAt({
      diskId: chain.meta.diskId,
      at: found.text,
      time: found.time,
      oldest: found.oldest
    })
  )
}

/** Where `seq` lies, for the refusal: before the base, inside a resync, beyond the log, … */
export const refusal = (chain: Chain, all: ReadonlyArray<Point>, seq: number): NotARecoveryPoint => {
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
 * Runs `run` (which reads the chain afresh each time) until it returns something: `undefined`
 * means a retention fold replaced a file it was about to open. After a few rounds the log is
 * said to keep changing (`LogIoError`).
 */
export const retryingFolds = <A, E, R>(
  diskDir: string,
  op: "read" | "write" | "restore",
  run: Effect.Effect<A | undefined, E, R>
): Effect.Effect<A, E | LogIoError, R> =>
  Effect.gen(function* () {
    for (let round = 0; ; round++) {
      const done = yield* run
      if (done !== undefined) return done
      if (round >= 3)
        return yield* new LogIoError({
          op,
          path: diskDir,
          cause: new Error(`the log kept changing under the ${op} (retention folds); try again`)
        })
    }
  })

/**
 * The point `at` names of a disk in `dir`, opened for reading until the scope closes: its
 * map and a reader holding the base and the segments it reads (so a fold after this changes
 * nothing it reads; one that raced the opening is retried). `writeIndexes`: a `.bix` rebuilt
 * on the way is written back (aside, renamed), as `restore` does.
 */
export const openPointAt = (options: {
  readonly dir: string
  readonly diskId?: string | undefined
  readonly at: At
  readonly now?: (() => number) | undefined
  readonly writeIndexes: boolean
}) =>
  Effect.gen(function* () {
    const spec = yield* specOf(options.at)
    const now = (options.now ?? Date.now)()
    const [disk] = yield* resolve(options.dir, options.diskId, true)
    const { diskDir, meta } = disk!
    const opened = yield* retryingFolds(
      diskDir,
      "read",
      Effect.gen(function* () {
        const chain = yield* readChain(diskDir, meta)
        const point = yield* pointAt(chain, pointsOf(chain).points, spec, now)
        const reader = yield* Effect.acquireRelease(
          attempt(diskDir, "read", async () => {
            const map = await openPointMap(chain, point.seq, options.writeIndexes)
            const reader = await openPointReader(map)
            return reader === undefined ? undefined : { reader, notes: map.notes }
          }),
          (r) => (r === undefined ? Effect.void : Effect.promise(() => r.reader.close()))
        )
        return reader === undefined ? undefined : { ...reader, point }
      })
    )
    return { diskDir, meta, ...opened }
  })

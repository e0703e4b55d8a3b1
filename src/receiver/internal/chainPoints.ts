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
import { type Chain, diskDirName, openChain, surveyDisks, tableOf } from "./chain.js"
import {
  DiskNotFound,
  type InvalidOption,
  type LogError,
  LogCorrupt,
  LogIoError,
  NoRecoveryPointAt,
  NotARecoveryPoint,
  PointBeyondDamage
} from "./errors.js"
import { isEnoent } from "./files.js"
import { FLAG_RECOVERY_POINT, Kind, kindName } from "./format.js"
import { ReceiverMutants } from "./mutants.js"
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
  const baseSeq = chain.base.seq
  const points: Array<Point> = [{ seq: baseSeq, time: chain.base.time, kind: "base" }]
  let logBytes = 0
  for (const segment of chain.segments) {
    logBytes += segment.bytes
    const t = tableOf(segment)
    for (let i = 0; i < t.count; i++)
      if (t.seq[i]! > baseSeq && (t.flags[i]! & FLAG_RECOVERY_POINT) !== 0)
        points.push({ seq: t.seq[i]!, time: t.time[i]!, kind: kindName(t.kind[i]! as Kind) })
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
export const pointAt = (
  chain: Chain,
  all: ReadonlyArray<Point>,
  spec: AtSpec,
  now: number
): Effect.Effect<Point, NotARecoveryPoint | NoRecoveryPointAt | PointBeyondDamage> => {
  const beyond = beyondDamage(chain, spec, () => all.at(-1))
  if (beyond !== undefined) return Effect.fail(beyond)
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

/**
 * The point `spec` names, as `pointAt(chain, pointsOf(chain).points, spec, now)` finds it,
 * without listing every point: `latest` from the segments' last points, a seq by bisection,
 * a time by a walk back from the end over the records' columns. A refusal lists them all to
 * name the nearest points.
 */
export const pointOf = (
  chain: Chain,
  spec: AtSpec,
  now: number
): Effect.Effect<Point, NotARecoveryPoint | NoRecoveryPointAt | PointBeyondDamage> => {
  const beyond = beyondDamage(chain, spec, () => findPoint(chain, { _tag: "Latest" }, now))
  if (beyond !== undefined) return Effect.fail(beyond)
  const found = findPoint(chain, spec, now)
  return found === undefined ? pointAt(chain, pointsOf(chain).points, spec, now) : Effect.succeed(found)
}

/**
 * On a log read only up to damage, `latest` and a time may name a point beyond it (times
 * need not ascend across the damage): refused rather than answered with an older point. A
 * seq is judged as usual (`refusal` says when it lies beyond the readable log).
 */
const beyondDamage = (
  chain: Chain,
  spec: AtSpec,
  newestReadable: () => Point | undefined
): PointBeyondDamage | undefined => {
  if (chain.damaged === undefined || spec._tag === "Seq") return undefined
  const newest = newestReadable()
  return new PointBeyondDamage({
    diskId: chain.meta.diskId,
    at: spec._tag === "Latest" ? "latest" : spec.text,
    damage: chain.damaged,
    readableThrough: chain.lastSeq,
    newestReadable: newest === undefined ? undefined : { seq: newest.seq, time: newest.time }
  })
}

/** The point `spec` names (`pointOf`), or `undefined` when there is none. */
export const findPoint = (chain: Chain, spec: AtSpec, now: number): Point | undefined => {
  const baseSeq = chain.base.seq
  const base: Point = { seq: baseSeq, time: chain.base.time, kind: "base" }
  const segments = chain.segments
  // A record through the base's seq is folded into it: no point (the base stands for it).
  const folded = (seq: number) => seq <= baseSeq && !ReceiverMutants.pointOfKeepsFolded
  const pointIn = (s: number, seq: number): Point | undefined => {
    const t = tableOf(segments[s]!)
    const i = t.indexOf(seq)
    return i < 0 || folded(seq) || (t.flags[i]! & FLAG_RECOVERY_POINT) === 0
      ? undefined
      : { seq, time: t.time[i]!, kind: kindName(t.kind[i]! as Kind) }
  }
  switch (spec._tag) {
    case "Latest": {
      // The newest segment holding a point holds the newest point; none after the base: the base.
      for (let s = segments.length - 1; s >= 0; s--) {
        const last = segments[s]!.lastPoint
        if (last !== undefined) return folded(last.seq) ? base : pointIn(s, last.seq)
      }
      return base
    }
    case "Seq": {
      if (spec.seq === baseSeq) return base
      for (let s = 0; s < segments.length; s++)
        if (segments[s]!.firstSeq <= spec.seq && spec.seq <= segments[s]!.lastSeq) return pointIn(s, spec.seq)
      return undefined
    }
    default: {
      // The newest point received at or before `time` (times need not ascend: every record is looked at).
      const time = spec._tag === "Time" ? spec.time : now - spec.ms
      for (let s = segments.length - 1; s >= 0; s--) {
        const t = tableOf(segments[s]!)
        for (let i = t.count - 1; i >= 0 && !folded(t.seq[i]!); i--)
          if ((t.flags[i]! & FLAG_RECOVERY_POINT) !== 0 && t.time[i]! > 0 && t.time[i]! <= time)
            return { seq: t.seq[i]!, time: t.time[i]!, kind: kindName(t.kind[i]! as Kind) }
        if (folded(segments[s]!.firstSeq)) break
      }
      return base.time > 0 && base.time <= time ? base : undefined
    }
  }
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
export const openPointAt = (options: PointOptions & { readonly writeIndexes: boolean }) =>
  openPointWith(
    options,
    async (chain, seq) => {
      const map = await openPointMap(chain, seq, options.writeIndexes)
      const reader = await openPointReader(map)
      return reader === undefined ? undefined : { reader, notes: map.notes }
    },
    (opened) => opened.reader.close()
  ).pipe(Effect.map(({ opened, ...rest }) => ({ ...rest, ...opened })))

export interface PointOptions {
  readonly dir: string
  readonly diskId?: string | undefined
  readonly at: At
  /** The clock relative times (`-15m`) count back from (default `Date.now`). */
  readonly now?: (() => number) | undefined
}

/**
 * The point `at` names of a disk in `dir`, with what `open` makes of it kept until the scope
 * closes (`close`); `open` answers `undefined` when a fold replaced a file it was about to
 * read, and the chain is read again.
 */
export const openPointWith = <R>(
  options: PointOptions,
  open: (chain: Chain, seq: number) => Promise<R | undefined>,
  close: (opened: R) => Promise<void>
) =>
  Effect.gen(function* () {
    const spec = yield* specOf(options.at)
    const now = (options.now ?? Date.now)()
    const [disk] = yield* resolve(options.dir, options.diskId, true)
    const { diskDir, meta } = disk!
    const found = yield* retryingFolds(
      diskDir,
      "read",
      Effect.gen(function* () {
        const chain = yield* readChain(diskDir, meta)
        const point = yield* pointOf(chain, spec, now)
        const opened = yield* Effect.acquireRelease(
          attempt(diskDir, "read", () => open(chain, point.seq)),
          (r) => (r === undefined ? Effect.void : Effect.promise(() => close(r)))
        )
        return opened === undefined ? undefined : { opened, point }
      })
    )
    return { diskDir, meta, ...found }
  })

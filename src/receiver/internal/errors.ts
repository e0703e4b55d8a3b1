/**
 * The log receiver's errors. In-process failures are `Data.TaggedError`s with a
 * `cause`; the refusal of a hello crosses the wire (as a `Refuse` frame), so it is a
 * `Schema.TaggedError`.
 */
import { Data, Schema } from "effect"

const describe = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : String(cause)

/** Damage the log store will not repair by itself: it names the file and the byte offset. */
export class LogCorrupt extends Data.TaggedError("LogCorrupt")<{
  readonly file: string
  readonly offset: number
  readonly reason: string
}> {
  override get message() {
    return `log corrupt: ${this.file} at byte ${this.offset}: ${this.reason}`
  }
}

export type LogOp =
  | "open"
  | "create"
  | "scan"
  | "append"
  | "roll"
  | "truncate"
  | "fold"
  | "read"
  | "write"
  | "restore"
  | "lock"
  | "close"

/** The operating system failed an I/O call. */
export class LogIoError extends Data.TaggedError("LogIoError")<{
  readonly op: LogOp
  readonly path: string
  readonly cause: unknown
}> {
  override get message() {
    return `log ${this.op} failed on ${this.path}: ${describe(this.cause)}`
  }
}

/** Another receiver process owns the directory. */
export class ReceiverLocked extends Data.TaggedError("ReceiverLocked")<{
  readonly dir: string
  readonly pid: number
}> {
  override get message() {
    return `${this.dir} is in use by another receiver (pid ${this.pid}); stop it first`
  }
}

/** The directory holds no disk with that id, or several when none was named. */
export class DiskNotFound extends Data.TaggedError("DiskNotFound")<{
  readonly dir: string
  readonly diskId: string | undefined
  readonly available: ReadonlyArray<string>
}> {
  override get message() {
    const known = this.available.length === 0 ? "none" : this.available.join(", ")
    if (this.diskId !== undefined)
      return `${this.dir} holds no disk ${JSON.stringify(this.diskId)} (disks: ${known})`
    return this.available.length === 0
      ? `${this.dir} holds no disk`
      : `${this.dir} holds ${this.available.length} disks (${known}): name one with --disk`
  }
}

/** A restore asked for a seq that is not a recovery point; names the nearest ones. */
export class NotARecoveryPoint extends Data.TaggedError("NotARecoveryPoint")<{
  readonly diskId: string
  readonly seq: number
  readonly reason: string
  readonly before: number | undefined
  readonly after: number | undefined
}> {
  override get message() {
    const near = [
      this.before === undefined ? undefined : `${this.before} (before)`,
      this.after === undefined ? undefined : `${this.after} (after)`
    ].filter((s) => s !== undefined)
    return `seq ${this.seq} is not a recovery point of disk ${this.diskId}: ${this.reason}; nearest recovery points: ${near.length === 0 ? "none" : near.join(", ")}`
  }
}

/** A time asked for (`--at` an ISO 8601 or relative time) before the oldest recovery point with a time. */
export class NoRecoveryPointAt extends Data.TaggedError("NoRecoveryPointAt")<{
  readonly diskId: string
  /** What was asked, as given (`-15m`, `2024-05-01T10:00:00Z`). */
  readonly at: string
  /** The time it stands for, ms since the Unix epoch. */
  readonly time: number
  /** The oldest recovery point with a receive time, if any. */
  readonly oldest: { readonly seq: number; readonly time: number } | undefined
}> {
  override get message() {
    const when = new Date(this.time).toISOString()
    return this.oldest === undefined
      ? `no recovery point of disk ${this.diskId} at or before ${when} (--at ${this.at}): the disk has no recovery point with a receive time yet`
      : `no recovery point of disk ${this.diskId} at or before ${when} (--at ${this.at}): the oldest is seq ${this.oldest.seq}, received ${new Date(this.oldest.time).toISOString()}; nearest recovery points: ${this.oldest.seq} (after)`
  }
}

/**
 * `--at latest` or a time, on a log that is damaged before its end: the point it names may
 * lie beyond the damage, so none is guessed. Points before the damage are named by seq.
 */
export class PointBeyondDamage extends Data.TaggedError("PointBeyondDamage")<{
  readonly diskId: string
  /** What was asked, as given (`latest`, `-15m`, an ISO 8601 time). */
  readonly at: string
  readonly damage: LogCorrupt
  /** The last seq the log can be read through. */
  readonly readableThrough: number
  /** The newest recovery point before the damage, if any. */
  readonly newestReadable: { readonly seq: number; readonly time: number } | undefined
}> {
  override get message() {
    const readable =
      this.newestReadable === undefined
        ? "no recovery point lies before it"
        : `the newest recovery point before it is seq ${this.newestReadable.seq}${this.newestReadable.time > 0 ? `, received ${new Date(this.newestReadable.time).toISOString()}` : ""}: name it with --at ${this.newestReadable.seq} to use it`
    return `cannot tell which recovery point --at ${this.at} names on disk ${this.diskId}: the log is readable only through seq ${this.readableThrough}, ${this.damage.message}; ${readable} (cdp-sync scrub lists every damage)`
  }
}

/** `restore --out` names something it must not write: the receiver's own files, a device, … */
export class RestoreTargetRefused extends Data.TaggedError("RestoreTargetRefused")<{
  readonly out: string
  readonly reason: string
}> {
  override get message() {
    return `--out ${this.out}: ${this.reason}`
  }
}

/** A command-line value that does not parse (`--retain`, `--segment-bytes`, `--at`). */
export class InvalidOption extends Data.TaggedError("InvalidOption")<{
  readonly option: string
  readonly value: string
  readonly reason: string
}> {
  override get message() {
    return `--${this.option} ${JSON.stringify(this.value)}: ${this.reason}`
  }
}

export const RefuseReason = Schema.Literal(
  /** Not a valid geometry. */
  "bad-geometry",
  /** The directory holds the disk with another geometry. */
  "geometry-mismatch",
  /** The disk already has a filter connection. */
  "already-connected",
  /** The disk's log failed (I/O error, corruption) and is closed until the receiver restarts. */
  "log-failed"
)
export type RefuseReason = typeof RefuseReason.Type

/** The receiver refused a hello; sent to the filter as a `Refuse` frame, then the connection closes. */
export class HelloRefused extends Schema.TaggedError<HelloRefused>()("HelloRefused", {
  diskId: Schema.String,
  reason: RefuseReason,
  detail: Schema.String
}) {
  override get message() {
    return `hello for disk ${this.diskId} refused (${this.reason}): ${this.detail}`
  }
}

export type LogError = LogCorrupt | LogIoError

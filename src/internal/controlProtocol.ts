/**
 * The control endpoint's protocol (docs/operations.md, "Status"): line-delimited JSON
 * over a local unix socket. A client sends one request per line, `{"op":"status"}`,
 * and gets one reply line: `{"status": Report}` or `{"error": {"_tag", "message"}}`;
 * or `{"op":"verify"}` (a filter), answered with `{"progress": …}` lines and then one
 * `{"verify": VerifyReport}` or `{"error": …}` line.
 * Both sides decode what they read with these schemas; times are ISO 8601 strings and
 * every age is computed by the answering process (its clock, not the client's).
 */
import { Schema } from "effect"

/** The largest request line the endpoint reads (without its line end); a longer one is refused. */
export const MAX_REQUEST_BYTES = 4096
/** The largest reply line a client reads. */
export const MAX_REPLY_BYTES = 4 * 1024 * 1024

export const StatusRequest = Schema.Struct({ op: Schema.Literal("status") })
export type StatusRequest = typeof StatusRequest.Type

/**
 * Online verify (a filter's endpoint only): compare the receiver's version of every block
 * with the disk's. Answered with `progress` lines, then one `verify` (or `error`) line.
 */
export const VerifyRequest = Schema.Struct({
  op: Schema.Literal("verify"),
  /** Read at most this many bytes of the disk per second; absent: as fast as it goes. */
  bytesPerSecond: Schema.optional(Schema.Number.pipe(Schema.positive(), Schema.finite())),
  /** Mark the blocks found to differ so that the next pass sends them. */
  resync: Schema.optional(Schema.Boolean)
})
export type VerifyRequest = typeof VerifyRequest.Type

export const Request = Schema.Union(StatusRequest, VerifyRequest)
export type Request = typeof Request.Type

const Count = Schema.NonNegativeInt
const Seconds = Schema.NonNegative
/** A block digest's algorithm (`Wire.DigestAlgorithm`). */
const DigestAlgorithm = Schema.Literal("sha256", "blake3")

/** A recovery point: its seq, when (the filter: its ack arrived; the receiver: it was received) and how old. */
export const RecoveryPoint = Schema.Struct({ seq: Count, at: Schema.String, ageSeconds: Seconds })
export type RecoveryPoint = typeof RecoveryPoint.Type

export const ErrorNote = Schema.Struct({ message: Schema.String, at: Schema.String })
export type ErrorNote = typeof ErrorNote.Type

export const FilterDisk = Schema.Struct({
  role: Schema.Literal("filter"),
  disk: Schema.String,
  /** The receiver it replicates to, HOST:PORT. */
  receiver: Schema.String,
  mode: Schema.Literal("sync", "resync"),
  link: Schema.Literal("up", "down"),
  epoch: Count,
  nextSeq: Count,
  watermark: Count,
  blockSize: Count,
  dirtyBlocks: Count,
  dirtyBytes: Count,
  inFlight: Count,
  /** The live RPO: records not acked, and the age of the oldest of them. */
  lagRecords: Count,
  lagSeconds: Seconds,
  drain: Schema.NullOr(
    Schema.Struct({
      peakBlocks: Count,
      sentBlocks: Count,
      progress: Schema.Number.pipe(Schema.between(0, 1)),
      bytesPerSecond: Seconds
    })
  ),
  lastRecoveryPoint: Schema.NullOr(RecoveryPoint),
  lastError: Schema.NullOr(ErrorNote),
  stopped: Schema.NullOr(Schema.Struct({ reason: Schema.String, detail: Schema.String, at: Schema.String })),
  /**
   * Checksum-based resync since the filter started: blocks compared, matched (not sent), sent
   * after a mismatch, and the digest algorithm asked (absent from a filter before session 13).
   * Absent from a filter before checksum resync.
   */
  checksums: Schema.optional(
    Schema.Struct({
      compared: Count,
      matched: Count,
      sent: Count,
      algorithm: Schema.optional(DigestAlgorithm)
    })
  )
})
export type FilterDisk = typeof FilterDisk.Type

export const ReceiverDisk = Schema.Struct({
  role: Schema.Literal("receiver"),
  disk: Schema.String,
  connected: Schema.Boolean,
  /** The connected filter, HOST:PORT. */
  peer: Schema.NullOr(Schema.String),
  /** The last record fsynced (and acked), and the last one accepted. */
  durableSeq: Count,
  acceptedSeq: Count,
  /** Between a resync-begin and its resync-end: no recovery point until it ends. */
  inResync: Schema.Boolean,
  blockSize: Count,
  blockCount: Count,
  lastRecoveryPoint: Schema.NullOr(RecoveryPoint),
  /** Bytes of log (segment files) and how many segments. */
  logBytes: Count,
  segments: Count,
  lastError: Schema.NullOr(ErrorNote)
})
export type ReceiverDisk = typeof ReceiverDisk.Type

export const Report = Schema.Struct({
  role: Schema.Literal("filter", "receiver"),
  pid: Count,
  /** When the process answered. */
  at: Schema.String,
  disks: Schema.Array(Schema.Union(FilterDisk, ReceiverDisk))
})
export type Report = typeof Report.Type

/** A run of consecutive tracking blocks. */
export const BlockRange = Schema.Struct({ first: Count, count: Count })
export type BlockRange = typeof BlockRange.Type

/** At most this many ranges are listed in a verify report (the count is always whole). */
export const MAX_VERIFY_RANGES = 1000

export const VerifyProgress = Schema.Struct({
  /** Blocks on the disk, and how many are verified so far. */
  blocks: Count,
  verified: Count,
  differing: Count,
  bytesPerSecond: Seconds
})
export type VerifyProgress = typeof VerifyProgress.Type

export const VerifyReport = Schema.Struct({
  disk: Schema.String,
  blockSize: Count,
  /** Blocks on the disk. */
  blocks: Count,
  /** Blocks compared where replica and disk must match: all of them, but `unverified`. */
  verified: Count,
  differing: Count,
  /** The differing blocks as runs, the first `MAX_VERIFY_RANGES` of them; `rangesOmitted` says how many more. */
  ranges: Schema.Array(BlockRange),
  rangesOmitted: Count,
  /** Comparisons set aside because a write, a resync or a lost link raced them, and done again. */
  rechecked: Count,
  /** Blocks written during every attempt to compare them (a block the guest keeps rewriting): not judged. */
  unverified: Count,
  /** Whether the differing blocks were marked to be sent again. */
  resync: Schema.Boolean,
  seconds: Seconds,
  /** Disk bytes read and hashed per second. */
  bytesPerSecond: Seconds,
  /** The block digest's algorithm (absent from a filter before session 13). */
  algorithm: Schema.optional(DigestAlgorithm)
})
export type VerifyReport = typeof VerifyReport.Type

export const ErrorTag = Schema.Literal("BadRequest", "RequestTooLarge", "Busy", "Failed")
export const ErrorBody = Schema.Struct({ _tag: ErrorTag, message: Schema.String })
export type ErrorBody = typeof ErrorBody.Type

/** The answer to a status request. */
export const StatusReply = Schema.Union(
  Schema.Struct({ status: Report }),
  Schema.Struct({ error: ErrorBody })
)
export type StatusReply = typeof StatusReply.Type

/** Every line an endpoint writes. */
export const Reply = Schema.Union(
  Schema.Struct({ status: Report }),
  Schema.Struct({ progress: VerifyProgress }),
  Schema.Struct({ verify: VerifyReport }),
  Schema.Struct({ error: ErrorBody })
)
export type Reply = typeof Reply.Type

/** `ms` since the epoch as an ISO 8601 string. */
export const iso = (ms: number): string => new Date(ms).toISOString()
/** The age of `then` at `now`, in seconds (never negative), to the millisecond. */
export const ageSeconds = (then: number, now: number): number => Math.max(0, Math.round(now - then)) / 1000

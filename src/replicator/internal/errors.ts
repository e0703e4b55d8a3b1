/**
 * The replicator's errors (re-exported by Replicator.ts): the stages raise them, so
 * they live below the port rather than in it.
 */
import { Cause, Data } from "effect"
import type { DiskError } from "../../adapters/VirtualDisk.js"
import type { JournalError, JournalGeometryMismatch } from "../../adapters/EventJournal.js"
import type * as Geometry from "../../domain/Geometry.js"

/** A guest write the filter refuses before touching the disk. */
export class WriteRejected extends Data.TaggedError("WriteRejected")<{
  readonly offset: number
  readonly length: number
  readonly reason: string
}> {
  override get message() {
    return `write rejected (offset ${this.offset}, length ${this.length}): ${this.reason}`
  }
}

/** The replicator stopped: its journal or its disk failed, or the receiver contradicts the journal. */
export class ReplicatorStopped extends Data.TaggedError("ReplicatorStopped")<{
  readonly reason: string
  readonly cause: unknown
}> {
  override get message() {
    return `the replicator stopped: ${this.reason}`
  }
}

export type ReplicatorError = WriteRejected | ReplicatorStopped | DiskError

const messageOf = (cause: unknown): string | undefined => {
  const error = Cause.isCause(cause) ? Cause.squash(cause) : cause
  return error instanceof Error || (typeof error === "object" && error !== null && "message" in error)
    ? String((error as { message: unknown }).message)
    : undefined
}

/** One line: the reason and, when the cause is an error, its message. */
export const describeStop = (stopped: ReplicatorStopped): string => {
  const detail = messageOf(stopped.cause)
  return detail === undefined || detail === "" ? stopped.reason : `${stopped.reason}: ${detail}`
}

/** The disk in the context has another geometry than `config`: refused at start, before any write. */
export class GeometryMismatch extends Data.TaggedError("GeometryMismatch")<{
  readonly config: Geometry.Geometry
  readonly disk: Geometry.Geometry
}> {
  override get message() {
    return `the disk has ${this.disk.blockCount} blocks of ${this.disk.blockSize} bytes, the config says ${this.config.blockCount} of ${this.config.blockSize}`
  }
}

/**
 * The receiver holds the disk beyond anything this journal ever sent: its log was
 * written by another history of the filter for this disk id (a lost or replaced
 * journal, or a second filter with the same disk id). Nothing is sent: records from
 * this journal would be taken for ones the receiver already has. A cause of
 * `ReplicatorStopped`.
 */
export class ReceiverAheadOfJournal extends Data.TaggedError("ReceiverAheadOfJournal")<{
  readonly diskId: string
  readonly receiverSeq: number
  readonly lastSent: number
}> {
  override get message() {
    return `the receiver holds disk ${JSON.stringify(this.diskId)} up to seq ${this.receiverSeq}, but this journal has sent only up to seq ${this.lastSent}: the receiver's log comes from another journal for this disk id (a lost or replaced journal, or another filter using the same disk id). Nothing was sent. Protect this disk under a new disk id, or move the receiver's log for ${JSON.stringify(this.diskId)} aside (it can still be restored from)`
  }
}

/** Why `make` fails at start: before any guest write was accepted. */
export type StartError = JournalError | JournalGeometryMismatch | GeometryMismatch | ReplicatorStopped

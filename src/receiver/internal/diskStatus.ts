/**
 * The receiver's per-disk state as `cdp-sync status` shows it (the control endpoint,
 * docs/receiver.md "Status"): who is connected, what is durable, the newest recovery
 * point and its age, how much log there is, and the last thing that went wrong.
 */
import { ageSeconds, iso, type ReceiverDisk } from "../../internal/controlProtocol.js"
import type { DiskLog } from "../LogStore.js"

/** Something that went wrong with a disk's connections or log, and when (ms since the epoch). */
export interface DiskNote {
  readonly message: string
  readonly at: number
}

export interface DiskView {
  readonly log: DiskLog
  /** Whether a connection holds the disk, and its peer. */
  readonly peer: string | undefined
  /** The sequencing state says the log is inside a resync. */
  readonly inResync: boolean
  readonly note: DiskNote | undefined
}

/** The newest recovery point of `log`: the last one in its segments, or its base image (seq 0: none yet). */
export const lastRecoveryPoint = (log: DiskLog): { readonly seq: number; readonly time: number } => {
  let point = { seq: log.base.seq, time: log.base.time }
  for (const segment of log.segments)
    if (segment.lastPoint !== undefined && segment.lastPoint.seq > point.seq) point = segment.lastPoint
  return point
}

/** One disk's state at `now` (wall clock, ms since the epoch). */
export const diskStatus = (view: DiskView, now: number): ReceiverDisk => {
  const { log } = view
  const point = lastRecoveryPoint(log)
  let logBytes = 0
  for (const segment of log.segments) logBytes += segment.bytes
  // A failed log outranks whatever happened to a connection.
  const failure = log.failure ?? log.baseDamage
  const note = failure === undefined ? view.note : { message: failure.message, at: now }
  return {
    role: "receiver",
    disk: log.diskId,
    connected: view.peer !== undefined,
    peer: view.peer ?? null,
    durableSeq: log.durable,
    acceptedSeq: log.accepted,
    inResync: view.inResync,
    blockSize: log.geometry.blockSize,
    blockCount: log.geometry.blockCount,
    // Seq 0 is the disk as first created: nothing received is restorable yet.
    lastRecoveryPoint:
      point.seq === 0
        ? null
        : { seq: point.seq, at: iso(point.time), ageSeconds: ageSeconds(point.time, now) },
    logBytes,
    segments: log.segments.length,
    lastError: note === undefined ? null : { message: note.message, at: iso(note.at) }
  }
}

/**
 * What the replicator reports and takes (re-exported by Replicator.ts), and the
 * bookkeeping behind the parts of `Status` the state alone does not say: the drain's
 * progress and rate, the last recovery point the filter knows of, the last error and
 * why it stopped.
 */
import type * as Event from "../../domain/Event.js"
import * as State from "../../domain/State.js"
import type * as Wire from "../../protocol/Wire.js"

/** A recovery point the receiver holds, as the filter learnt it: `at` is when its ack arrived (ms since the epoch). */
export interface KnownRecoveryPoint {
  readonly seq: number
  readonly at: number
}

/** The drain of the current resync. */
export interface DrainProgress {
  /** The most blocks owed at once since this resync began: the drain's whole. */
  readonly peakBlocks: number
  /** Block records sent since this resync began. */
  readonly sentBlocks: number
  /** The share of `peakBlocks` no longer owed, 0 … 1 (guest writes may push it back). */
  readonly progress: number
  /** Block bytes sent per second, over about the last second. */
  readonly bytesPerSecond: number
}

/** Checksum-based resync since this start: blocks compared, proven by a match, and sent after a mismatch. */
export interface ChecksumCounts {
  /** Owed blocks compared with the receiver's checksum instead of sent. */
  readonly compared: number
  /** Of those, the ones the receiver already held: not sent. */
  readonly matched: number
  /** Of those, the ones sent because they differed (or the receiver could not check its copy). */
  readonly sent: number
  /**
   * The digest algorithm the requests ask for now: the `digest` option's, or `"sha256"` once
   * the receiver refused it or answered with another (docs/wire.md, "Checksums").
   */
  readonly algorithm: Wire.DigestAlgorithm
}

/** Something that went wrong without stopping the replicator (a refused connection, a lost link). */
export interface ErrorNote {
  readonly message: string
  /** When, ms since the epoch. */
  readonly at: number
}

/** Why the replicator stopped: `reason` in the filter's words, `detail` the cause's message. */
export interface StopNote {
  readonly reason: string
  readonly detail: string
  /** When, ms since the epoch. */
  readonly at: number
}

export interface Status {
  readonly mode: State.Mode
  readonly link: State.Link
  readonly epoch: number
  readonly nextSeq: number
  readonly watermark: number
  readonly blockSize: number
  /** Blocks the receiver may lack that no unacked record will deliver. */
  readonly dirtyBlocks: number
  /** `dirtyBlocks` in bytes. */
  readonly dirtyBytes: number
  /** Records sent and not acked. */
  readonly inFlight: number
  /** Records the receiver has not acked (the live RPO in records). */
  readonly lagRecords: number
  /** Age of the oldest unacked record in milliseconds (the live RPO in time). */
  readonly lagMillis: number
  readonly quiescent: boolean
  /** In resync: how far the drain is and how fast it goes. */
  readonly drain: DrainProgress | undefined
  /** Checksum-based resync since this start (all 0 without `compareFrom`). */
  readonly checksums: ChecksumCounts
  /** The newest recovery point the filter knows the receiver holds (since this start). */
  readonly lastRecoveryPoint: KnownRecoveryPoint | undefined
  /** The last link loss or failed connection attempt. */
  readonly lastError: ErrorNote | undefined
  /** Set once the replicator stopped: it replicates no more (see `Replicator.stopped`). */
  readonly stopped: StopNote | undefined
}

/** One guest write: `bytes` at `offset`, both sector aligned. */
export interface GuestWrite {
  readonly offset: number
  readonly bytes: Uint8Array
}

/** A drain rate measured over at least this long replaces the previous one. */
const RATE_WINDOW_MS = 1000

/** Seqs `from` … `to` (Infinity: still open) that are recovery points if the receiver holds them. */
interface PointRange {
  readonly from: number
  to: number
}

/**
 * What the decision loop notes after each batch for `Status` (it alone writes it).
 * Recovery points: the receiver marks one at every write it accepts outside a resync
 * and at each resync-end (domain/Receiver). So the records of a sync period — its
 * resync-end marker, then its writes — are points, as far as the receiver holds them:
 * a reconnection (`LinkRestored`) or a gap says where its log ends, and the records
 * after that were never taken (the resync that follows sends blocks instead).
 */
export interface StatusBook {
  /** The sync periods' seqs still able to give a newer point (the open one last). */
  ranges: Array<PointRange>
  lastPoint: KnownRecoveryPoint | undefined
  mode: State.Mode
  /** Seq of the last record decided. */
  lastSeq: number
  peak: number
  sent: number
  windowStart: number
  windowBlocks: number
  /** Blocks per second over the last full window. */
  rate: number
  /** Checksum-based resync since the start. */
  checksums: { compared: number; matched: number; sent: number; algorithm: Wire.DigestAlgorithm }
  /** The mutant (internal/mutants.ts). */
  readonly everyAckAPoint: boolean
}

const OPEN = Number.POSITIVE_INFINITY

export const makeBook = (
  state: State.State,
  now: number,
  digest: Wire.DigestAlgorithm = "sha256",
  everyAckAPoint = false
): StatusBook => ({
  // Started in sync: what this journal sent before is not known to be points; what it sends now is.
  ranges: state.mode === "sync" ? [{ from: state.nextSeq, to: OPEN }] : [],
  lastPoint: undefined,
  mode: state.mode,
  lastSeq: state.nextSeq - 1,
  peak: state.mode === "resync" ? State.obligationCount(state) : 0,
  sent: 0,
  windowStart: now,
  windowBlocks: 0,
  rate: 0,
  checksums: { compared: 0, matched: 0, sent: 0, algorithm: digest },
  everyAckAPoint
})

/** The receiver holds every record through `held`: the newest point among them. */
const notePoint = (book: StatusBook, held: number, now: number): void => {
  let seq = book.everyAckAPoint ? held : 0
  for (const r of book.ranges) if (r.from <= held) seq = Math.max(seq, Math.min(r.to, held))
  if (seq < 1 || seq <= (book.lastPoint?.seq ?? 0)) return
  book.lastPoint = { seq, at: now }
  // A closed period entirely behind the last point can give no newer one.
  book.ranges = book.ranges.filter((r) => r.to > seq)
}

/** The receiver's log ends at `held`: records after it were not taken. */
const cutAt = (book: StatusBook, held: number): void => {
  for (const r of book.ranges) r.to = Math.min(r.to, held)
  book.ranges = book.ranges.filter((r) => r.from <= r.to)
}

/** Notes a decided batch that left the state `after`, at `now`. */
export const noteBatch = (
  book: StatusBook,
  events: ReadonlyArray<Event.Event>,
  after: State.State,
  now: number
): void => {
  // The decider sends a mismatched block at once: the send right after it is checksum resync's.
  let mismatched = false
  for (const e of events) {
    switch (e.type) {
      case "WriteStreamed":
      case "ResyncBegun":
        book.lastSeq = e.seq
        break
      case "BlockSent":
        book.lastSeq = e.seq
        book.sent++
        book.windowBlocks++
        if (mismatched) book.checksums.sent++
        break
      case "BlockCompared":
        book.checksums.compared++
        break
      case "BlockMatched":
        book.checksums.matched++
        break
      case "RunCompared":
        book.checksums.compared += e.blocks.length
        break
      case "RunMatched":
        book.checksums.matched += e.count - e.except.length
        break
      case "SyncActivated":
        // The resync-end marker is the first point of the new sync period.
        book.lastSeq = e.seq
        book.mode = "sync"
        book.ranges.push({ from: e.seq, to: OPEN })
        break
      case "ResyncActivated":
        // The period ends here; what it sent is still a point once acked (congestion keeps it in flight).
        book.mode = "resync"
        for (const r of book.ranges) if (r.to === OPEN) r.to = book.lastSeq
        book.ranges = book.ranges.filter((r) => r.from <= r.to)
        book.peak = 0
        book.sent = 0
        break
      case "LinkRestored":
        cutAt(book, e.receiverSeq)
        // Still in sync: the writes sent from now on continue the period.
        if (book.mode === "sync") book.ranges.push({ from: book.lastSeq + 1, to: OPEN })
        notePoint(book, e.receiverSeq, now)
        break
      case "DiscontinuityReported":
        cutAt(book, e.expected - 1)
        break
      case "Acked":
        notePoint(book, e.seq, now)
        break
    }
    mismatched = e.type === "BlockMismatched"
  }
  if (after.mode === "resync") book.peak = Math.max(book.peak, State.obligationCount(after))
  if (now - book.windowStart >= RATE_WINDOW_MS) {
    book.rate = (book.windowBlocks * 1000) / (now - book.windowStart)
    book.windowStart = now
    book.windowBlocks = 0
  }
}

/** The status of `state` at `now`; `oldestUnackedAt` is the send time of the oldest unacked record. */
export const statusOf = (
  state: State.State,
  book: StatusBook,
  notes: { readonly lastError: ErrorNote | undefined; readonly stopped: StopNote | undefined },
  oldestUnackedAt: number | undefined,
  now: number
): Status => {
  const dirtyBlocks = State.obligationCount(state)
  const blockSize = state.config.blockSize
  // No batch for a while (nothing sent): the last full window would overstate the rate.
  const sinceWindow = now - book.windowStart
  const rate = sinceWindow >= 2 * RATE_WINDOW_MS ? (book.windowBlocks * 1000) / sinceWindow : book.rate
  const peak = Math.max(book.peak, dirtyBlocks)
  return {
    mode: state.mode,
    link: state.link,
    epoch: state.epoch,
    nextSeq: state.nextSeq,
    watermark: state.watermark,
    blockSize,
    dirtyBlocks,
    dirtyBytes: dirtyBlocks * blockSize,
    inFlight: state.flight.size,
    lagRecords: state.nextSeq - 1 - state.watermark,
    lagMillis: oldestUnackedAt === undefined ? 0 : Math.max(0, now - oldestUnackedAt),
    quiescent: State.isQuiescent(state),
    drain:
      state.mode === "resync"
        ? {
            peakBlocks: peak,
            sentBlocks: book.sent,
            progress: peak === 0 ? 1 : (peak - dirtyBlocks) / peak,
            bytesPerSecond: Math.round(rate * blockSize)
          }
        : undefined,
    checksums: { ...book.checksums },
    lastRecoveryPoint: book.lastPoint,
    lastError: notes.lastError,
    stopped: notes.stopped
  }
}

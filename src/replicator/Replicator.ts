/**
 * The replicator: the filter as a running program (design §1, §3). This module is its
 * port — the `Replicator` tag and service, `Options`, `Status`, the errors, the
 * metrics, `make` and `layer`; each stage lives in `internal/` (docs/replicator.md,
 * "Where things live"), and the state the stages share is one record
 * (`internal/shared.ts`).
 *
 * One serialized decision loop owns the state: inputs arrive on an inbox, a batch is
 * decided and folded, and handed to the journal stage, which makes the events of
 * every batch waiting durable with one append (one fsync) and only then acts on them
 * in order — records go to the sender in seq order, block reads start only after
 * their `BlockSent` is durable. The loop decides the next batch while the journal
 * syncs. A guest write returns once the disk has it; it waits for the journal only
 * when too many writes are not yet journaled (`maxPendingWrites`), and never for the
 * network. Closing the replicator journals every write the disk took before it. The
 * link supervisor connects with capped exponential backoff and jitter, turns acks and
 * gaps into inputs, and watches for ack timeouts.
 */
import {
  Cause,
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Fiber,
  FiberId,
  Layer,
  Metric,
  Option,
  Schedule,
  type Scheduler,
  type Scope,
  Stream
} from "effect"
import { ActivityLog } from "../adapters/ActivityLog.js"
import { EventJournal, type JournalError, type JournalGeometryMismatch } from "../adapters/EventJournal.js"
import { type ConnectError, LogReceiver } from "../adapters/LogReceiver.js"
import { type DiskError, SECTOR_SIZE, VirtualDisk } from "../adapters/VirtualDisk.js"
import type { Config } from "../domain/Config.js"
import type * as Event from "../domain/Event.js"
import * as Geometry from "../domain/Geometry.js"
import * as State from "../domain/State.js"
import * as IoScheduler from "../programs/IoScheduler.js"
import * as Activity from "./internal/activity.js"
import { askFor, committer, nextCommit } from "./internal/activityStage.js"
import { decisionLoop } from "./internal/decisionLoop.js"
import { journalStage } from "./internal/journalStage.js"
import { type Mutants, ReplicatorMutants } from "./internal/mutants.js"
import { pump } from "./internal/pump.js"
import * as Recovery from "./internal/recovery.js"
import { sender } from "./internal/sender.js"
import { type Command, makeShared, type Shared, stop } from "./internal/shared.js"
import * as Input from "../domain/Input.js"
import { orStopped } from "./internal/admission.js"
import { type Lease, makeSlabPool } from "../adapters/internal/slab.js"
import { type GateEntry, makeOverlapGate } from "./internal/overlapGate.js"
import { waitWhileHeld } from "./internal/switchover.js"

// ---------------------------------------------------------------------------
// Errors

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

// ---------------------------------------------------------------------------
// The port

/**
 * Whether the previous run closed cleanly is not an option: the journal records it
 * (`EventJournal.beginRun` / `endRun`). A start after a kill, a crash or a power loss
 * is unclean whoever embeds the replicator, and resyncs what the activity log holds,
 * or every block without one.
 */
export interface Options {
  readonly diskId: string
  readonly config: Config
  /** No ack for this long while records are in flight: the link is declared lost. */
  readonly ackTimeout?: Duration.DurationInput | undefined
  /** Backoff between reconnection attempts (default: exponential from 50 ms, capped at 2 s, jittered). */
  readonly reconnect?: Schedule.Schedule<unknown, unknown> | undefined
  /** Optional drain rate limit in bytes per second. */
  readonly drainBytesPerSecond?: number | undefined
  /** Save a state snapshot every N journaled events, so start-up stays fast. */
  readonly snapshotEvery?: number | undefined
  /** Called with every journaled batch, in order (e.g. to write a trace). */
  readonly onEvents?: ((events: ReadonlyArray<Event.Event>) => Effect.Effect<void>) | undefined
  /**
   * Convergence assist (like a migration's switchover): when the drain is nearly done,
   * hold new guest writes for at most this long so the last blocks can be acked and
   * sync can resume under a steady write load. At most one hold per five such periods.
   * 0 turns it off. Default 100 ms.
   */
  readonly switchoverHold?: Duration.DurationInput | undefined
  /**
   * With an `ActivityLog`: extents kept in it, at most, while none of their writes is
   * pending (least recently used ones leave first). A larger log means fewer log commits
   * on the write path and more to resync after a crash. Default 1024.
   */
  readonly activityExtents?: number | undefined
  /**
   * Guest writes on the disk whose events are not yet journaled; a write beyond this
   * waits for the journal (not for the network). Default 1024.
   */
  readonly maxPendingWrites?: number | undefined
  /**
   * Where the replicator's own fibers (decision loop, journal stage, sender, link) run:
   * by default the I/O scheduler (`IoScheduler`), which lets socket and disk callbacks
   * in between batches of work; `"inherit"` keeps the caller's scheduler. Under a
   * `TestClock` the default is `"inherit"`: a test that drives the clock needs the
   * filter's fibers to keep pace with it.
   */
  readonly scheduler?: Scheduler.Scheduler | "inherit" | undefined
}

export interface Status {
  readonly mode: State.Mode
  readonly link: State.Link
  readonly epoch: number
  readonly nextSeq: number
  readonly watermark: number
  /** Blocks the receiver may lack that no unacked record will deliver. */
  readonly dirtyBlocks: number
  /** Records sent and not acked. */
  readonly inFlight: number
  /** Records the receiver has not acked (the live RPO in records). */
  readonly lagRecords: number
  /** Age of the oldest unacked record in milliseconds (the live RPO in time). */
  readonly lagMillis: number
  readonly quiescent: boolean
}

/** One guest write: `bytes` at `offset`, both sector aligned. */
export interface GuestWrite {
  readonly offset: number
  readonly bytes: Uint8Array
}

export class Replicator extends Context.Tag("cdp-sync/Replicator")<Replicator, Replicator.Service>() {}

export declare namespace Replicator {
  interface Service {
    /**
     * Writes `bytes` at `offset` (sector aligned) on the disk and returns once the disk
     * write has completed; the filter then folds it as a completed write and journals
     * it (see `flush`). Fails with `ReplicatorStopped` once the replicator stopped or
     * is closing, before touching the disk.
     */
    readonly write: (offset: number, bytes: Uint8Array) => Effect.Effect<void, ReplicatorError>
    /**
     * `write` for a batch, such as the requests a guest queue hands over at once: each is
     * applied and folded as `write` would, in array order (overlapping writes complete in
     * that order), and the batch costs one trip through the filter rather than one per
     * write. Every write is checked before any touches the disk: one `WriteRejected` and
     * nothing is written. If the disk fails a write, the writes before it are on the disk
     * and folded, the ones after it are not attempted, and the batch fails with that error.
     */
    readonly writeAll: (writes: ReadonlyArray<GuestWrite>) => Effect.Effect<void, ReplicatorError>
    /** Waits until every write that returned before it is folded and its event durable in the journal. */
    readonly flush: Effect.Effect<void, ReplicatorStopped>
    readonly state: Effect.Effect<State.State>
    readonly status: Effect.Effect<Status>
    /** Status after every decided batch. */
    readonly changes: Stream.Stream<Status>
    /** Waits until every earlier write is folded and the filter is in sync, the link up and nothing in flight. */
    readonly quiesce: Effect.Effect<void, ReplicatorStopped>
    /** Declares the link lost (as an ack timeout would); the supervisor reconnects. */
    readonly dropLink: (reason: string) => Effect.Effect<void>
    /**
     * Waits while the replicator runs; once it stops, fails with why (its `cause` is the
     * typed error: the journal's or the disk's, `ReceiverRefused` for a refusal no retry
     * can heal, `ReceiverAheadOfJournal`, …). Race it with work that should end then.
     */
    readonly stopped: Effect.Effect<never, ReplicatorStopped>
  }
}

// ---------------------------------------------------------------------------
// Metrics

export const metrics = {
  mode: Metric.gauge("cdp_sync_mode", { description: "0 sync, 1 resync" }),
  epoch: Metric.gauge("cdp_sync_epoch", { description: "resync activations" }),
  dirtyBlocks: Metric.gauge("cdp_sync_dirty_blocks", { description: "blocks owed to the receiver" }),
  drainSent: Metric.counter("cdp_sync_drain_blocks_sent", { description: "block records sent" }),
  lagRecords: Metric.gauge("cdp_sync_lag_records", { description: "records not yet acked" }),
  lagSeconds: Metric.gauge("cdp_sync_lag_seconds", { description: "age of the oldest unacked record" }),
  bytesWritten: Metric.counter("cdp_sync_guest_bytes", { description: "guest bytes written" }),
  bytesSent: Metric.counter("cdp_sync_bytes_sent", { description: "record payload bytes sent" }),
  activeExtents: Metric.gauge("cdp_sync_active_extents", {
    description: "extents the activity log holds: what an unclean start would resync"
  }),
  /** A guest write to an extent not in the activity log waits for one such commit. */
  activityCommit: Metric.timerWithBoundaries(
    "cdp_sync_activity_commit",
    [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    "one transaction of the activity log (write and fdatasync), in milliseconds"
  ),
  /** Live records wait for their events' commit before they are sent: its latency is theirs. */
  journalCommit: Metric.timerWithBoundaries(
    "cdp_sync_journal_commit",
    [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    "one group commit of the filter's journal (append and fsync), in milliseconds"
  )
}

// ---------------------------------------------------------------------------
// linkSupervisor (to be moved to internal/linkSupervisor.ts)
/**
 * The link supervisor: while the model says the link is down, it connects (capped
 * exponential backoff with jitter), hands the connection to the loop, turns acks and
 * gaps into inputs, and watches for an ack timeout. A refusal no retry can heal stops
 * the replicator.
 */
interface LinkSettings {
  readonly diskId: string
  readonly config: Config
  /** No ack for this long while records are in flight: the link is declared lost. */
  readonly ackTimeout: Duration.Duration
  readonly reconnect: Schedule.Schedule<unknown, unknown>
}

/** Until the model says the link is down. */
const linkDown = (shared: Shared): Effect.Effect<void> =>
  shared.stateRef.changes.pipe(
    Stream.filter((s) => s.link === "down"),
    Stream.take(1),
    Stream.runDrain
  )

/** One connection, from the handshake until it is lost, times out, or the loop lets it go; says why it ended. */
const runConnection = (shared: Shared, receiver: LogReceiver.Service, settings: LinkSettings) =>
  Effect.scoped(
    Effect.gen(function* () {
      const conn = yield* receiver.connect({
        diskId: settings.diskId,
        blockSize: settings.config.blockSize,
        blockCount: settings.config.blockCount,
        watermark: shared.state.watermark
      })
      const adopted = Deferred.unsafeMake<number | undefined>(FiberId.none)
      shared.inbox.offer({ _tag: "Connected", connection: conn, adopted })
      // The loop answers every handshake it takes. Not raced with anything: a loop that
      // stopped takes the supervisor down with it, and a race set up just as an
      // interruption arrives can miss it (closing once waited out a 5 s timeout here).
      const myLink = yield* Deferred.await(adopted)
      if (myLink === undefined) return "handshake-not-adopted"
      // Acks are cumulative: of a run of acks read together only the last is news.
      const messages = conn.messages.pipe(
        Stream.runForEachChunk((chunk) => {
          const commands: Array<Command> = []
          let ack: number | undefined
          for (const m of chunk) {
            if (m._tag === "Ack") {
              ack = m.seq
              continue
            }
            if (ack !== undefined)
              commands.push({ _tag: "Message", link: myLink, input: Input.ackReceived(ack) })
            ack = undefined
            commands.push({ _tag: "Message", link: myLink, input: Input.gapReceived(m.expected) })
          }
          if (ack !== undefined)
            commands.push({ _tag: "Message", link: myLink, input: Input.ackReceived(ack) })
          return Effect.sync(() => shared.inbox.offerAll(commands))
        }),
        Effect.as("connection-lost"),
        Effect.catchAll(() => Effect.succeed("connection-lost"))
      )
      const timeout = Duration.toMillis(settings.ackTimeout)
      const watchdog = Effect.gen(function* () {
        for (;;) {
          yield* Effect.sleep(Duration.millis(Math.max(10, timeout / 4)))
          if (shared.link !== myLink) return "superseded"
          const now = yield* Clock.currentTimeMillis
          if (shared.state.flight.size > 0 && now - shared.lastProgress > timeout) return "ack-timeout"
        }
      })
      const closedByFilter = shared.connectionRef.changes.pipe(
        Stream.filter((c) => c?.link !== myLink),
        Stream.take(1),
        Stream.runDrain,
        Effect.as("closed-by-filter")
      )
      const reason = yield* Effect.raceAll([messages, watchdog, closedByFilter])
      shared.inbox.offer({ _tag: "Disconnected", reason, link: myLink })
      return reason
    })
  )

/** A refusal no retry can heal stops the replicator; any other is retried, and said at WARN. */
const onConnectError = (e: ConnectError) =>
  e._tag === "ReceiverRefused"
    ? e.permanent
      ? Effect.void
      : Effect.logWarning(`the receiver refused the connection (${e.reason}), retrying: ${e.detail}`)
    : Effect.logDebug(`connect failed: ${e.message}`)

const linkSupervisor = (
  shared: Shared,
  receiver: LogReceiver.Service,
  settings: LinkSettings
): Effect.Effect<void> =>
  Effect.gen(function* () {
    for (;;) {
      // Connect only while the model says the link is down.
      yield* linkDown(shared)
      yield* runConnection(shared, receiver, settings).pipe(
        Effect.tapError(onConnectError),
        Effect.retry({
          schedule: settings.reconnect,
          while: (e) => !(e._tag === "ReceiverRefused" && e.permanent)
        }),
        Effect.catchAll((e) =>
          e._tag === "ReceiverRefused" && e.permanent
            ? stop(shared, "the receiver refuses this disk", e)
            : Effect.logWarning("giving up a connection attempt", e)
        )
      )
      // Wait for the loop to hear of the loss before connecting again.
      yield* linkDown(shared)
    }
  }).pipe(
    // A stopped replicator connects no more (a refusal would only be met again).
    (connecting) => orStopped(connecting, shared.stopped),
    Effect.ignore
  )

// ---------------------------------------------------------------------------
// writePath (to be moved to internal/writePath.ts)
/**
 * The write path, run on the caller's fiber: a guest write is checked, copied, admitted
 * (a pending-write slot, no overlap with a write in progress, its extents in the
 * activity log, no switchover hold), written to the disk, and queued for the loop as a
 * completed write. It returns once the disk has it, and never waits for the network.
 */
/** A checked guest write with its own copy of the data, the blocks and the extents it spans. */
interface Admissible {
  readonly offset: number
  readonly data: Lease
  readonly first: number
  readonly last: number
  readonly firstExtent: number
  readonly lastExtent: number
}

/** A waiting write's reservation in the activity log, kept across its retries. */
interface Hold {
  reservation: Activity.Reservation | undefined
}

interface WritePath {
  readonly write: (offset: number, bytes: Uint8Array) => Effect.Effect<void, ReplicatorError>
  readonly writeAll: (writes: ReadonlyArray<GuestWrite>) => Effect.Effect<void, ReplicatorError>
}

const makeWritePath = (
  shared: Shared,
  disk: VirtualDisk.Service,
  config: Config,
  mutants: Pick<Mutants, "skipOverlapGate" | "releaseCopiesEarly" | "skipActivityWait">
): WritePath => {
  const { pendingWrites, activity } = shared
  const extentBytes = activity?.extentBytes ?? 0
  // Writes in progress, by block: an overlapping write waits, so the disk and the loop see one order.
  const gate = makeOverlapGate()
  // Copies of guest data: recycled once the connection has written them, so large
  // writes stop turning over fresh memory (at 64 KiB the copies and the collections
  // they set off were a fifth of the filter's CPU).
  const copies = makeSlabPool({ slabBytes: 1 << 20, largest: 1 << 17, keep: 32 })
  const closed = new ReplicatorStopped({ reason: "the replicator is closing", cause: undefined })

  const check = (offset: number, bytes: Uint8Array): Admissible | WriteRejected => {
    const length = bytes.length
    const invalid = Geometry.validateRange(config, offset, length)
    if (invalid !== undefined) return new WriteRejected({ offset, length, reason: invalid.reason })
    if (offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0)
      return new WriteRejected({ offset, length, reason: `not aligned to ${SECTOR_SIZE}-byte sectors` })
    return {
      offset,
      // The data streamed live must be what was written, even if the caller reuses its buffer.
      data: copies.copy(bytes),
      first: Geometry.firstBlock(config, offset),
      last: Geometry.lastBlock(config, offset, length),
      firstExtent: extentBytes === 0 ? 0 : Math.floor(offset / extentBytes),
      lastExtent: extentBytes === 0 ? 0 : Math.floor((offset + length - 1) / extentBytes)
    }
  }

  /**
   * Runs uninterruptibly, waits excepted: once a disk write starts it must be folded,
   * and an interruption in between would leave data on the disk that no event accounts
   * for. Admits the longest run from `from` that has pending slots and overlaps no write
   * in progress (its own included), writes it, and goes on with the rest. Checks are
   * synchronous: the filter's own cost per guest write must stay small beside a 4 KiB
   * disk write.
   */
  const admitFrom = (
    writes: ReadonlyArray<Admissible>,
    from: number,
    hold: Hold | undefined
  ): Effect.Effect<void, ReplicatorError> =>
    Effect.suspend(() => {
      // A stopped replicator folds nothing: refuse before the disk is touched.
      if (shared.hasStopped) return Deferred.await(shared.stopped)
      if (shared.held)
        return Effect.zipRight(Effect.interruptible(waitWhileHeld(shared)), admitFrom(writes, from, hold))
      if (pendingWrites.isClosing()) return Effect.fail(closed)
      const slots = pendingWrites.free()
      if (slots === 0) return Effect.zipRight(pendingWrites.waitForChange(), admitFrom(writes, from, hold))
      const entries: Array<GateEntry> = []
      let to = from
      for (; to < writes.length && to - from < slots; to++) {
        const w = writes[to]!
        const blocker = mutants.skipOverlapGate ? undefined : gate.blockerOf(w.first, w.last)
        if (blocker !== undefined) {
          if (to > from) break
          return Effect.zipRight(Effect.interruptible(gate.waitFor(blocker)), admitFrom(writes, from, hold))
        }
        if (activity !== undefined) {
          const tracker = activity.tracker
          if (!tracker.tryEnter(w.firstExtent, w.lastExtent)) {
            if (mutants.skipActivityWait) askFor(activity, w.firstExtent, w.lastExtent)
            else {
              if (to > from) break
              // The write that waits reserves its extents, so no commit retires one it
              // needs while bringing in another; the rest of the batch only asks (one
              // commit for a guest queue).
              hold!.reservation ??= tracker.reserve(w.firstExtent, w.lastExtent)
              for (let k = from + 1; k < writes.length; k++)
                tracker.request(writes[k]!.firstExtent, writes[k]!.lastExtent)
              activity.signal.offer(undefined)
              return Effect.zipRight(nextCommit(shared, activity), admitFrom(writes, from, hold))
            }
          } else if (to === from && hold!.reservation !== undefined) {
            // Entered: its pending count keeps the extents in the log from now on.
            hold!.reservation.release()
            hold!.reservation = undefined
          }
        }
        entries.push(gate.enter(w.first, w.last))
      }
      pendingWrites.take(to - from)
      const written = writeRun(writes, entries, from, from, to)
      return to === writes.length ? written : Effect.zipRight(written, admitFrom(writes, to, hold))
    })

  /** Runs a batch from its start; with an activity log, whatever ends it releases the reservation of a write still waiting. */
  const admit = (writes: ReadonlyArray<Admissible>): Effect.Effect<void, ReplicatorError> => {
    if (activity === undefined) return Effect.uninterruptible(admitFrom(writes, 0, undefined))
    const hold: Hold = { reservation: undefined }
    return Effect.ensuring(
      Effect.uninterruptible(admitFrom(writes, 0, hold)),
      Effect.sync(() => hold.reservation?.release())
    )
  }

  /** Writes `writes[i, to)` in order, each queued for the loop once the disk has it. */
  const writeRun = (
    writes: ReadonlyArray<Admissible>,
    entries: ReadonlyArray<GateEntry>,
    from: number,
    i: number,
    to: number
  ): Effect.Effect<void, DiskError> => {
    const w = writes[i]!
    return Effect.matchCauseEffect(disk.write(w.offset, w.data.bytes), {
      onFailure: (cause) => {
        for (let k = i - from; k < entries.length; k++) {
          gate.leave(entries[k]!)
          writes[from + k]!.data.release()
          // The failed write keeps its extents in the activity log: what reached the disk is unknown.
          const w = writes[from + k]!
          if (activity !== undefined && k > i - from) activity.tracker.leave(w.firstExtent, w.lastExtent)
        }
        pendingWrites.release(to - i)
        return Effect.failCause(cause)
      },
      onSuccess: () => {
        if (mutants.releaseCopiesEarly) w.data.release()
        const input = Input.writeCompleted(w.offset, w.data.bytes.length)
        shared.inbox.offer({ _tag: "Input", input, data: w.data })
        // Queued before the gate opens, so an overlapping write completes after it.
        gate.leave(entries[i - from]!)
        return i + 1 === to ? Effect.void : writeRun(writes, entries, from, i + 1, to)
      }
    })
  }

  return {
    write: (offset, bytes) =>
      Effect.suspend(() => {
        const checked = check(offset, bytes)
        if (checked instanceof WriteRejected) return Effect.fail(checked)
        return admit([checked])
      }),
    writeAll: (writes) =>
      Effect.suspend(() => {
        const checked: Array<Admissible> = []
        for (const w of writes) {
          const c = check(w.offset, w.bytes)
          if (c instanceof WriteRejected) {
            for (const earlier of checked) earlier.data.release()
            return Effect.fail(c)
          }
          checked.push(c)
        }
        return checked.length === 0 ? Effect.void : admit(checked)
      })
  }
}

// ---------------------------------------------------------------------------
// lifecycle (to be moved to internal/lifecycle.ts)
/**
 * Flush, quiesce and close: the waits a caller runs on its own fiber, and the finalizer
 * that closes the replicator with its scope.
 */
/** Waits until every write that returned before it is folded and its event durable in the journal. */
const flush = (shared: Shared): Effect.Effect<void, ReplicatorStopped> =>
  Effect.gen(function* () {
    const done = yield* Deferred.make<void>()
    shared.inbox.offer({ _tag: "Barrier", done })
    yield* orStopped(Deferred.await(done), shared.stopped)
  })

/**
 * Waits until every earlier write is folded and the filter is in sync, the link up and
 * nothing in flight. The state is published when decided; the second flush makes the
 * quiescent state durable.
 */
const quiesce = (shared: Shared): Effect.Effect<void, ReplicatorStopped> =>
  flush(shared).pipe(
    Effect.zipRight(
      orStopped(
        shared.stateRef.changes.pipe(
          Stream.filter((s) => State.isQuiescent(s)),
          Stream.take(1),
          Stream.runDrain
        ),
        shared.stopped
      )
    ),
    Effect.zipRight(flush(shared))
  )

/**
 * Closes the replicator (its scope's finalizer). Runs before the fibers are interrupted:
 * every write the disk took, and every event decided, gets journaled. Then the fibers
 * stop, so nothing is decided after, and the journal records the clean close; a stopped
 * replicator (or a killed one) leaves the run open, and the next start unclean.
 */
const close = (
  shared: Shared,
  journal: EventJournal.Service,
  running: Fiber.Fiber<unknown, unknown>,
  mutants: { readonly skipDrainOnClose: boolean }
): Effect.Effect<void> =>
  Effect.gen(function* () {
    if (!mutants.skipDrainOnClose) yield* shared.pendingWrites.close.pipe(Effect.zipRight(flush(shared)))
    yield* Fiber.interrupt(running)
    if (shared.hasStopped) return
    yield* journal.endRun.pipe(
      Effect.catchAll((e) =>
        Effect.logWarning(
          `the journal could not record the clean close; the next start resyncs: ${e.message}`
        )
      )
    )
  }).pipe(Effect.ignore)

// ---------------------------------------------------------------------------
// Construction: the stages, wired to one shared record

/** The disk's byte ranges under `extents` (ascending), adjacent ones merged, clipped to the disk. */
export const extentRanges: (
  extents: ReadonlyArray<number>,
  extentBytes: number,
  diskBytes: number
) => Array<{ readonly offset: number; readonly length: number }> = Recovery.extentRanges

export const make = (
  options: Options
): Effect.Effect<Replicator.Service, StartError, VirtualDisk | EventJournal | LogReceiver | Scope.Scope> =>
  Effect.gen(function* () {
    const disk = yield* VirtualDisk
    const journal = yield* EventJournal
    const receiver = yield* LogReceiver
    const activityLog = Option.getOrUndefined(yield* Effect.serviceOption(ActivityLog))
    // Off unless a test provides them (see internal/mutants.ts).
    const mutants = yield* ReplicatorMutants
    const { config, diskId } = options

    // The disk, the journal and the config must describe one disk before anything is read or written.
    if (disk.geometry.blockSize !== config.blockSize || disk.geometry.blockCount !== config.blockCount)
      return yield* new GeometryMismatch({
        config: { blockSize: config.blockSize, blockCount: config.blockCount },
        disk: { blockSize: disk.geometry.blockSize, blockCount: disk.geometry.blockCount }
      })
    // Marks the run open, durably, before any guest write: a run that never closes
    // cleanly leaves the next start unclean, whoever embeds the replicator.
    const lastRun = yield* journal.beginRun({
      blockSize: config.blockSize,
      blockCount: config.blockCount,
      initial: config.initial
    })

    const shared = yield* makeShared({
      state: yield* Recovery.recover(journal, config),
      position: yield* journal.position,
      maxPendingWrites: options.maxPendingWrites ?? 1024,
      activity:
        activityLog === undefined
          ? undefined
          : {
              extentBytes: activityLog.extentBytes,
              tracker: Activity.make({
                capacity: options.activityExtents ?? 1024,
                recovered: yield* activityLog.active,
                unsafeRetireBusy: mutants.retireBusyExtents
              })
            }
    })
    yield* Recovery.startUp(shared, {
      journal,
      config,
      lastRun,
      activityLog,
      onEvents: options.onEvents,
      assumeCleanStart: mutants.assumeCleanStart
    })

    const fibers = [
      decisionLoop(shared, {
        diskId,
        config,
        holdMillis: Duration.toMillis(Duration.decode(options.switchoverHold ?? "100 millis"))
      }),
      journalStage(shared, journal, disk, {
        config,
        snapshotEvery: options.snapshotEvery ?? 10_000,
        onEvents: options.onEvents
      }),
      sender(shared),
      pump(shared, { config, drainBytesPerSecond: options.drainBytesPerSecond }),
      linkSupervisor(shared, receiver, {
        diskId,
        config,
        ackTimeout: Duration.decode(options.ackTimeout ?? "5 seconds"),
        reconnect:
          options.reconnect ??
          Schedule.exponential("50 millis", 2).pipe(
            Schedule.union(Schedule.spaced("2 seconds")),
            Schedule.jittered
          )
      }),
      committer(shared, activityLog)
    ]
    const runtime = Effect.all(fibers, { concurrency: "unbounded", discard: true }).pipe(
      Effect.catchAllCause((cause) => stop(shared, "a replicator fiber failed", cause))
    )
    const running = yield* Effect.forkScoped(IoScheduler.runOn(options.scheduler, runtime))
    yield* Effect.addFinalizer(() => close(shared, journal, running, mutants))

    const { write, writeAll } = makeWritePath(shared, disk, config, mutants)
    return {
      write,
      writeAll,
      flush: flush(shared),
      state: shared.stateRef.get,
      status: shared.statusRef.get,
      changes: shared.statusRef.changes,
      quiesce: quiesce(shared),
      dropLink: (reason) =>
        Effect.sync(() => {
          shared.inbox.offer({ _tag: "Disconnected", reason, link: shared.link })
        }),
      stopped: Effect.flatMap(Deferred.await(shared.stopped), () => Effect.never)
    } satisfies Replicator.Service
  })

export const layer = (
  options: Options
): Layer.Layer<Replicator, StartError, VirtualDisk | EventJournal | LogReceiver> =>
  Layer.scoped(Replicator, make(options))

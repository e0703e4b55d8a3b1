/**
 * The replicator: the filter as a running program (design §1, §3).
 *
 * One serialized decision loop owns the state: inputs arrive on a queue, a batch
 * is decided and folded, and handed to the journal stage, which makes the events
 * of every batch waiting durable with one append (one fsync) and only then acts on
 * them in order — records go to the sender in seq order, block reads start only
 * after their `BlockSent` is durable. The loop decides the next batch while the
 * journal syncs. A guest write returns once the disk has it; it waits for the
 * journal only when too many writes are not yet journaled (`maxPendingWrites`),
 * and never for the network. Closing the replicator journals every write the
 * disk took before it. The link supervisor connects with capped exponential
 * backoff and jitter, turns acks and gaps into inputs, and watches for ack timeouts.
 */
import {
  Cause,
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  FiberId,
  Layer,
  Metric,
  Option,
  Queue,
  Schedule,
  type Scheduler,
  type Scope,
  Stream,
  SubscriptionRef
} from "effect"
import { ActivityLog } from "../adapters/ActivityLog.js"
import { EventJournal } from "../adapters/EventJournal.js"
import type { JournalError } from "../adapters/internal/journal.js"
import type { JournalGeometryMismatch, LastRun } from "../adapters/internal/journalRun.js"
import type { ConnectError } from "../adapters/internal/receiverErrors.js"
import * as Inbox from "../adapters/internal/inbox.js"
import { type Lease, makeSlabPool } from "../adapters/internal/slab.js"
import { type Connection, LogReceiver } from "../adapters/LogReceiver.js"
import { type DiskError, SECTOR_SIZE, VirtualDisk } from "../adapters/VirtualDisk.js"
import type * as Wire from "../adapters/Wire.js"
import type { Config } from "../domain/Config.js"
import * as Decider from "../domain/Decider.js"
import type * as Event from "../domain/Event.js"
import * as Geometry from "../domain/Geometry.js"
import * as Input from "../domain/Input.js"
import * as State from "../domain/State.js"
import * as Activity from "./internal/activity.js"
import { makeAdmission, makeChanges, orStopped } from "./internal/admission.js"
import { ReplicatorMutants } from "./internal/mutants.js"
import { type GateEntry, makeOverlapGate } from "./internal/overlapGate.js"
import * as IoScheduler from "../programs/IoScheduler.js"

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
  readonly ackTimeout?: Duration.DurationInput
  /** Backoff between reconnection attempts (default: exponential from 50 ms, capped at 2 s, jittered). */
  readonly reconnect?: Schedule.Schedule<unknown, unknown>
  /** Optional drain rate limit in bytes per second. */
  readonly drainBytesPerSecond?: number
  /** Save a state snapshot every N journaled events, so start-up stays fast. */
  readonly snapshotEvery?: number
  /** Called with every journaled batch, in order (e.g. to write a trace). */
  readonly onEvents?: (events: ReadonlyArray<Event.Event>) => Effect.Effect<void>
  /**
   * Convergence assist (like a migration's switchover): when the drain is nearly done,
   * hold new guest writes for at most this long so the last blocks can be acked and
   * sync can resume under a steady write load. At most one hold per five such periods.
   * 0 turns it off. Default 100 ms.
   */
  readonly switchoverHold?: Duration.DurationInput
  /**
   * With an `ActivityLog`: extents kept in it, at most, while none of their writes is
   * pending (least recently used ones leave first). A larger log means fewer log commits
   * on the write path and more to resync after a crash. Default 1024.
   */
  readonly activityExtents?: number
  /**
   * Guest writes on the disk whose events are not yet journaled; a write beyond this
   * waits for the journal (not for the network). Default 1024.
   */
  readonly maxPendingWrites?: number
  /**
   * Where the replicator's own fibers (decision loop, journal stage, sender, link) run:
   * by default the I/O scheduler (`IoScheduler`), which lets socket and disk callbacks
   * in between batches of work; `"inherit"` keeps the caller's scheduler. Under a
   * `TestClock` the default is `"inherit"`: a test that drives the clock needs the
   * filter's fibers to keep pace with it.
   */
  readonly scheduler?: Scheduler.Scheduler | "inherit"
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
// Implementation

type Command =
  /** A guest write (with its data) or a pump tick. */
  | { readonly _tag: "Input"; readonly input: Input.Input; readonly data?: Lease }
  /** Completed once everything queued before it is journaled. */
  | { readonly _tag: "Barrier"; readonly done: Deferred.Deferred<void> }
  /** `adopted` gets the link number the loop gave the connection, or `undefined` if it did not adopt it. */
  | {
      readonly _tag: "Connected"
      readonly connection: Connection
      readonly adopted: Deferred.Deferred<number | undefined>
    }
  /** `link` names the connection a message came from, so stale ones are dropped. */
  | { readonly _tag: "Message"; readonly input: Input.Input; readonly link: number }
  | { readonly _tag: "Disconnected"; readonly reason: string; readonly link: number }

/** A decided batch on its way to the journal: acted on only once its events are durable. */
interface Decision {
  readonly events: ReadonlyArray<Event.Event>
  readonly outgoing: ReadonlyArray<Decided>
  readonly barriers: ReadonlyArray<Deferred.Deferred<void>>
  /** Guest writes folded in this batch (their pending slots are freed once journaled). */
  readonly writes: number
  /** With an activity log: the extents of those writes, as `[first, last]` pairs. */
  readonly extents: ReadonlyArray<number> | undefined
  /** The state after the batch, for snapshots. */
  readonly after: State.State
}

/** A record bound for the wire: ready, or a block read started after its event was journaled. */
interface Outgoing {
  readonly session: number
  readonly seq: number
  readonly record: Wire.Record | undefined
  readonly read: Effect.Effect<Wire.Record, DiskError> | undefined
  /** Hands a guest-data copy back to the pool once the connection no longer reads it. */
  readonly release: (() => void) | undefined
}

/** What an event puts on the wire: a record, or a block to read once the batch is journaled. */
type Decided =
  | { readonly session: number; readonly record: Wire.Record; readonly release?: (() => void) | undefined }
  | { readonly session: number; readonly seq: number; readonly block: number; readonly epoch: number }

/** Consecutive drained blocks read with one disk request, at most. */
const READ_RUN = 16

/** The disk's byte ranges under `extents` (ascending), adjacent ones merged, clipped to the disk. */
export const extentRanges = (
  extents: ReadonlyArray<number>,
  extentBytes: number,
  diskBytes: number
): Array<{ readonly offset: number; readonly length: number }> => {
  const ranges: Array<{ offset: number; length: number }> = []
  for (const e of extents) {
    const offset = e * extentBytes
    if (offset >= diskBytes) break
    const length = Math.min(extentBytes, diskBytes - offset)
    const last = ranges.at(-1)
    if (last !== undefined && last.offset + last.length === offset) last.length += length
    else ranges.push({ offset, length })
  }
  return ranges
}

const statusOf = (state: State.State, oldestUnackedAt: number | undefined, now: number): Status => ({
  mode: state.mode,
  link: state.link,
  epoch: state.epoch,
  nextSeq: state.nextSeq,
  watermark: state.watermark,
  dirtyBlocks: State.obligationCount(state),
  inFlight: state.flight.size,
  lagRecords: state.nextSeq - 1 - state.watermark,
  lagMillis: oldestUnackedAt === undefined ? 0 : now - oldestUnackedAt,
  quiescent: State.isQuiescent(state)
})

/** Rebuilds the state: the latest snapshot, then the journal after it. */
const recover = (journal: EventJournal.Service, config: Config) =>
  Effect.gen(function* () {
    const saved = yield* journal.loadSnapshot
    let state = Option.match(saved, {
      onNone: () => State.initial(config),
      onSome: (s) => State.fromSnapshot(s.snapshot)
    })
    const from = Option.match(saved, { onNone: () => 0, onSome: (s) => s.position })
    yield* journal.read(from).pipe(
      Stream.runForEach((entry) =>
        Effect.sync(() => {
          state = Decider.evolve(state, entry.event)
        })
      )
    )
    return state
  })

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
    const config = options.config
    const ackTimeout = Duration.decode(options.ackTimeout ?? "5 seconds")
    const reconnect =
      options.reconnect ??
      Schedule.exponential("50 millis", 2).pipe(
        Schedule.union(Schedule.spaced("2 seconds")),
        Schedule.jittered
      )
    const snapshotEvery = options.snapshotEvery ?? 10_000
    const holdMillis = Duration.toMillis(Duration.decode(options.switchoverHold ?? "100 millis"))

    // The disk, the journal and the config must describe one disk before anything is read or written.
    if (disk.geometry.blockSize !== config.blockSize || disk.geometry.blockCount !== config.blockCount)
      return yield* new GeometryMismatch({
        config: { blockSize: config.blockSize, blockCount: config.blockCount },
        disk: { blockSize: disk.geometry.blockSize, blockCount: disk.geometry.blockCount }
      })
    // Marks the run open, durably, before any guest write: a run that never closes
    // cleanly leaves the next start unclean, whoever embeds the replicator.
    const lastRun: LastRun = yield* journal.beginRun({
      blockSize: config.blockSize,
      blockCount: config.blockCount,
      initial: config.initial
    })

    let state = yield* recover(journal, config)
    let position = yield* journal.position
    let sinceSnapshot = 0
    const stateRef = yield* SubscriptionRef.make(state)
    const statusRef = yield* SubscriptionRef.make(statusOf(state, undefined, yield* Clock.currentTimeMillis))
    // Inboxes, not Queues: a batch is taken as the array it was offered into, where a
    // Queue's take built a chunk node per element (a quarter of the filter's garbage).
    const inbox = Inbox.make<Command>()
    const outbox = Inbox.make<Outgoing>()
    const stopped = yield* Deferred.make<void, ReplicatorStopped>()
    const pendingWrites = makeAdmission(options.maxPendingWrites ?? 1024, stopped)
    const gate = makeOverlapGate()
    const skipGate = mutants.skipOverlapGate
    // Copies of guest data: recycled once the connection has written them, so large
    // writes stop turning over fresh memory (at 64 KiB the copies and the collections
    // they set off were a fifth of the filter's CPU).
    const copies = makeSlabPool({ slabBytes: 1 << 20, largest: 1 << 17, keep: 32 })
    const releaseEarly = mutants.releaseCopiesEarly
    // While true, new guest writes wait (the switchover hold).
    const writesHeld = yield* SubscriptionRef.make(false)
    // Mirrors `writesHeld` for the write path's synchronous check.
    let held = false
    const setHeld = (value: boolean) =>
      Effect.suspend(() => {
        held = value
        return SubscriptionRef.set(writesHeld, value)
      })
    let holdId = 0
    let lastHoldAt = Number.NEGATIVE_INFINITY

    // `session` changes whenever the link is lost, shows a gap, or is restored: records
    // decided in an older session are not sent. `link` numbers adopted connections.
    let session = 0
    let link = 0
    let connection: Connection | undefined
    const connectionRef = yield* SubscriptionRef.make<
      { readonly link: number; readonly conn: Connection } | undefined
    >(undefined)
    let pumpPending = false
    // Send time of each unacked record, for the lag in seconds.
    const sentAt = new Map<number, number>()
    let lastProgress = yield* Clock.currentTimeMillis

    // Mirrors `stopped` for the write path's synchronous check.
    let hasStopped = false
    /** Stops once, with the first reason; the log line says why, the full cause is at debug level. */
    const stop = (reason: string, cause: unknown) =>
      Effect.suspend(() => {
        if (hasStopped) return Effect.logDebug(`replicator already stopped; also: ${reason}`, cause)
        hasStopped = true
        const error = new ReplicatorStopped({ reason, cause })
        return Effect.logError(`replicator stopping: ${describeStop(error)}`).pipe(
          Effect.zipRight(Effect.logDebug("replicator stop cause", cause)),
          Effect.zipRight(Deferred.fail(stopped, error))
        )
      })

    // --- the activity log: a guest write reaches the disk only in an extent it holds ----
    const extentBytes = activityLog?.extentBytes ?? 0
    const activity =
      activityLog === undefined
        ? undefined
        : Activity.make({
            capacity: options.activityExtents ?? 1024,
            recovered: yield* activityLog.active,
            unsafeRetireBusy: mutants.retireBusyExtents
          })
    const skipActivityWait = mutants.skipActivityWait
    const activitySignal = Inbox.make<void>()
    const activityCommits = makeChanges()
    /**
     * Until the commit after this call lands (see `makeChanges`): one landing before the
     * wait starts holds the extents asked for, and waiting for the one after it could
     * wait for ever.
     */
    const nextActivityCommit = (): Effect.Effect<void, ReplicatorStopped> =>
      Effect.interruptible(orStopped(activityCommits.next(), stopped))
    const askForExtents = (first: number, last: number): void => {
      activity!.request(first, last)
      activitySignal.offer(undefined)
    }
    /** Commits what writes ask for, one transaction at a time; asks that arrive meanwhile share the next. */
    const activityCommitter =
      activityLog === undefined || activity === undefined
        ? Effect.void
        : Effect.gen(function* () {
            yield* Metric.set(metrics.activeExtents, activity.size())
            for (;;) {
              yield* activitySignal.takeAll
              const transaction = activity.nextTransaction()
              if (transaction === undefined) continue
              yield* activityLog.commit(transaction.activate, transaction.retire).pipe(
                Metric.trackDuration(metrics.activityCommit),
                Effect.tapError((e) => stop("the activity log failed", e)),
                Effect.orDie
              )
              activity.committed(transaction)
              activityCommits.fire()
              // A retiring extent asked for again comes back in the next transaction.
              if (activity.hasWanted()) activitySignal.offer(undefined)
              yield* Metric.set(metrics.activeExtents, activity.size())
            }
          })

    const recordOf = (
      event: Event.Event,
      before: State.State,
      data: Lease | undefined
    ): Decided | undefined => {
      switch (event.type) {
        case "WriteStreamed":
          return {
            session,
            record: {
              _tag: "Write",
              seq: event.seq,
              epoch: before.epoch,
              offset: event.offset,
              data: data!.bytes
            },
            release: data!.release
          }
        case "BlockSent":
          // Read after the event is durable (see decideBatch); the sender waits for it in seq order.
          return { session, seq: event.seq, block: event.block, epoch: before.epoch }
        case "ResyncBegun":
          return {
            session,
            record: {
              _tag: "ResyncBegin",
              seq: event.seq,
              epoch: event.epoch,
              base: Decider.markerBase(before)
            }
          }
        case "SyncActivated":
          return { session, record: { _tag: "ResyncEnd", seq: event.seq, epoch: event.epoch } }
        default:
          return undefined
      }
    }

    const needsPump = (s: State.State) =>
      s.mode === "resync" &&
      s.link === "up" &&
      s.owed === null &&
      (!s.markerSent ||
        (State.hasObligations(s) && s.flight.blockRecords < config.window) ||
        Decider.canResumeSync(s))

    // --- the decision loop -------------------------------------------------
    const decideBatch = (commands: ReadonlyArray<Command>) =>
      Effect.gen(function* () {
        const events: Array<Event.Event> = []
        const outgoing: Array<Decided> = []
        const barriers: Array<Deferred.Deferred<void>> = []
        let writes = 0
        let writtenBytes = 0
        const extents: Array<number> | undefined = activity === undefined ? undefined : []
        const adoptions: Array<Deferred.Deferred<number | undefined>> = []
        const before = state
        let s = state
        for (const command of commands) {
          let input: Input.Input
          let data: Lease | undefined
          switch (command._tag) {
            case "Barrier":
              barriers.push(command.done)
              continue
            case "Input":
              input = command.input
              data = command.data
              if (input._tag === "PumpTick") pumpPending = false
              else {
                writes++
                if (input._tag === "WriteCompleted") {
                  writtenBytes += input.length
                  if (extents !== undefined)
                    extents.push(
                      Math.floor(input.offset / extentBytes),
                      Math.floor((input.offset + input.length - 1) / extentBytes)
                    )
                }
              }
              break
            case "Connected":
              // Answered whatever happens below: adopted (a link number) or not.
              adoptions.push(command.adopted)
              if (s.link === "up") continue // a stale handshake; the supervisor will retry
              input = Input.linkReestablished(command.connection.durableSeq)
              break
            case "Message":
              if (command.link !== link || s.link === "down") continue // from a connection already given up
              input = command.input
              break
            case "Disconnected":
              if (command.link !== link) continue
              input = Input.linkFailed(command.reason)
              break
          }
          let decided = Decider.decideFolded(s, input)
          if (Either.isLeft(decided)) {
            if (command._tag === "Input") {
              // Checked before the disk write, so this is a bug; the disk already holds the write.
              yield* stop("a completed guest write was rejected", decided.left)
              continue
            }
            if (decided.left._tag === "ReceiverAhead") {
              // Another history of this disk at the receiver: resending from this journal
              // would be taken for records it has. The model refuses it; so does the filter.
              yield* stop(
                "the receiver's log does not come from this journal",
                new ReceiverAheadOfJournal({
                  diskId: options.diskId,
                  receiverSeq: decided.left.receiverSeq,
                  lastSent: decided.left.nextSeq - 1
                })
              )
              continue
            }
            if (command._tag !== "Message" || input._tag !== "GapReceived") {
              yield* stop("the receiver contradicts the journal", decided.left)
              continue
            }
            // A gap we cannot place: the receiver lost acked data mid-connection. Start over.
            decided = Decider.decideFolded(s, Input.linkFailed("protocol-error"))
            if (Either.isLeft(decided)) continue
          }
          // Folded once, by the decider: each event comes with the state it was decided against.
          const folded = decided.right
          let streamed = false
          for (let i = 0; i < folded.events.length; i++) {
            const event = folded.events[i]!
            const out = recordOf(event, folded.before[i]!, data)
            if (out !== undefined) outgoing.push(out)
            if (event.type === "WriteStreamed") streamed = true
            events.push(event)
            if (event.type === "LinkLost" || event.type === "DiscontinuityReported") session++
            if (event.type === "LinkRestored" && command._tag === "Connected") {
              session++
              link++
              connection = command.connection
              yield* SubscriptionRef.set(connectionRef, { link, conn: command.connection })
              Deferred.unsafeDone(command.adopted, Exit.succeed(link))
            }
            if (event.type === "LinkLost") {
              // The only event that takes the link down. The supervisor sees this and closes the connection.
              connection = undefined
              yield* SubscriptionRef.set(connectionRef, undefined)
            }
          }
          s = folded.state
          // Only tracked in the bitmap (resync): the copy is not needed.
          if (data !== undefined && !streamed) data.release()
        }
        state = s
        // Not adopted (a stale handshake, or one the model refused): the supervisor retries.
        for (const adopted of adoptions) Deferred.unsafeDone(adopted, Exit.succeed(undefined))
        if (events.length > 0 || barriers.length > 0 || writes > 0)
          decisions.offer({ events, outgoing, barriers, writes, extents, after: s })
        if (writtenBytes > 0) yield* Metric.incrementBy(metrics.bytesWritten, writtenBytes)
        yield* afterBatch(before, s, events)
      })

    // --- the journal stage: durable first, then act, in decision order -------
    const decisions = Inbox.make<Decision>()
    const journaler = Effect.gen(function* () {
      for (;;) {
        const taken = yield* decisions.takeAll
        const events = taken.length === 1 ? taken[0]!.events : taken.flatMap((d) => d.events)
        if (events.length > 0) {
          position = yield* journal.append(events).pipe(
            Metric.trackDuration(metrics.journalCommit),
            Effect.tapError((e) => stop("the journal failed", e)),
            Effect.orDie
          )
          sinceSnapshot += events.length
          if (options.onEvents !== undefined) yield* options.onEvents(events)
        }
        let writes = 0
        for (const decision of taken) {
          yield* act(decision.outgoing)
          writes += decision.writes
          for (const done of decision.barriers) yield* Deferred.succeed(done, undefined)
          // Journaled: the activity log may let these extents go.
          const extents = decision.extents
          if (extents !== undefined && activity !== undefined)
            for (let k = 0; k < extents.length; k += 2) activity.leave(extents[k]!, extents[k + 1]!)
        }
        pendingWrites.release(writes)
        if (sinceSnapshot >= snapshotEvery) {
          yield* journal
            .saveSnapshot(State.toSnapshot(taken[taken.length - 1]!.after), position)
            .pipe(
              Effect.catchAll((e) =>
                Effect.logWarning("snapshot failed; the journal still has everything", e)
              )
            )
          sinceSnapshot = 0
        }
      }
    })

    /**
     * Each record keeps the session it was decided in; the sender drops stale ones.
     * Blocks drained in a row are read with one request (up to `READ_RUN` blocks), so a
     * full sync costs one thread-pool hop per run rather than per block.
     */
    const act = (outgoing: ReadonlyArray<Decided>) =>
      Effect.suspend(() => {
        const items: Array<Outgoing> = []
        const reads: Array<Effect.Effect<unknown>> = []
        for (let i = 0; i < outgoing.length; ) {
          const out = outgoing[i]!
          if ("record" in out) {
            items.push({
              session: out.session,
              seq: out.record.seq,
              record: out.record,
              read: undefined,
              release: out.release
            })
            i++
            continue
          }
          let run = 1
          while (run < READ_RUN && i + run < outgoing.length) {
            const next = outgoing[i + run]!
            if ("record" in next || next.block !== out.block + run || next.session !== out.session) break
            run++
          }
          // Started below, before the records go out, so the sender never waits on an unstarted read.
          const reading = Deferred.unsafeMake<Uint8Array, DiskError>(FiberId.none)
          reads.push(
            Effect.fork(
              Effect.intoDeferred(
                disk.read(Geometry.blockOffset(config, out.block), run * config.blockSize),
                reading
              )
            )
          )
          for (let k = 0; k < run; k++) {
            const { seq, block, epoch, session } = outgoing[i + k] as Extract<Decided, { block: number }>
            items.push({
              session,
              seq,
              record: undefined,
              release: undefined,
              read: Effect.map(
                Deferred.await(reading),
                (bytes): Wire.Record => ({
                  _tag: "Block",
                  seq,
                  epoch,
                  block,
                  data: bytes.subarray(k * config.blockSize, (k + 1) * config.blockSize)
                })
              )
            })
          }
          i += run
        }
        const offered = Effect.sync(() => outbox.offerAll(items))
        return reads.length === 0 ? offered : Effect.zipRight(Effect.all(reads, { discard: true }), offered)
      })

    const afterBatch = (before: State.State, after: State.State, events: ReadonlyArray<Event.Event>) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        for (const e of events) {
          if (e.type === "Acked") {
            // Sent in seq order, so the acked ones come first: stop at the first unacked.
            for (const seq of sentAt.keys()) {
              if (seq > e.seq) break
              sentAt.delete(seq)
            }
            lastProgress = now
          }
          if (e.type === "LinkLost" || e.type === "DiscontinuityReported") sentAt.clear()
          if (e.type === "ResyncActivated")
            yield* Effect.logWarning(`resync activated: epoch ${e.epoch}, reason ${e.reason}`)
          if (e.type === "SyncActivated")
            yield* Effect.logInfo(`sync resumed: epoch ${e.epoch}, marker seq ${e.seq}`)
          if (e.type === "LinkLost") yield* Effect.logWarning(`link lost: ${e.reason}`)
          if (e.type === "LinkRestored")
            yield* Effect.logInfo(`link restored: receiver durable seq ${e.receiverSeq}`)
          if (e.type === "BlockSent") yield* Metric.increment(metrics.drainSent)
        }
        if (before.flight.size === 0 && after.flight.size > 0) lastProgress = now
        let oldest: number | undefined
        for (const t of sentAt.values()) {
          oldest = t
          break
        }
        const status = statusOf(after, oldest, now)
        yield* SubscriptionRef.set(stateRef, after)
        yield* SubscriptionRef.set(statusRef, status)
        yield* Metric.set(metrics.mode, after.mode === "sync" ? 0 : 1)
        yield* Metric.set(metrics.epoch, after.epoch)
        yield* Metric.set(metrics.dirtyBlocks, status.dirtyBlocks)
        yield* Metric.set(metrics.lagRecords, status.lagRecords)
        yield* Metric.set(metrics.lagSeconds, status.lagMillis / 1000)
        yield* switchover(after, now)
        if (!pumpPending && needsPump(after)) {
          pumpPending = true
          yield* pumpSignal.offer(undefined)
        }
      })

    // --- the switchover hold --------------------------------------------------
    const switchover = (s: State.State, now: number) =>
      Effect.gen(function* () {
        if (holdMillis <= 0) return
        const nearlyDone =
          s.mode === "resync" &&
          s.link === "up" &&
          s.markerSent &&
          s.owed === null &&
          State.obligationCount(s) <= config.window
        if (held && !nearlyDone) {
          yield* setHeld(false)
          return
        }
        if (!held && nearlyDone && now - lastHoldAt >= 5 * holdMillis) {
          lastHoldAt = now
          const id = ++holdId
          yield* setHeld(true)
          yield* Effect.forkDaemon(
            Effect.sleep(Duration.millis(holdMillis)).pipe(
              Effect.zipRight(Effect.suspend(() => (holdId === id ? setHeld(false) : Effect.void)))
            )
          )
        }
      })

    // --- the pump: drain capacity, with an optional rate limit -------------
    const pumpSignal = yield* Queue.sliding<void>(1)
    const pump = Effect.gen(function* () {
      let tokens = 0
      let refilledAt = yield* Clock.currentTimeMillis
      for (;;) {
        yield* Queue.take(pumpSignal)
        let budget = config.window
        if (options.drainBytesPerSecond !== undefined) {
          const rate = options.drainBytesPerSecond
          for (;;) {
            const now = yield* Clock.currentTimeMillis
            tokens = Math.min(rate, tokens + ((now - refilledAt) / 1000) * rate)
            refilledAt = now
            budget = Math.min(config.window, Math.floor(tokens / config.blockSize))
            if (budget > 0) break
            yield* Effect.sleep(Duration.millis(Math.max(1, ((config.blockSize - tokens) / rate) * 1000)))
          }
          tokens -= budget * config.blockSize
        }
        inbox.offer({ _tag: "Input", input: Input.pumpTick(budget) })
      }
    })

    // --- the sender: records in seq order, on the connection of their session ---
    const sender = Effect.gen(function* () {
      for (;;) {
        const batch = yield* outbox.takeAll
        const now = yield* Clock.currentTimeMillis
        let bytes = 0
        for (const out of batch) {
          // Decided before a link loss or gap: never sent, so its copy is done with.
          if (out.session !== session) {
            out.release?.()
            continue
          }
          const record =
            out.record ??
            (yield* out.read!.pipe(
              Effect.tapError((e) => stop("a block read failed", e)),
              Effect.orDie
            ))
          const conn = connection
          if (conn === undefined || out.session !== session) {
            out.release?.()
            continue
          }
          sentAt.set(out.seq, now)
          // The data is the filter's own: a fresh block read, never changed again, or a
          // pooled copy of the guest's buffer, lent until the connection has written it.
          // A lost connection may never hand a copy back: the collector takes its slab.
          const sent = yield* Effect.either(conn.sendOwned(record, out.release))
          if (Either.isLeft(sent)) {
            // The supervisor sees the loss too; make sure the loop hears of it once.
            inbox.offer({ _tag: "Disconnected", reason: "connection-lost", link })
            continue
          }
          if (record._tag === "Write" || record._tag === "Block") bytes += record.data.length
        }
        if (bytes > 0) yield* Metric.incrementBy(metrics.bytesSent, bytes)
      }
    })

    // --- the link supervisor --------------------------------------------
    const hello = () => ({
      diskId: options.diskId,
      blockSize: config.blockSize,
      blockCount: config.blockCount,
      watermark: state.watermark
    })
    const runConnection = Effect.scoped(
      Effect.gen(function* () {
        const conn = yield* receiver.connect(hello())
        const adopted = Deferred.unsafeMake<number | undefined>(FiberId.none)
        inbox.offer({ _tag: "Connected", connection: conn, adopted })
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
            return Effect.sync(() => inbox.offerAll(commands))
          }),
          Effect.as("connection-lost"),
          Effect.catchAll(() => Effect.succeed("connection-lost"))
        )
        const watchdog = Effect.gen(function* () {
          for (;;) {
            yield* Effect.sleep(Duration.millis(Math.max(10, Duration.toMillis(ackTimeout) / 4)))
            if (link !== myLink) return "superseded"
            const now = yield* Clock.currentTimeMillis
            if (state.flight.size > 0 && now - lastProgress > Duration.toMillis(ackTimeout))
              return "ack-timeout"
          }
        })
        const closedByFilter = connectionRef.changes.pipe(
          Stream.filter((c) => c?.link !== myLink),
          Stream.take(1),
          Stream.runDrain,
          Effect.as("closed-by-filter")
        )
        const reason = yield* Effect.raceAll([messages, watchdog, closedByFilter])
        inbox.offer({ _tag: "Disconnected", reason, link: myLink })
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
    const supervisor = Effect.gen(function* () {
      for (;;) {
        // Connect only while the model says the link is down.
        yield* stateRef.changes.pipe(
          Stream.filter((s) => s.link === "down"),
          Stream.take(1),
          Stream.runDrain
        )
        yield* runConnection.pipe(
          Effect.tapError(onConnectError),
          Effect.retry({
            schedule: reconnect,
            while: (e) => !(e._tag === "ReceiverRefused" && e.permanent)
          }),
          Effect.catchAll((e) =>
            e._tag === "ReceiverRefused" && e.permanent
              ? stop("the receiver refuses this disk", e)
              : Effect.logWarning("giving up a connection attempt", e)
          )
        )
        // Wait for the loop to hear of the loss before connecting again.
        yield* stateRef.changes.pipe(
          Stream.filter((s) => s.link === "down"),
          Stream.take(1),
          Stream.runDrain
        )
      }
    }).pipe(
      // A stopped replicator connects no more (a refusal would only be met again).
      (connecting) => orStopped(connecting, stopped),
      Effect.ignore
    )

    const loop = Effect.gen(function* () {
      for (;;) {
        yield* decideBatch(yield* inbox.takeAll)
      }
    })

    // A (re)started filter has no connection: whatever was in flight is assumed lost.
    const startup: Array<Event.Event> = []
    let afterStartup = state
    if (state.link === "up") {
      const lost = Decider.decideFolded(state, Input.linkFailed("filter-restart"))
      if (Either.isRight(lost)) {
        startup.push(...lost.right.events)
        afterStartup = lost.right.state
      }
    }
    // The journal says whether the last run closed cleanly. Even a journal with no events
    // may be behind the disk: the first run's writes reach the disk before its first append.
    if (lastRun._tag === "Unclean") yield* Effect.logWarning(`unclean start: ${lastRun.reason}`)
    if (lastRun._tag === "Unclean" && !mutants.assumeCleanStart) {
      // What the journal may lack: the extents in the activity log, else the whole disk.
      const recovered = activityLog === undefined ? Option.none() : activityLog.recovered
      const owed = Option.match(recovered, {
        onNone: () => [{ offset: 0, length: Geometry.diskBytes(config) }],
        onSome: (extents) => extentRanges(extents, extentBytes, Geometry.diskBytes(config))
      })
      let owedBytes = 0
      for (const range of owed) owedBytes += range.length
      const why = Option.match(recovered, {
        onNone: () => (activityLog === undefined ? "no activity log" : "the activity log is unreadable"),
        onSome: (extents) => `the activity log holds ${extents.length} extents`
      })
      const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`
      yield* Effect.logWarning(
        `unclean start: resyncing ${mib(owedBytes)} of ${mib(Geometry.diskBytes(config))} (${why})`
      )
      const resync: Array<Event.Event> = []
      if (afterStartup.mode === "sync" && owed.length > 0)
        resync.push({ type: "ResyncActivated", epoch: afterStartup.epoch + 1, reason: "interruption" })
      for (const range of owed) resync.push({ type: "WriteTracked", ...range })
      startup.push(...resync)
      afterStartup = Decider.evolveAll(afterStartup, resync)
    }
    if (startup.length > 0) {
      position = yield* journal.append(startup)
      state = afterStartup
      if (options.onEvents !== undefined) yield* options.onEvents(startup)
      yield* SubscriptionRef.set(stateRef, state)
      yield* SubscriptionRef.set(statusRef, statusOf(state, undefined, yield* Clock.currentTimeMillis))
    }

    const runtime = Effect.all([loop, journaler, sender, pump, supervisor, activityCommitter], {
      concurrency: "unbounded",
      discard: true
    }).pipe(Effect.catchAllCause((cause) => stop("a replicator fiber failed", cause)))
    const running = yield* Effect.forkScoped(IoScheduler.runOn(options.scheduler, runtime))

    const waitWhileHeld = writesHeld.changes.pipe(
      Stream.filter((h) => !h),
      Stream.take(1),
      Stream.runDrain
    )
    const closed = new ReplicatorStopped({ reason: "the replicator is closing", cause: undefined })

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
        if (hasStopped) return Deferred.await(stopped)
        if (held) return Effect.zipRight(Effect.interruptible(waitWhileHeld), admitFrom(writes, from, hold))
        if (pendingWrites.isClosing()) return Effect.fail(closed)
        const slots = pendingWrites.free()
        if (slots === 0) return Effect.zipRight(pendingWrites.waitForChange(), admitFrom(writes, from, hold))
        const entries: Array<GateEntry> = []
        let to = from
        for (; to < writes.length && to - from < slots; to++) {
          const w = writes[to]!
          const blocker = skipGate ? undefined : gate.blockerOf(w.first, w.last)
          if (blocker !== undefined) {
            if (to > from) break
            return Effect.zipRight(Effect.interruptible(gate.waitFor(blocker)), admitFrom(writes, from, hold))
          }
          if (activity !== undefined) {
            if (!activity.tryEnter(w.firstExtent, w.lastExtent)) {
              if (skipActivityWait) askForExtents(w.firstExtent, w.lastExtent)
              else {
                if (to > from) break
                // The write that waits reserves its extents, so no commit retires one it
                // needs while bringing in another; the rest of the batch only asks (one
                // commit for a guest queue).
                hold!.reservation ??= activity.reserve(w.firstExtent, w.lastExtent)
                for (let k = from + 1; k < writes.length; k++)
                  activity.request(writes[k]!.firstExtent, writes[k]!.lastExtent)
                activitySignal.offer(undefined)
                return Effect.zipRight(nextActivityCommit(), admitFrom(writes, from, hold))
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
            if (activity !== undefined && k > i - from) activity.leave(w.firstExtent, w.lastExtent)
          }
          pendingWrites.release(to - i)
          return Effect.failCause(cause)
        },
        onSuccess: () => {
          if (releaseEarly) w.data.release()
          const input = Input.writeCompleted(w.offset, w.data.bytes.length)
          inbox.offer({ _tag: "Input", input, data: w.data })
          // Queued before the gate opens, so an overlapping write completes after it.
          gate.leave(entries[i - from]!)
          return i + 1 === to ? Effect.void : writeRun(writes, entries, from, i + 1, to)
        }
      })
    }

    const write = (offset: number, bytes: Uint8Array): Effect.Effect<void, ReplicatorError> =>
      Effect.suspend(() => {
        const checked = check(offset, bytes)
        if (checked instanceof WriteRejected) return Effect.fail(checked)
        return admit([checked])
      })
    const writeAll = (writes: ReadonlyArray<GuestWrite>): Effect.Effect<void, ReplicatorError> =>
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

    const flush = Effect.gen(function* () {
      const done = yield* Deferred.make<void>()
      inbox.offer({ _tag: "Barrier", done })
      yield* orStopped(Deferred.await(done), stopped)
    })

    // The state is published when decided; the second flush makes the quiescent state durable.
    const quiesce = flush.pipe(
      Effect.zipRight(
        orStopped(
          stateRef.changes.pipe(
            Stream.filter((s) => State.isQuiescent(s)),
            Stream.take(1),
            Stream.runDrain
          ),
          stopped
        )
      ),
      Effect.zipRight(flush)
    )

    // Runs before the fibers are interrupted: every write the disk took, and every event
    // decided, gets journaled. Then the fibers stop, so nothing is decided after, and the
    // journal records the clean close; a stopped replicator (or a killed one) leaves the
    // run open, and the next start unclean.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        if (!mutants.skipDrainOnClose) yield* pendingWrites.close.pipe(Effect.zipRight(flush))
        yield* Fiber.interrupt(running)
        if (hasStopped) return
        yield* journal.endRun.pipe(
          Effect.catchAll((e) =>
            Effect.logWarning(
              `the journal could not record the clean close; the next start resyncs: ${e.message}`
            )
          )
        )
      }).pipe(Effect.ignore)
    )

    return {
      write,
      writeAll,
      flush,
      state: SubscriptionRef.get(stateRef),
      status: SubscriptionRef.get(statusRef),
      changes: statusRef.changes,
      quiesce,
      dropLink: (reason) =>
        Effect.sync(() => {
          inbox.offer({ _tag: "Disconnected", reason, link })
        }),
      stopped: Effect.flatMap(Deferred.await(stopped), () => Effect.never)
    } satisfies Replicator.Service
  })

export const layer = (
  options: Options
): Layer.Layer<Replicator, StartError, VirtualDisk | EventJournal | LogReceiver> =>
  Layer.scoped(Replicator, make(options))

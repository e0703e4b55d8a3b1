/**
 * What the replicator's fibers share: one record, `Shared`, whose fields are grouped by
 * the fiber that writes them (the way QEMU's mirror job documents `MirrorBlockJob`),
 * and the messages that travel between the stages. Every stage is a function of this
 * record and the services it needs; none keeps state of its own that another reads.
 *
 * The fibers (see `Replicator.make`):
 * - the decision loop (decisionLoop.ts): takes commands, decides and folds them;
 * - the journal stage (journalStage.ts): makes decided events durable, then acts;
 * - the sender (sender.ts): records and checksum requests to the adopted connection, in
 *   decision order (records in seq order, each request after the records decided before it);
 * - the pump (pump.ts): drain capacity, with an optional rate limit;
 * - the link supervisor (linkSupervisor.ts): connects, reads acks, gaps and checksum
 *   answers, watches;
 * - the activity committer (activityStage.ts): commits the extents writes ask for;
 * - callers' fibers: the write path (writePath.ts) and flush / quiesce / close (lifecycle.ts).
 *
 * Internal modules import the errors and metrics from ../Replicator.ts, which imports
 * them back: nothing here uses an import at load time, so the cycle is harmless.
 */
import { Clock, Deferred, Effect, Queue, SubscriptionRef } from "effect"
import * as Inbox from "../../internal/inbox.js"
import type { Lease } from "../../internal/slab.js"
import type { Connection } from "../../adapters/LogReceiver.js"
import type { DiskError } from "../../adapters/VirtualDisk.js"
import type * as Wire from "../../protocol/Wire.js"
import type * as Event from "../../domain/Event.js"
import type * as Input from "../../domain/Input.js"
import type * as State from "../../domain/State.js"
import { describeStop, ReplicatorStopped } from "./errors.js"
import { type ErrorNote, makeBook, type Status, type StatusBook, type StopNote, statusOf } from "./status.js"
import type * as Activity from "./activity.js"
import { type AdmissionBounds, makeAdmission, makeChanges } from "./admission.js"
import * as Published from "./published.js"

/** What the decision loop takes from its inbox. */
export type Command =
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
  /** The answer to a checksum request; the loop turns it into one outcome per block compared. */
  | {
      readonly _tag: "Answer"
      readonly answer: Wire.ChecksumReply | Wire.ChecksumRefused
      readonly link: number
    }
  | { readonly _tag: "Disconnected"; readonly reason: string; readonly link: number }

/**
 * What an event puts on the wire: a record, a block to read once the batch is journaled,
 * or a comparison (`compared`: its id) whose block is read and hashed once it is journaled.
 */
export type Decided =
  /** A ready record: already in the sender's shape (`OutgoingRecord`), so it goes as it is. */
  | (OutgoingRecord & { readonly record: Wire.Record; readonly read: undefined })
  | { readonly session: number; readonly seq: number; readonly block: number; readonly epoch: number }
  | { readonly session: number; readonly compared: number; readonly block: number }
  /** A run of comparisons (`RunCompared`): ids `run + k` of `blocks[k]`, one checksum request. */
  | { readonly session: number; readonly run: number; readonly blocks: ReadonlyArray<number> }

/**
 * A checksum request and what its blocks are compared with. The request goes out as soon
 * as its comparisons are journaled; the disk's digests come later (the blocks are read and
 * hashed meanwhile), so the receiver hashes its versions while the filter hashes the disk's.
 */
export interface Comparisons {
  readonly request: Wire.ChecksumRequest
  /** Each block's comparison id (the model's), in request order. */
  readonly ids: ReadonlyArray<number>
  /** Decided as one `RunCompared` (answered as one `RunCompleted`), not per block. */
  readonly run: boolean
  /**
   * The disk's digest of each block (`Wire.DIGEST_BYTES` each, in request order), of the
   * block as read after its `BlockCompared` was journaled. Fails when a read failed (the
   * replicator is then stopping).
   */
  readonly digests: Effect.Effect<Uint8Array, DiskError>
}

/** A decided batch on its way to the journal: acted on only once its events are durable. */
export interface Decision {
  readonly events: ReadonlyArray<Event.Event>
  readonly outgoing: ReadonlyArray<Decided>
  readonly barriers: ReadonlyArray<Deferred.Deferred<void>>
  /** Guest writes folded in this batch, and their bytes (freed from the pending bound once journaled). */
  readonly writes: number
  readonly writtenBytes: number
  /** With an activity log: the extents of those writes, as `[first, last]` pairs. */
  readonly extents: ReadonlyArray<number> | undefined
  /** The state after the batch, for snapshots. */
  readonly after: State.State
}

/** A record bound for the wire: ready, or a block read started after its event was journaled. */
export interface OutgoingRecord {
  readonly session: number
  readonly seq: number
  readonly record: Wire.Record | undefined
  readonly read: Effect.Effect<Wire.Record, DiskError> | undefined
  /** Hands a guest-data copy back to the pool once the connection no longer reads it. */
  readonly release: (() => void) | undefined
}

/**
 * A checksum request bound for the wire, in its place among the records: after every
 * record decided before its comparisons. It is made once their `BlockCompared` events
 * are journaled; their blocks are read and hashed from then on, never before.
 */
export interface OutgoingComparisons {
  readonly session: number
  readonly comparisons: Comparisons
}

/** What the journal stage hands the sender, in decision order. */
export type Outgoing = OutgoingRecord | OutgoingComparisons

/** With an `ActivityLog`: a guest write reaches the disk only in an extent the log holds. */
export interface ActivityShared {
  /** The log's extent size. */
  readonly extentBytes: number
  /** Which extents the log holds, and which writes want in (activity.ts). */
  readonly tracker: Activity.ActivityTracker
  /** Offered when a write asks for extents; taken by the committer. */
  readonly signal: Inbox.Inbox<void>
  /** Fired by the committer after each commit; writes waiting for an extent wait for it. */
  readonly commits: ReturnType<typeof makeChanges>
}

export interface Shared {
  // --- Written by the decision loop (and by the start-up, before the fibers run) -------
  /** The folded state after the last decided batch; the link supervisor reads it. */
  state: State.State
  /**
   * Fired after every decided batch, once `state` and `statusRef` are published:
   * `quiesce` and the supervisor wait on it (`untilState`). A plain signal, not a
   * `SubscriptionRef`: publishing one per batch, and the supervisor's stream over it,
   * were a share of the filter's Effect runtime per 4 KiB write (docs/performance.md).
   */
  readonly decided: ReturnType<typeof makeChanges>
  /** The last value set on each gauge (`gauges` in decisionLoop.ts): an unchanged one is not set again. */
  readonly gaugesSet: Float64Array
  /** The `Status` of `state`, published with it (`changes`). */
  readonly statusRef: Published.Published<Status>
  /**
   * Changes whenever the link is lost, shows a gap, or is restored: records decided in
   * an older session are not sent (the sender compares).
   */
  session: number
  /** Numbers adopted connections: commands from an older one are dropped. */
  link: number
  /** The adopted connection while the model says the link is up; the sender writes to it. */
  connection: Connection | undefined
  /** `connection` with its number, published: the supervisor closes one the loop let go. */
  readonly connectionRef: SubscriptionRef.SubscriptionRef<
    { readonly link: number; readonly conn: Connection } | undefined
  >
  /** A pump tick was asked for and is not decided yet (the pump offers it). */
  pumpPending: boolean
  /** The last ack, or the first record put in flight: the watchdog's ack timeout counts from it. */
  lastProgress: number
  /**
   * Send time of each unacked record, in seq order, for the lag in seconds. The sender
   * adds; the loop removes what is acked and clears it on a loss or a gap.
   */
  readonly sentAt: Map<number, number>
  /** What `Status` says beyond the state: drain progress and rate, the last recovery point. */
  readonly book: StatusBook
  /** The receiver has answered a checksum request since the start: it knows them. */
  checksumsAnswered: boolean
  /**
   * Connections the receiver closed with a checksum request unanswered, none ever
   * answered (an ack timeout or a stop of the filter's own does not count).
   */
  closedOnRequest: number
  /**
   * Comparisons are off for this run: the receiver closed the connection twice with a
   * request unanswered, and never answered one (a receiver from before checksums closes
   * it on every one; once may be a restart). The pump reads it: it then sends every owed block.
   */
  compareOff: boolean
  /**
   * Written by the loop (an answer) and verify, both through `useSha256`, in one synchronous step.
   * The digest algorithm checksum requests ask for now (the journal stage reads it as it
   * makes a request, verify as it asks): the `digest` option's until the receiver refuses
   * it (`unsupported`) or answers with another code (a receiver from before the code), then
   * SHA-256 for the rest of the run (`useSha256`).
   */
  digest: Wire.DigestAlgorithm

  // --- Written by the sender (adds) and the decision loop (takes out, clears) ----------
  /**
   * Checksum requests on the wire whose answers have not arrived, by request id: what
   * each block is compared with (its digests may still be on their way). The sender adds one as it sends it; the loop takes it
   * out when its answer arrives, and clears them all on a link loss or a gap (their
   * comparisons are re-marked; a late answer finds nothing and is dropped). They are
   * the current session's comparisons waiting, at most `window` (the decider bounds them).
   */
  readonly requests: Map<number, Comparisons>

  // --- Online verify (verify.ts): the loop marks and answers, the verify fiber clears and waits --
  /** The seq of the last record decided (written with the `touched` marks, in one step). */
  lastDecided: number
  /** While a verify runs: what it shares with the loop. */
  verifying: Verifying | undefined

  // --- Written by the journal stage ------------------------------------------------------
  /** Where the journal ends, after the last append (snapshots are saved at it). */
  position: number
  /** Events journaled since the last snapshot. */
  sinceSnapshot: number
  /** The state after the last batch journaled, at `position` (a clean close saves its snapshot). */
  journaled: State.State
  /**
   * Done when the last checksum request handed on is hashed: the next request's blocks
   * are read and hashed after it, so requests are hashed one at a time, in the order they
   * go out and are answered (all at once, each would be ready only near the end of all).
   */
  hashed: Effect.Effect<void>

  // --- Written by the switchover hold (from the loop, and its timer) --------------------
  /** New guest writes wait while true; mirrors `writesHeld` for the write path's synchronous check. */
  held: boolean
  readonly writesHeld: SubscriptionRef.SubscriptionRef<boolean>
  /** The current hold: a timer ends only its own. */
  holdId: number
  /** When the last hold began (at most one per five hold periods). */
  lastHoldAt: number

  // --- Written by the link supervisor and the sender (a failed attempt), the loop (a loss) --
  /** The last thing that went wrong without stopping the replicator, for `Status`. */
  lastError: ErrorNote | undefined

  // --- Written by `stop`, from any fiber -------------------------------------------------
  /** Mirrors `stopped` for the write path's synchronous check. */
  hasStopped: boolean
  /** Why it stopped, for `Status` (set with `hasStopped`). */
  stopNote: StopNote | undefined
  /** Fails once, with the first reason the replicator stopped. */
  readonly stopped: Deferred.Deferred<void, ReplicatorStopped>

  // --- Channels: each has one taker ------------------------------------------------------
  /** To the decision loop, from the write path, the supervisor, the sender, the pump, `flush`. */
  readonly inbox: Inbox.Inbox<Command>
  /** From the decision loop to the journal stage. */
  readonly decisions: Inbox.Inbox<Decision>
  /** From the journal stage to the sender, in decision order (records in seq order). */
  readonly outbox: Inbox.Inbox<Outgoing>
  /** From the decision loop to the pump: a drain tick is wanted. */
  readonly pumpSignal: Queue.Queue<void>

  // --- Shared by the write path (takes) and the journal stage (releases) -----------------
  /** Guest writes on the disk whose events are not journaled yet (`maxPendingBytes`). */
  readonly pendingWrites: ReturnType<typeof makeAdmission<ReplicatorStopped>>
  /** With an activity log: its bookkeeping (write path, journal stage and committer). */
  readonly activity: ActivityShared | undefined
}

/** What a running online verify shares with the decision loop. */
export interface Verifying {
  /** One bit per block: a write to it was decided since its batch opened (the loop sets, verify clears). */
  readonly touched: Uint32Array
  /** Answers awaited, by request id: verify adds, the loop completes (`undefined` at a loss or gap) and removes. */
  readonly answers: Map<number, Deferred.Deferred<Wire.ChecksumReply | Wire.ChecksumRefused | undefined>>
}

/** Marks blocks `first..last` touched. */
export const touch = (v: Verifying, first: number, last: number): void => {
  for (let b = first; b <= last; b++) v.touched[b >>> 5]! |= 1 << (b & 31)
}

/** The status of `shared` at `now` (`oldestUnackedAt`: the send time of the oldest unacked record). */
export const statusNow = (shared: Shared, now: number, oldestUnackedAt = oldestSent(shared)): Status =>
  statusOf(
    shared.state,
    shared.book,
    { lastError: shared.lastError, stopped: shared.stopNote },
    oldestUnackedAt,
    now
  )

/** The send time of the oldest unacked record. */
export const oldestSent = (shared: Shared): number | undefined => {
  for (const t of shared.sentAt.values()) return t
  return undefined
}

/** Notes what went wrong (a refused connection, a lost link) for `Status`. */
export const noteError = (shared: Shared, message: string): Effect.Effect<void> =>
  Effect.map(Clock.currentTimeMillis, (at) => {
    shared.lastError = { message, at }
  })

/**
 * The pending-write bound the write path enforces: the caller's, but never above half the
 * congestion limit. A write not yet journaled is, to the model, a live record in flight,
 * though nothing of it is on the wire yet; with a bound above the limit, one slow commit
 * of the filter's own journal (an fsync stalled 200 ms on a shared disk, with the guest
 * writing on) was read as a congested link, and pulled the stream ahead into resync with
 * most of the unacked bytes not even sent (docs/performance.md, "Session 12"). Held at
 * half, the journal's backlog makes guest writes wait, as `maxPendingBytes` always meant,
 * and the other half of the limit is the link's: a link that cannot keep up still fills it.
 */
export const admissionBounds = (pending: AdmissionBounds, congestionLimit: number): AdmissionBounds => ({
  bytes: Math.max(1, Math.min(pending.bytes, Math.floor(congestionLimit / 2))),
  writes: pending.writes
})

/** The record for a replicator starting from `state` with its journal ending at `position`. */
export const makeShared = (options: {
  readonly state: State.State
  readonly position: number
  readonly pending: AdmissionBounds
  readonly activity: Omit<ActivityShared, "signal" | "commits"> | undefined
  /** The digest algorithm of checksum requests (the `digest` option's, available here). */
  readonly digest: Wire.DigestAlgorithm
  /** The mutant (internal/mutants.ts). */
  readonly everyAckAPoint?: boolean | undefined
}): Effect.Effect<Shared> =>
  Effect.gen(function* () {
    const { state } = options
    const now = yield* Clock.currentTimeMillis
    const stopped = yield* Deferred.make<void, ReplicatorStopped>()
    const book = makeBook(state, now, options.digest, options.everyAckAPoint)
    return {
      state,
      decided: makeChanges(),
      gaugesSet: new Float64Array(6).fill(Number.NaN),
      statusRef: yield* Published.make(
        statusOf(state, book, { lastError: undefined, stopped: undefined }, undefined, now)
      ),
      session: 0,
      link: 0,
      connection: undefined,
      connectionRef: yield* SubscriptionRef.make<
        { readonly link: number; readonly conn: Connection } | undefined
      >(undefined),
      pumpPending: false,
      lastProgress: now,
      sentAt: new Map(),
      book,
      requests: new Map(),
      lastDecided: state.nextSeq - 1,
      verifying: undefined,
      checksumsAnswered: false,
      closedOnRequest: 0,
      compareOff: false,
      digest: options.digest,
      position: options.position,
      sinceSnapshot: 0,
      journaled: state,
      hashed: Effect.void,
      held: false,
      writesHeld: yield* SubscriptionRef.make(false),
      holdId: 0,
      lastHoldAt: Number.NEGATIVE_INFINITY,
      lastError: undefined,
      hasStopped: false,
      stopNote: undefined,
      stopped,
      // Inboxes, not Queues: a batch is taken as the array it was offered into, where a
      // Queue's take built a chunk node per element (a quarter of the filter's garbage).
      inbox: Inbox.make(),
      decisions: Inbox.make(),
      outbox: Inbox.make(),
      pumpSignal: yield* Queue.sliding<void>(1),
      pendingWrites: makeAdmission(admissionBounds(options.pending, state.config.congestionLimit), stopped),
      activity:
        options.activity === undefined
          ? undefined
          : { ...options.activity, signal: Inbox.make(), commits: makeChanges() }
    }
  })

/**
 * The receiver cannot answer the digest algorithm asked (it refused it as `unsupported`, or
 * answered with another code: a receiver from before the code answers SHA-256): SHA-256
 * from now on, for the rest of the run, logged once. Only ever from the option's to SHA-256.
 */
export const useSha256 = (shared: Shared, why: string): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (shared.digest === "sha256") return Effect.void
    const was = shared.digest
    shared.digest = "sha256"
    shared.book.checksums.algorithm = "sha256"
    return Effect.logWarning(`the receiver ${why}: checksum requests ask sha256, not ${was}, from now on`)
  })

/** Stops once, with the first reason; the log line says why, the full cause is at debug level. */
export const stop = (shared: Shared, reason: string, cause: unknown): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (shared.hasStopped) return Effect.logDebug(`replicator already stopped; also: ${reason}`, cause)
    shared.hasStopped = true
    const error = new ReplicatorStopped({ reason, cause })
    const described = describeStop(error)
    return Effect.logError(`replicator stopping: ${described}`).pipe(
      Effect.zipRight(
        Effect.flatMap(Clock.currentTimeMillis, (at) => {
          shared.stopNote = {
            reason,
            detail: described.startsWith(`${reason}: `) ? described.slice(reason.length + 2) : "",
            at
          }
          return shared.statusRef.set(statusNow(shared, at))
        })
      ),
      Effect.zipRight(Effect.logDebug("replicator stop cause", cause)),
      Effect.zipRight(Deferred.fail(shared.stopped, error))
    )
  })

/** Publishes `state` (and its status) outside a decided batch: at start-up. */
export const publish = (shared: Shared): Effect.Effect<void> =>
  Effect.gen(function* () {
    yield* shared.statusRef.set(statusNow(shared, yield* Clock.currentTimeMillis))
    shared.decided.fire()
  })

/** Waits until the published state satisfies `holds` (checked now, then after every decided batch). */
export const untilState = (shared: Shared, holds: (s: State.State) => boolean): Effect.Effect<void> =>
  Effect.suspend(() =>
    holds(shared.state) ? Effect.void : Effect.zipRight(shared.decided.next(), untilState(shared, holds))
  )

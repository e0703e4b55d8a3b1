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
 * when too many bytes of writes are not yet journaled (`maxPendingBytes`), and never for the
 * network. Closing the replicator journals every write the disk took before it. The
 * link supervisor connects with capped exponential backoff and jitter, turns acks and
 * gaps into inputs, and watches for ack timeouts.
 */
import {
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Layer,
  Option,
  Schedule,
  type Scheduler,
  type Scope,
  type Stream
} from "effect"
import { ActivityLog } from "../adapters/ActivityLog.js"
import { EventJournal } from "../adapters/EventJournal.js"
import { LogReceiver } from "../adapters/LogReceiver.js"
import { VirtualDisk } from "../adapters/VirtualDisk.js"
import type { Config } from "../domain/Config.js"
import type * as Event from "../domain/Event.js"
import type * as State from "../domain/State.js"
import * as Wire from "../protocol/Wire.js"
import * as IoScheduler from "../internal/IoScheduler.js"
import * as Activity from "./internal/activity.js"
import { committer } from "./internal/activityStage.js"
import { decisionLoop } from "./internal/decisionLoop.js"
import { journalStage } from "./internal/journalStage.js"
import { close, flush, quiesce } from "./internal/lifecycle.js"
import { linkSupervisor } from "./internal/linkSupervisor.js"
import { ReplicatorMutants } from "./internal/mutants.js"
import { pump } from "./internal/pump.js"
import * as Recovery from "./internal/recovery.js"
import { sender } from "./internal/sender.js"
import { makeShared, statusNow, stop } from "./internal/shared.js"
import {
  runVerify,
  VerifyInProgress,
  VerifyIoError,
  type VerifyOptions,
  type VerifyProgress,
  type VerifyResult
} from "./internal/verify.js"
import { makeWritePath } from "./internal/writePath.js"
import {
  describeStop,
  GeometryMismatch,
  ReceiverAheadOfJournal,
  type ReplicatorError,
  ReplicatorStopped,
  type StartError,
  WriteRejected
} from "./internal/errors.js"
import { forDisk, metrics } from "./internal/metrics.js"
import type {
  ChecksumCounts,
  DrainProgress,
  ErrorNote,
  GuestWrite,
  KnownRecoveryPoint,
  Status,
  StopNote
} from "./internal/status.js"

export {
  describeStop,
  GeometryMismatch,
  metrics,
  ReceiverAheadOfJournal,
  type ReplicatorError,
  ReplicatorStopped,
  type StartError,
  WriteRejected,
  VerifyInProgress,
  VerifyIoError,
  type VerifyOptions,
  type VerifyProgress,
  type VerifyResult,
  type ChecksumCounts,
  type DrainProgress,
  type ErrorNote,
  type GuestWrite,
  type KnownRecoveryPoint,
  type Status,
  type StopNote
}

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
  /**
   * Checksum-based resync (docs/replicator.md): while at least this many blocks are owed,
   * the drain asks the receiver for a checksum of its copy of each owed block, compares
   * it with the disk's, and sends only the blocks that differ. A positive integer;
   * `undefined` (the default) never compares: every owed block is sent.
   */
  readonly compareFrom?: number | undefined
  /**
   * The block digest's algorithm for checksum-based resync and online verify (docs/wire.md,
   * "Checksums"): `"blake3"` (the default where its native module loads: about 3x less CPU
   * at 64 KiB blocks) or `"sha256"` (always available; FIPS). A receiver that cannot answer
   * BLAKE3 (one from before it, or without the module) is asked SHA-256 from then on;
   * `Status.checksums.algorithm` says which is asked. `"blake3"` where it does not load here
   * is SHA-256, with a warning.
   */
  readonly digest?: Wire.DigestAlgorithm | undefined
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
   * Bytes of guest writes on the disk whose events are not yet journaled; a write beyond
   * this waits for the journal (not for the network). Each holds a copy of its data until
   * it is sent, so this bounds that memory whatever the write size. A write larger than
   * the bound goes alone. Default 32 MiB (8192 writes of 4 KiB, 512 of 64 KiB); never more
   * than half the config's `congestionLimit`, so the journal's backlog is not read as a
   * congested link.
   */
  readonly maxPendingBytes?: number | undefined
  /**
   * @deprecated Bound the pending writes by bytes (`maxPendingBytes`): a count let 1024
   * small writes wait for a slow journal commit while holding little memory. Still
   * honoured when given: a write then also waits while this many writes are pending.
   * Default: no bound on the count.
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
    /**
     * The status now (the lag and the drain rate at this moment). Once the replicator
     * stopped, `stopped` says why; `lastError` keeps the last link loss or failed attempt.
     */
    readonly status: Effect.Effect<Status>
    /** Status after every decided batch (and once more when the replicator stops). */
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
    /**
     * Online verify (docs/replicator.md, "Online verify"): while replication runs,
     * compares the receiver's version of every block with the disk's where they must
     * match (in sync, not written meanwhile; a block written during every attempt is left
     * `unverified`), at most `bytesPerSecond` of the disk read per second. Reports the
     * blocks that differ; with `resync` they are owed again and the next pass sends them.
     * Waits while the filter is out of sync or the link is down. One at a time
     * (`VerifyInProgress`); fails with `VerifyIoError` when the disk cannot be read.
     */
    readonly verify: (
      options?: VerifyOptions
    ) => Effect.Effect<VerifyResult, VerifyInProgress | VerifyIoError | ReplicatorStopped>
  }
}

// ---------------------------------------------------------------------------
// Construction: the stages, wired to one shared record

/** The disk's byte ranges under `extents` (ascending), adjacent ones merged, clipped to the disk. */
export const extentRanges: (
  extents: ReadonlyArray<number>,
  extentBytes: number,
  diskBytes: number
) => Array<{ readonly offset: number; readonly length: number }> = Recovery.extentRanges

/** The pending-write bounds of `options`; dies on a bound that is not a positive integer. */
const pendingBounds = (options: Options): Effect.Effect<{ bytes: number; writes: number }> => {
  const bytes = options.maxPendingBytes ?? 32 * 1024 * 1024
  const writes = options.maxPendingWrites ?? Number.POSITIVE_INFINITY
  for (const [name, value] of [
    ["maxPendingBytes", bytes],
    ["maxPendingWrites", writes]
  ] as const)
    if (!(value === Number.POSITIVE_INFINITY || (Number.isSafeInteger(value) && value > 0)))
      return Effect.dieMessage(`${name} must be a positive integer, not ${value}`)
  return Effect.succeed({ bytes, writes })
}

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
    if (
      options.compareFrom !== undefined &&
      !(Number.isSafeInteger(options.compareFrom) && options.compareFrom > 0)
    )
      return yield* Effect.dieMessage(`compareFrom must be a positive integer, not ${options.compareFrom}`)
    if (options.digest !== undefined && !Wire.DIGEST_ALGORITHMS.includes(options.digest))
      return yield* Effect.dieMessage(`digest must be sha256 or blake3, not ${options.digest}`)
    let digest = options.digest ?? Wire.defaultDigestAlgorithm()
    if (!Wire.digestAvailable(digest)) {
      yield* Effect.logWarning(
        `${digest} is not available here (its native module did not load): sha256 is used`
      )
      digest = "sha256"
    }

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
      pending: yield* pendingBounds(options),
      digest,
      everyAckAPoint: mutants.everyAckAPoint,
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

    // Every series tagged with the disk, so two replicators in one process keep their own.
    const diskMetrics = mutants.shareMetricSeries ? metrics : forDisk(diskId)
    const fibers = [
      decisionLoop(shared, {
        diskId,
        config,
        metrics: diskMetrics,
        holdMillis: Duration.toMillis(Duration.decode(options.switchoverHold ?? "100 millis")),
        ignoreDigestEcho: mutants.ignoreDigestEcho
      }),
      journalStage(shared, journal, disk, {
        config,
        snapshotEvery: options.snapshotEvery ?? 10_000,
        onEvents: options.onEvents,
        metrics: diskMetrics,
        readComparedEarly: mutants.readComparedEarly
      }),
      sender(shared, diskMetrics),
      pump(shared, {
        config,
        drainBytesPerSecond: options.drainBytesPerSecond,
        compareFrom: options.compareFrom
      }),
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
      committer(shared, activityLog, diskMetrics)
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
      state: Effect.sync(() => shared.state),
      status: Effect.map(Clock.currentTimeMillis, (now) => statusNow(shared, now)),
      changes: shared.statusRef.changes,
      quiesce: quiesce(shared),
      dropLink: (reason) =>
        Effect.sync(() => {
          shared.inbox.offer({ _tag: "Disconnected", reason, link: shared.link })
        }),
      stopped: Effect.flatMap(Deferred.await(shared.stopped), () => Effect.never),
      verify: (verifyOptions = {}) => runVerify(shared, disk, config, verifyOptions)
    } satisfies Replicator.Service
  })

export const layer = (
  options: Options
): Layer.Layer<Replicator, StartError, VirtualDisk | EventJournal | LogReceiver> =>
  Layer.scoped(Replicator, make(options))

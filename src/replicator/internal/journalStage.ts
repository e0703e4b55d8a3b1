/**
 * The journal stage: durable first, then act, in decision order. It makes the events of
 * every batch waiting durable with one append (one fsync), and only then acts on them:
 * records go to the sender in seq order, block reads start, flush barriers complete,
 * pending-write slots and activity-log extents are let go. A snapshot is saved every
 * `snapshotEvery` events so start-up stays fast.
 */
import { Deferred, Effect, FiberId } from "effect"
import type { EventJournal } from "../../adapters/EventJournal.js"
import type { DiskError, VirtualDisk } from "../../adapters/VirtualDisk.js"
import type * as Wire from "../../protocol/Wire.js"
import type { Config } from "../../domain/Config.js"
import type * as Event from "../../domain/Event.js"
import * as Geometry from "../../domain/Geometry.js"
import * as State from "../../domain/State.js"
import { type Metrics, timed } from "./metrics.js"
import { type Decided, type Outgoing, type Shared, stop } from "./shared.js"

/** Consecutive drained blocks read with one disk request, at most. */
export const READ_RUN = 16

export interface JournalSettings {
  readonly config: Config
  readonly snapshotEvery: number
  readonly onEvents: ((events: ReadonlyArray<Event.Event>) => Effect.Effect<void>) | undefined
  /** This disk's series (`forDisk`). */
  readonly metrics: Metrics
}

export const journalStage = (
  shared: Shared,
  journal: EventJournal.Service,
  disk: VirtualDisk.Service,
  settings: JournalSettings
): Effect.Effect<never> =>
  Effect.gen(function* () {
    for (;;) {
      const taken = yield* shared.decisions.takeAll
      const events = taken.length === 1 ? taken[0]!.events : taken.flatMap((d) => d.events)
      if (events.length > 0) {
        shared.position = yield* journal.append(events).pipe(
          timed(settings.metrics.journalCommit),
          Effect.tapError((e) => stop(shared, "the journal failed", e)),
          Effect.orDie
        )
        shared.sinceSnapshot += events.length
        if (settings.onEvents !== undefined) yield* settings.onEvents(events)
      }
      let writes = 0
      for (const decision of taken) {
        yield* act(shared, disk, settings.config, decision.outgoing)
        writes += decision.writes
        for (const done of decision.barriers) yield* Deferred.succeed(done, undefined)
        // Journaled: the activity log may let these extents go.
        const extents = decision.extents
        const tracker = shared.activity?.tracker
        if (extents !== undefined && tracker !== undefined)
          for (let k = 0; k < extents.length; k += 2) tracker.leave(extents[k]!, extents[k + 1]!)
      }
      // An overfull log (every extent was busy) lets idle extents go without waiting for
      // a write to ask for a new one.
      if (shared.activity?.tracker.hasWork() === true) shared.activity.signal.offer(undefined)
      shared.pendingWrites.release(writes)
      if (shared.sinceSnapshot >= settings.snapshotEvery) {
        yield* journal
          .saveSnapshot(State.toSnapshot(taken[taken.length - 1]!.after), shared.position)
          .pipe(
            Effect.catchAll((e) => Effect.logWarning("snapshot failed; the journal still has everything", e))
          )
        shared.sinceSnapshot = 0
      }
    }
  })

/**
 * Hands a journaled batch's records to the sender. Each keeps the session it was
 * decided in; the sender drops stale ones. Blocks drained in a row are read with one
 * request (up to `READ_RUN` blocks), so a full sync costs one thread-pool hop per run
 * rather than per block.
 */
export const act = (
  shared: Shared,
  disk: VirtualDisk.Service,
  config: Config,
  outgoing: ReadonlyArray<Decided>
): Effect.Effect<void> =>
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
    const offered = Effect.sync(() => shared.outbox.offerAll(items))
    return reads.length === 0 ? offered : Effect.zipRight(Effect.all(reads, { discard: true }), offered)
  })

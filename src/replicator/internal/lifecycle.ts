/**
 * Flush, quiesce and close: the waits a caller runs on its own fiber, and the finalizer
 * that closes the replicator with its scope.
 */
import { Deferred, Effect, Fiber } from "effect"
import type { EventJournal } from "../../adapters/EventJournal.js"
import * as State from "../../domain/State.js"
import type { ReplicatorStopped } from "./errors.js"
import { orStopped } from "./admission.js"
import { type Shared, untilState } from "./shared.js"

/** Waits until every write that returned before it is folded and its event durable in the journal. */
export const flush = (shared: Shared): Effect.Effect<void, ReplicatorStopped> =>
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
export const quiesce = (shared: Shared): Effect.Effect<void, ReplicatorStopped> =>
  flush(shared).pipe(
    Effect.zipRight(
      orStopped(
        untilState(shared, (s) => State.isQuiescent(s)),
        shared.stopped
      )
    ),
    Effect.zipRight(flush(shared))
  )

/**
 * Closes the replicator (its scope's finalizer). Runs before the fibers are interrupted:
 * every write the disk took, and every event decided, gets journaled. Then the fibers
 * stop, so nothing is decided after, and the journal records the clean close; a stopped
 * replicator (or a killed one) leaves the run open, and the next start unclean. A clean
 * close saves a snapshot at the journal's end, so the next start replays nothing.
 */
export const close = (
  shared: Shared,
  journal: EventJournal.Service,
  running: Fiber.Fiber<unknown, unknown>,
  mutants: { readonly skipDrainOnClose: boolean }
): Effect.Effect<void> =>
  Effect.gen(function* () {
    // The scope may close on a fiber that is being interrupted (an embedder's main fiber
    // on SIGTERM): the waits of the drain are interruptible (`orStopped`) and would give
    // way to that interruption at once, skipping the drain and the clean close. They run
    // on a fiber of their own, which nobody interrupts.
    if (!mutants.skipDrainOnClose)
      yield* Effect.flatMap(
        Effect.forkDaemon(shared.pendingWrites.close.pipe(Effect.zipRight(flush(shared)))),
        Fiber.join
      )
    yield* Fiber.interrupt(running)
    if (shared.hasStopped) return
    // The next start replays only what follows the last snapshot: save one at the end.
    if (shared.sinceSnapshot > 0)
      yield* journal
        .saveSnapshot(State.toSnapshot(shared.journaled), shared.position)
        .pipe(
          Effect.catchAll((e) =>
            Effect.logWarning("snapshot at close failed; the journal still has everything", e)
          )
        )
    yield* journal.endRun.pipe(
      Effect.catchAll((e) =>
        Effect.logWarning(
          `the journal could not record the clean close; the next start resyncs: ${e.message}`
        )
      )
    )
  }).pipe(Effect.ignore)

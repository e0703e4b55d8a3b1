/**
 * A scheduler for I/O-bound programs: the work fibers schedule runs in batches on
 * `setImmediate`, so socket and file callbacks get a turn between batches.
 *
 * Effect 3's default scheduler runs scheduled work on microtasks and falls back to a
 * timer only after 2048 rounds in a row; until then no I/O callback runs, and the
 * timer costs at least a millisecond. Under a steady stream of guest writes that
 * starves the replicator's sockets and lets undecided writes pile up; with this
 * scheduler the end-to-end live stream gained 10-20 % in the bench (see
 * docs/replicator.md). Effect 4's default scheduler makes the same choice.
 */
import { Effect, Option, Scheduler, TestClock } from "effect"

export const scheduler: Scheduler.Scheduler = Scheduler.makeBatched((runBatch) => setImmediate(runBatch))

/** Runs `self` (and the fibers it forks) on the I/O scheduler. */
export const withIoScheduler = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withScheduler(self, scheduler)

/**
 * The scheduler a program's own fibers should default to: this one, or the caller's
 * (`"inherit"`) under a `TestClock`, where a test drives time and the fibers must keep
 * pace with it (on `setImmediate` they would fall behind the clock).
 */
export const defaultFor: Effect.Effect<Scheduler.Scheduler | "inherit"> = Effect.map(
  Effect.serviceOption(TestClock.TestClock),
  (testClock): Scheduler.Scheduler | "inherit" => (Option.isSome(testClock) ? "inherit" : scheduler)
)

/**
 * Runs `self` where a program's `scheduler` option says: the given scheduler, the
 * caller's for `"inherit"`, or `defaultFor` when the option is absent.
 */
export const runOn = <A, E, R>(
  option: Scheduler.Scheduler | "inherit" | undefined,
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.flatMap(option === undefined ? defaultFor : Effect.succeed(option), (chosen) =>
    chosen === "inherit" ? self : Effect.withScheduler(self, chosen)
  )

/**
 * The activity log's committer: with an `ActivityLog`, a guest write reaches the disk
 * only in an extent the log holds durably. Writes ask for extents (`askFor`) and wait
 * for a commit (`nextCommit`); one fiber commits what they asked for, one transaction
 * at a time, and asks that arrive meanwhile share the next.
 */
import { Effect, Metric } from "effect"
import type { ActivityLog } from "../../adapters/ActivityLog.js"
import type { ReplicatorStopped } from "./errors.js"
import { type Metrics, timed } from "./metrics.js"
import { orStopped } from "./admission.js"
import { type ActivityShared, type Shared, stop } from "./shared.js"

/**
 * Until the commit after this call lands (see `makeChanges`): one landing before the
 * wait starts holds the extents asked for, and waiting for the one after it could
 * wait for ever.
 */
export const nextCommit = (
  shared: Shared,
  activity: ActivityShared
): Effect.Effect<void, ReplicatorStopped> =>
  Effect.interruptible(orStopped(activity.commits.next(), shared.stopped))

/** Asks the committer for extents `first..last`, without waiting. */
export const askFor = (activity: ActivityShared, first: number, last: number): void => {
  activity.tracker.request(first, last)
  activity.signal.offer(undefined)
}

/** The committer fiber: nothing to do without an activity log. */
export const committer = (
  shared: Shared,
  activityLog: ActivityLog.Service | undefined,
  metrics: Metrics
): Effect.Effect<void> => {
  const activity = shared.activity
  if (activityLog === undefined || activity === undefined) return Effect.void
  const { tracker, signal, commits } = activity
  return Effect.gen(function* () {
    yield* Metric.set(metrics.activeExtents, tracker.size())
    for (;;) {
      yield* signal.takeAll
      const transaction = tracker.nextTransaction()
      if (transaction === undefined) continue
      yield* activityLog.commit(transaction.activate, transaction.retire).pipe(
        timed(metrics.activityCommit),
        Effect.tapError((e) => stop(shared, "the activity log failed", e)),
        Effect.orDie
      )
      tracker.committed(transaction)
      commits.fire()
      // A retiring extent asked for again comes back in the next transaction; extents that
      // went idle while it committed may bring an overfull log back to its capacity.
      if (tracker.hasWork()) signal.offer(undefined)
      yield* Metric.set(metrics.activeExtents, tracker.size())
    }
  })
}

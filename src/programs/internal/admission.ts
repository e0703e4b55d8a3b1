/**
 * The replicator's admission of guest writes (at most so many on the disk and not yet
 * journaled) and its wait-or-stopped helper.
 */
import { Deferred, Effect, Exit, FiberId } from "effect"

/**
 * `wait`, or the replicator's failure if it stops first. Interruptible even inside a
 * finalizer, so the loser of the race can be interrupted.
 */
export const orStopped = <E, S>(
  wait: Effect.Effect<unknown, E>,
  stopped: Deferred.Deferred<void, S>
): Effect.Effect<void, E | S> =>
  Effect.interruptible(Effect.raceFirst(Effect.asVoid(wait), Deferred.await(stopped)))

/**
 * Admission of guest writes: at most `max` on the disk and not yet journaled. Closing
 * refuses new writes and waits until those admitted are journaled. Admitting and
 * releasing are synchronous (they run per write); only waiting is an effect.
 */
export const makeAdmission = <S>(max: number, stopped: Deferred.Deferred<void, S>) => {
  let pending = 0
  let closing = false
  let changed = Deferred.unsafeMake<void>(FiberId.none)
  /**
   * Until the next release after this call. The change is taken now, where the caller
   * checked: its fiber may yield before the wait starts, and a release in between would
   * leave it waiting for one that may never come.
   */
  const waitForChange = (): Effect.Effect<void, S> => orStopped(Deferred.await(changed), stopped)
  const release = (n: number): void => {
    if (n === 0) return
    pending -= n
    const was = changed
    changed = Deferred.unsafeMake<void>(FiberId.none)
    Deferred.unsafeDone(was, Exit.void)
  }
  const drained: Effect.Effect<void, S> = Effect.suspend(() =>
    pending === 0 ? Effect.void : Effect.zipRight(waitForChange(), drained)
  )
  return {
    isClosing: () => closing,
    /** Slots free now. */
    free: (): number => Math.max(0, max - pending),
    /** Takes `n` free slots. */
    take: (n: number): void => {
      pending += n
    },
    waitForChange,
    release,
    close: Effect.suspend(() => {
      closing = true
      return drained
    })
  }
}

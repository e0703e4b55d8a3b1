/**
 * The replicator's admission of guest writes (at most so many on the disk and not yet
 * journaled), and the waiting helpers it shares with the activity log's commits.
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
 * Something that changes, for fibers that wait for its next change. The change to wait
 * for is taken when `next` is called, where the caller checked: its fiber may yield
 * before the wait starts, and a change landing in between must still wake it.
 */
export const makeChanges = () => {
  let current = Deferred.unsafeMake<void>(FiberId.none)
  return {
    /** The change after this call. */
    next: (): Effect.Effect<void> => Deferred.await(current),
    fire: (): void => {
      const was = current
      current = Deferred.unsafeMake<void>(FiberId.none)
      Deferred.unsafeDone(was, Exit.void)
    }
  }
}

/**
 * Admission of guest writes: at most `max` on the disk and not yet journaled. Closing
 * refuses new writes and waits until those admitted are journaled. Admitting and
 * releasing are synchronous (they run per write); only waiting is an effect.
 */
export const makeAdmission = <S>(max: number, stopped: Deferred.Deferred<void, S>) => {
  let pending = 0
  let closing = false
  const changes = makeChanges()
  /** Until the next release after this call (see `makeChanges`). */
  const waitForChange = (): Effect.Effect<void, S> => orStopped(changes.next(), stopped)
  const release = (n: number): void => {
    if (n === 0) return
    pending -= n
    changes.fire()
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

/**
 * The replicator's admission of guest writes (at most so many bytes on the disk and not
 * yet journaled), and the waiting helpers it shares with the activity log's commits.
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

/** The bounds on guest writes on the disk and not yet journaled. */
export interface AdmissionBounds {
  /** Their bytes, at most (each holds a copy of its data until it is sent). */
  readonly bytes: number
  /** Their number, at most (`Infinity`: bounded by bytes alone). */
  readonly writes: number
}

/**
 * Admission of guest writes: at most `bounds.bytes` (and `bounds.writes` writes) on the
 * disk and not yet journaled. A write larger than the byte bound is admitted alone, once
 * nothing else is pending, so it waits rather than never going. Closing refuses new writes
 * and waits until those admitted are journaled. Admitting and releasing are synchronous
 * (they run per write); only waiting is an effect.
 */
export const makeAdmission = <S>(bounds: AdmissionBounds, stopped: Deferred.Deferred<void, S>) => {
  const maxBytes = bounds.bytes
  const maxWrites = bounds.writes
  let pending = 0
  let pendingBytes = 0
  let closing = false
  const changes = makeChanges()
  /** Until the next release after this call (see `makeChanges`). */
  const waitForChange = (): Effect.Effect<void, S> => orStopped(changes.next(), stopped)
  const release = (n: number, bytes: number): void => {
    if (n === 0) return
    pending -= n
    pendingBytes -= bytes
    changes.fire()
  }
  const drained: Effect.Effect<void, S> = Effect.suspend(() =>
    pending === 0 ? Effect.void : Effect.zipRight(waitForChange(), drained)
  )
  return {
    isClosing: () => closing,
    /** Whether `n` more writes of `bytes` in all may be admitted now. */
    fits: (n: number, bytes: number): boolean =>
      (pending + n <= maxWrites && pendingBytes + bytes <= maxBytes) || (pending === 0 && n === 1),
    /** Admits `n` writes of `bytes` in all (checked with `fits`). */
    take: (n: number, bytes: number): void => {
      pending += n
      pendingBytes += bytes
    },
    /** Writes and bytes pending now. */
    pending: () => ({ writes: pending, bytes: pendingBytes }),
    waitForChange,
    release,
    close: Effect.suspend(() => {
      closing = true
      return drained
    })
  }
}

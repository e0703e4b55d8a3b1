/**
 * What FLUSH and FUA wait for (design §7): every write answered before is durable — for
 * the protected disk, on the local disk (`VirtualDisk.flush`, an fsync) with its event
 * durable in the filter's journal (`Replicator.flush`); for any device, its `flush`. It is
 * global — it covers every completed write, whichever connection sent it — which is what
 * lets the server advertise `NBD_FLAG_CAN_MULTI_CONN`.
 *
 * One sync runs at a time and callers share them (group commit): a caller needs a sync
 * that *started* after it asked, so callers arriving while one runs share the next.
 */
import { Effect } from "effect"

export interface Durability<E = unknown> {
  readonly sync: Effect.Effect<void, E>
}

/** Shares `once` (the device's flush) among the callers that arrive while one runs. */
export const make = <E>(once: Effect.Effect<void, E>): Effect.Effect<Durability<E>> =>
  Effect.gen(function* () {
    const lock = yield* Effect.makeSemaphore(1)
    // Owned by whoever holds `lock`.
    let started = 0
    let completed = 0
    return {
      sync: Effect.suspend(() => {
        const wanted = started + 1
        return lock.withPermits(1)(
          Effect.suspend(() => {
            if (completed >= wanted) return Effect.void
            const generation = ++started
            return Effect.tap(once, () => {
              completed = generation
            })
          })
        )
      })
    }
  })

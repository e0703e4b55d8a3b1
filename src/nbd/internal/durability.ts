/**
 * What FLUSH and FUA wait for (design §7): every write answered before is durable on the
 * local disk (`VirtualDisk.flush`, an fsync) and its event durable in the filter's
 * journal (`Replicator.flush`). Both are global — they cover every completed write,
 * whichever connection sent it — which is what lets the server advertise
 * `NBD_FLAG_CAN_MULTI_CONN`.
 *
 * One sync runs at a time and callers share them (group commit): a caller needs a sync
 * that *started* after it asked, so callers arriving while one runs share the next.
 */
import { Effect } from "effect"
import type { DiskError, VirtualDisk } from "../../adapters/VirtualDisk.js"
import type { Replicator, ReplicatorStopped } from "../../replicator/Replicator.js"
import type { Mutants } from "./mutants.js"

export interface Durability {
  readonly sync: Effect.Effect<void, DiskError | ReplicatorStopped>
}

export const make = (
  disk: VirtualDisk.Service,
  replicator: Replicator.Service,
  mutants: Pick<Mutants, "flushSkipsJournal">
): Effect.Effect<Durability> =>
  Effect.gen(function* () {
    const lock = yield* Effect.makeSemaphore(1)
    // Owned by whoever holds `lock`.
    let started = 0
    let completed = 0
    const once = mutants.flushSkipsJournal
      ? disk.flush
      : Effect.all([disk.flush, replicator.flush], { concurrency: 2, discard: true })
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

/**
 * The replicator's overlap gate: guest writes whose blocks overlap one on its way to the
 * disk wait for it, so the order the disk completes them in is the order the model
 * folds them in (a disk may apply two concurrent writes in one order and report them
 * in the other).
 */
import { Effect } from "effect"

/** A guest write's blocks while it is on its way to the disk, and who waits for it. */
export interface GateEntry {
  readonly first: number
  readonly last: number
  waiters: Array<() => void> | undefined
}

/**
 * Serialises guest writes whose ranges overlap, so completion order is queue order.
 * Synchronous checks, so a write that overlaps nothing (the usual case) costs no effect
 * step and allocates no waiter.
 */
export const makeOverlapGate = () => {
  const active = new Set<GateEntry>()
  return {
    blockerOf: (first: number, last: number): GateEntry | undefined => {
      for (const r of active) if (r.first <= last && first <= r.last) return r
      return undefined
    },
    enter: (first: number, last: number): GateEntry => {
      const entry: GateEntry = { first, last, waiters: undefined }
      active.add(entry)
      return entry
    },
    leave: (entry: GateEntry): void => {
      active.delete(entry)
      if (entry.waiters !== undefined) for (const wake of entry.waiters) wake()
    },
    /**
     * Until `blocker` leaves; the caller checks again (another may have entered). The
     * fiber may yield between finding the blocker and running this, so the blocker may
     * have left already: then nothing would wake it.
     */
    waitFor: (blocker: GateEntry) =>
      Effect.async<void>((resume) => {
        if (!active.has(blocker)) return resume(Effect.void)
        const wake = () => resume(Effect.void)
        const waiters = blocker.waiters ?? []
        blocker.waiters = waiters
        waiters.push(wake)
        return Effect.sync(() => {
          const i = waiters.indexOf(wake)
          if (i >= 0) waiters.splice(i, 1)
        })
      })
  }
}

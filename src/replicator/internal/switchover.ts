/**
 * The switchover hold (like a migration's switchover): when the drain is nearly done,
 * new guest writes wait for at most `holdMillis`, so the last blocks can be acked and
 * sync can resume under a steady write load. At most one hold per five such periods.
 * Decided by the loop after each batch; a timer ends the hold it began.
 */
import { Duration, Effect, Stream, SubscriptionRef } from "effect"
import * as State from "../../domain/State.js"
import type { Shared } from "./shared.js"

const setHeld = (shared: Shared, value: boolean): Effect.Effect<void> =>
  Effect.suspend(() => {
    shared.held = value
    return SubscriptionRef.set(shared.writesHeld, value)
  })

/** Begins or ends a hold after a batch left the state `s`, at `now`. */
export const switchover = (
  shared: Shared,
  settings: { readonly holdMillis: number; readonly window: number },
  s: State.State,
  now: number
): Effect.Effect<void> =>
  Effect.gen(function* () {
    const { holdMillis } = settings
    if (holdMillis <= 0) return
    const nearlyDone =
      s.mode === "resync" &&
      s.link === "up" &&
      s.markerSent &&
      s.owed === null &&
      State.obligationCount(s) <= settings.window
    if (shared.held && !nearlyDone) {
      yield* setHeld(shared, false)
      return
    }
    if (!shared.held && nearlyDone && now - shared.lastHoldAt >= 5 * holdMillis) {
      shared.lastHoldAt = now
      const id = ++shared.holdId
      yield* setHeld(shared, true)
      yield* Effect.forkDaemon(
        Effect.sleep(Duration.millis(holdMillis)).pipe(
          Effect.zipRight(Effect.suspend(() => (shared.holdId === id ? setHeld(shared, false) : Effect.void)))
        )
      )
    }
  })

/** Until no hold is on (the write path checks `shared.held` first). */
export const waitWhileHeld = (shared: Shared): Effect.Effect<void> =>
  shared.writesHeld.changes.pipe(
    Stream.filter((h) => !h),
    Stream.take(1),
    Stream.runDrain
  )

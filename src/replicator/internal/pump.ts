/**
 * The pump: when the loop asks (`pumpSignal`), it offers a pump tick with the drain
 * budget, a window's worth of blocks or, with a rate limit, what the token bucket allows,
 * and the checksum-resync threshold (`compareFrom`) unless comparisons are off.
 *
 * The bucket is hand-written, not Effect's `RateLimiter`: that one answers "wait until N
 * permits are free", the pump needs "how many are free now, up to a window" (a partial
 * budget as soon as one block's worth has accrued). With `withCost(window)` each tick
 * would wait for a whole window, making the drain bursty, and a window larger than a
 * second's rate would never be granted. Its token bucket also refills one permit per
 * whole millisecond (`ceil(interval / limit)`), one timer wake each: at 64 KiB blocks,
 * `--drain-rate 100MiB` (1600 blocks/s) would be held to 1000 blocks/s, 62.5 MiB/s (issue 16).
 */
import { Clock, Duration, Effect, Queue } from "effect"
import type { Config } from "../../domain/Config.js"
import * as Input from "../../domain/Input.js"
import { requestBlocks } from "./journalStage.js"
import type { Shared } from "./shared.js"

export const pump = (
  shared: Shared,
  settings: {
    readonly config: Config
    readonly drainBytesPerSecond: number | undefined
    /** Compare instead of send while at least this many blocks are owed (checksum-based resync). */
    readonly compareFrom: number | undefined
  }
): Effect.Effect<never> =>
  Effect.gen(function* () {
    const { config, drainBytesPerSecond: rate } = settings
    let tokens = 0
    let refilledAt = yield* Clock.currentTimeMillis
    // Blocks are compared in runs of one checksum request each (one event each way, trace version 3).
    const compareRun = requestBlocks(config.blockSize)
    for (;;) {
      yield* Queue.take(shared.pumpSignal)
      let budget = config.window
      if (rate !== undefined) {
        for (;;) {
          const now = yield* Clock.currentTimeMillis
          tokens = Math.min(rate, tokens + ((now - refilledAt) / 1000) * rate)
          refilledAt = now
          budget = Math.min(config.window, Math.floor(tokens / config.blockSize))
          if (budget > 0) break
          yield* Effect.sleep(Duration.millis(Math.max(1, ((config.blockSize - tokens) / rate) * 1000)))
        }
        tokens -= budget * config.blockSize
      }
      // Off for the run once the receiver showed it does not answer checksum requests.
      const compareFrom = shared.compareOff ? undefined : settings.compareFrom
      shared.inbox.offer({ _tag: "Input", input: Input.pumpTick(budget, compareFrom, compareRun) })
    }
  })

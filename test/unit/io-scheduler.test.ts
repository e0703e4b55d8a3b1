import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as IoScheduler from "../../src/internal/IoScheduler.js"

describe("IoScheduler", () => {
  it.effect("under a TestClock the default keeps the caller's scheduler", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* IoScheduler.defaultFor, "inherit")
    })
  )

  it.live("with the live clock the default is the I/O scheduler", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* IoScheduler.defaultFor, IoScheduler.scheduler)
    })
  )

  it.live("a fiber that never waits does not keep I/O callbacks from running", () =>
    Effect.gen(function* () {
      // On Effect 3's default scheduler such a fiber holds off I/O for up to 2048 rounds
      // at a time; on this one an immediate scheduled by Node runs between its batches.
      let spins = 0
      let ranAfter: number | undefined
      setImmediate(() => {
        ranAfter = spins
      })
      yield* Effect.whileLoop({
        while: () => ranAfter === undefined && spins < 1_000_000,
        body: () => Effect.yieldNow(),
        step: () => {
          spins++
        }
      }).pipe(IoScheduler.withIoScheduler)
      assert.isDefined(ranAfter, "the callback never ran")
      assert.isBelow(ranAfter!, 100)
    })
  )
})

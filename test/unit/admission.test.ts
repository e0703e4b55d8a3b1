/**
 * The replicator's admission of guest writes (src/replicator/internal/admission.ts): at
 * most `max` writes pending, a waiter is woken by the release after it looked, even when
 * its fiber yields before the wait starts, and closing waits until nothing is pending.
 */
import { Deferred, Effect, Exit, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import { makeAdmission } from "../../src/replicator/internal/admission.js"

const settles = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.runPromise(
    Effect.timeoutFail(effect, { duration: "1 second", onTimeout: () => new Error("never woken") })
  )

describe("the admission of guest writes", () => {
  it("counts free slots as writes take and release them", () => {
    const admission = makeAdmission(3, Deferred.unsafeMake<void, string>(Effect.runSync(Effect.fiberId)))
    expect(admission.free()).toBe(3)
    admission.take(3)
    expect(admission.free()).toBe(0)
    admission.release(2)
    expect(admission.free()).toBe(2)
  })

  it("a writer that found no slot is woken by a release that lands before its wait starts", async () => {
    const stopped = Effect.runSync(Deferred.make<void, string>())
    const admission = makeAdmission(1, stopped)
    admission.take(1)
    expect(admission.free()).toBe(0)
    const wait = admission.waitForChange()
    // The writer's fiber yields here; the journal releases the slot meanwhile.
    admission.release(1)
    await expect(settles(wait)).resolves.toBeUndefined()
  })

  it("closing waits until every admitted write is released, and a stop ends any wait", async () => {
    const stopped = Effect.runSync(Deferred.make<void, string>())
    const admission = makeAdmission(4, stopped)
    admission.take(2)
    await settles(
      Effect.gen(function* () {
        const closing = yield* Effect.fork(admission.close)
        yield* Effect.yieldNow()
        expect(admission.isClosing()).toBe(true)
        admission.release(1)
        yield* Effect.yieldNow()
        expect(closing.unsafePoll()).toBeNull()
        admission.release(1)
        expect(Exit.isSuccess(yield* Fiber.await(closing))).toBe(true)
        admission.take(4)
        const waiting = yield* Effect.fork(admission.waitForChange())
        yield* Deferred.fail(stopped, "stopped")
        expect(yield* Fiber.await(waiting)).toEqual(Exit.fail("stopped"))
      })
    )
  })
})

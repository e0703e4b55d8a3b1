/**
 * The replicator's admission of guest writes (src/replicator/internal/admission.ts): at
 * most so many bytes pending (and writes, when asked), a larger write alone; a waiter is
 * woken by the release after it looked, even when its fiber yields before the wait
 * starts, and closing waits until nothing is pending.
 */
import { Deferred, Effect, Exit, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import { makeAdmission } from "../../src/replicator/internal/admission.js"

const settles = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.runPromise(
    Effect.timeoutFail(effect, { duration: "1 second", onTimeout: () => new Error("never woken") })
  )

const KiB = 1024
const stoppedNever = () => Deferred.unsafeMake<void, string>(Effect.runSync(Effect.fiberId))

describe("the admission of guest writes", () => {
  it("bounds the bytes pending, not their number", () => {
    const admission = makeAdmission({ bytes: 64 * KiB, writes: Number.POSITIVE_INFINITY }, stoppedNever())
    // Sixteen 4 KiB writes fill it; a seventeenth does not fit, nor does one more byte.
    expect(admission.fits(16, 64 * KiB)).toBe(true)
    admission.take(16, 64 * KiB)
    expect(admission.fits(1, 512)).toBe(false)
    admission.release(15, 60 * KiB)
    expect(admission.pending()).toEqual({ writes: 1, bytes: 4 * KiB })
    // Room for 60 KiB: 120 writes of 512 bytes fit, whatever their number; 61 KiB does not.
    expect(admission.fits(120, 60 * KiB)).toBe(true)
    expect(admission.fits(1, 61 * KiB)).toBe(false)
  })

  it("admits a write larger than the bound alone, once nothing else is pending", () => {
    const admission = makeAdmission({ bytes: 64 * KiB, writes: Number.POSITIVE_INFINITY }, stoppedNever())
    expect(admission.fits(1, 1024 * KiB)).toBe(true)
    expect(admission.fits(2, 1024 * KiB)).toBe(false)
    admission.take(1, 4 * KiB)
    expect(admission.fits(1, 1024 * KiB)).toBe(false)
  })

  it("bounds their number too when asked (the deprecated maxPendingWrites)", () => {
    const admission = makeAdmission({ bytes: 1024 * KiB, writes: 3 }, stoppedNever())
    expect(admission.fits(3, 12 * KiB)).toBe(true)
    admission.take(3, 12 * KiB)
    expect(admission.fits(1, 512)).toBe(false)
    admission.release(2, 8 * KiB)
    expect(admission.fits(2, 8 * KiB)).toBe(true)
    expect(admission.fits(3, 12 * KiB)).toBe(false)
  })

  it("a writer that found no slot is woken by a release that lands before its wait starts", async () => {
    const stopped = Effect.runSync(Deferred.make<void, string>())
    const admission = makeAdmission({ bytes: 4 * KiB, writes: Number.POSITIVE_INFINITY }, stopped)
    admission.take(1, 4 * KiB)
    expect(admission.fits(1, 4 * KiB)).toBe(false)
    const wait = admission.waitForChange()
    // The writer's fiber yields here; the journal releases the bytes meanwhile.
    admission.release(1, 4 * KiB)
    await expect(settles(wait)).resolves.toBeUndefined()
  })

  it("closing waits until every admitted write is released, and a stop ends any wait", async () => {
    const stopped = Effect.runSync(Deferred.make<void, string>())
    const admission = makeAdmission({ bytes: 16 * KiB, writes: Number.POSITIVE_INFINITY }, stopped)
    admission.take(2, 8 * KiB)
    await settles(
      Effect.gen(function* () {
        const closing = yield* Effect.fork(admission.close)
        yield* Effect.yieldNow()
        expect(admission.isClosing()).toBe(true)
        admission.release(1, 4 * KiB)
        yield* Effect.yieldNow()
        expect(closing.unsafePoll()).toBeNull()
        admission.release(1, 4 * KiB)
        expect(Exit.isSuccess(yield* Fiber.await(closing))).toBe(true)
        admission.take(4, 16 * KiB)
        const waiting = yield* Effect.fork(admission.waitForChange())
        yield* Deferred.fail(stopped, "stopped")
        expect(yield* Fiber.await(waiting)).toEqual(Exit.fail("stopped"))
      })
    )
  })
})

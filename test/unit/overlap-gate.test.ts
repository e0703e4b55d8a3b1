/**
 * The replicator's overlap gate (src/replicator/internal/overlapGate.ts): which write
 * blocks which, and that a waiter is always woken — including one that starts waiting
 * after its blocker left (its fiber yielded in between), which once waited for ever.
 */
import { Effect, Exit, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import { makeOverlapGate } from "../../src/replicator/internal/overlapGate.js"

const settles = <A>(effect: Effect.Effect<A>) =>
  Effect.runPromise(
    Effect.timeoutFail(effect, { duration: "1 second", onTimeout: () => new Error("never woken") })
  )

describe("the overlap gate", () => {
  it("a write overlapping one in progress is blocked by it; disjoint ones are not", () => {
    const gate = makeOverlapGate()
    const a = gate.enter(2, 4)
    expect(gate.blockerOf(4, 9)).toBe(a)
    expect(gate.blockerOf(0, 2)).toBe(a)
    expect(gate.blockerOf(5, 9)).toBeUndefined()
    expect(gate.blockerOf(0, 1)).toBeUndefined()
    gate.leave(a)
    expect(gate.blockerOf(2, 4)).toBeUndefined()
  })

  it("wakes every waiter when the blocker leaves", async () => {
    const gate = makeOverlapGate()
    const a = gate.enter(0, 0)
    const woken: Array<number> = []
    await settles(
      Effect.gen(function* () {
        const waiters = yield* Effect.forEach([1, 2, 3], (n) =>
          Effect.fork(Effect.map(gate.waitFor(a), () => woken.push(n)))
        )
        yield* Effect.yieldNow()
        expect(woken).toEqual([])
        gate.leave(a)
        yield* Fiber.joinAll(waiters)
      })
    )
    expect(woken.sort()).toEqual([1, 2, 3])
  })

  it("a waiter whose blocker left before it began to wait goes on at once", async () => {
    const gate = makeOverlapGate()
    const a = gate.enter(0, 3)
    const found = gate.blockerOf(1, 1)!
    // The write's fiber yields here; the blocker's write completes meanwhile.
    gate.leave(a)
    await expect(settles(gate.waitFor(found))).resolves.toBeUndefined()
  })

  it("an interrupted waiter is forgotten: leaving wakes only the others", async () => {
    const gate = makeOverlapGate()
    const a = gate.enter(0, 0)
    await settles(
      Effect.gen(function* () {
        const gone = yield* Effect.fork(gate.waitFor(a))
        const stays = yield* Effect.fork(gate.waitFor(a))
        yield* Effect.yieldNow()
        yield* Fiber.interrupt(gone)
        expect(a.waiters).toHaveLength(1)
        gate.leave(a)
        expect(Exit.isSuccess(yield* Fiber.await(stays))).toBe(true)
      })
    )
  })
})

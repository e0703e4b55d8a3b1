import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as fc from "fast-check"
import * as Inbox from "../../src/internal/inbox.js"

describe("Inbox (single-consumer queue of the per-record paths)", () => {
  it("takeAll returns everything offered since the last take, in order, whatever the interleaving", async () => {
    // Each step offers some items or takes; every item comes out once, in offer order.
    const steps = fc.array(fc.oneof(fc.array(fc.nat(), { maxLength: 5 }), fc.constant("take" as const)), {
      maxLength: 40
    })
    await fc.assert(
      fc.asyncProperty(steps, async (script) => {
        const inbox = Inbox.make<number>()
        const offered: Array<number> = []
        const taken: Array<number> = []
        for (const step of script) {
          if (step === "take") {
            if (inbox.size() > 0) taken.push(...(await Effect.runPromise(inbox.takeAll)))
          } else if (step.length === 1) {
            inbox.offer(step[0]!)
            offered.push(step[0]!)
          } else {
            inbox.offerAll(step)
            offered.push(...step)
          }
        }
        if (inbox.size() > 0) taken.push(...(await Effect.runPromise(inbox.takeAll)))
        expect(taken).toEqual(offered)
        expect(inbox.size()).toBe(0)
      })
    )
  })

  it.effect("a take waits while the inbox is empty and wakes on the next offer", () =>
    Effect.gen(function* () {
      const inbox = Inbox.make<string>()
      const taker = yield* Effect.fork(inbox.takeAll)
      yield* Effect.yieldNow()
      expect(taker.unsafePoll()).toBeNull()
      inbox.offerAll([])
      yield* Effect.yieldNow()
      expect(taker.unsafePoll()).toBeNull()
      inbox.offer("a")
      inbox.offer("b")
      expect(yield* Fiber.join(taker)).toEqual(["a", "b"])
    })
  )

  it.effect("an interrupted take loses nothing: the next take gets what was offered", () =>
    Effect.gen(function* () {
      const inbox = Inbox.make<number>()
      const taker = yield* Effect.fork(inbox.takeAll)
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(taker)
      inbox.offer(1)
      expect(yield* inbox.takeAll).toEqual([1])
    })
  )
})

/**
 * The replicator's published Status (src/replicator/internal/published.ts): `changes`
 * gives the value at subscription, then every value set after it, none missed, to every
 * subscriber; and `untilState` (shared.ts) wakes on the batch that makes its condition
 * hold, even one decided between its check and its wait.
 */
import { Chunk, Deferred, Effect, Either, Fiber, Stream } from "effect"
import { describe, expect, it } from "vitest"
import * as Config from "../../src/domain/Config.js"
import * as State from "../../src/domain/State.js"
import * as Published from "../../src/replicator/internal/published.js"
import { makeShared, untilState } from "../../src/replicator/internal/shared.js"

const settles = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.runPromise(
    Effect.timeoutFail(effect, { duration: "5 seconds", onTimeout: () => new Error("never woken") })
  )

describe("the published status", () => {
  it("changes: the value now, then every value set, to each subscriber", async () => {
    const result = await settles(
      Effect.scoped(
        Effect.gen(function* () {
          const cell = yield* Published.make(0)
          yield* cell.set(1)
          const take = (n: number) =>
            Effect.gen(function* () {
              // Subscribed once the first value came: the current one is read after subscribing.
              const first = yield* Deferred.make<void>()
              const fiber = yield* Effect.fork(
                Stream.runCollect(
                  Stream.take(
                    Stream.tap(cell.changes, () => Deferred.succeed(first, undefined)),
                    n
                  )
                )
              )
              yield* Deferred.await(first)
              return fiber
            })
          const a = yield* take(4)
          const b = yield* take(4)
          for (const v of [2, 3, 4]) yield* cell.set(v)
          return [Chunk.toArray(yield* Fiber.join(a)), Chunk.toArray(yield* Fiber.join(b)), cell.get()]
        })
      )
    )
    expect(result).toEqual([[1, 2, 3, 4], [1, 2, 3, 4], 4])
  })

  it("untilState returns at once when the state holds, else on the batch that makes it hold", async () => {
    const config = Either.getOrThrow(
      Config.make({
        blockSize: 4096,
        blockCount: 16,
        window: 4,
        congestionLimit: 1 << 20,
        initial: "in-sync"
      })
    )
    const state = State.initial(config)
    await settles(
      Effect.gen(function* () {
        const shared = yield* makeShared({
          state,
          position: 0,
          pending: { bytes: 1 << 20, writes: Number.POSITIVE_INFINITY },
          activity: undefined,
          digest: "sha256"
        })
        yield* untilState(shared, () => true)
        let holds = false
        const waiting = yield* Effect.fork(untilState(shared, () => holds))
        yield* Effect.yieldNow()
        // A batch that changes nothing the waiter looks at: it checks again and keeps waiting.
        shared.decided.fire()
        yield* Effect.yieldNow()
        expect(waiting.unsafePoll()).toBeNull()
        holds = true
        shared.decided.fire()
        yield* Fiber.join(waiting)
      })
    )
  })
})

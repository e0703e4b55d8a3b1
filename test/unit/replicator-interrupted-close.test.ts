/**
 * The replicator's scope closed by interrupting the fiber that holds it — what a CLI's
 * SIGINT/SIGTERM does (`NodeRuntime.runMain` interrupts the main fiber): the close must
 * still drain every write the disk took into the journal and record a clean close.
 * (Its drain waits are interruptible; on the interrupted fiber they gave way at once,
 * and every `serve` or `replicate` stopped by a signal started unclean next time.)
 */
import { Deferred, Effect, Either, Fiber, FiberId, Layer, Stream } from "effect"
import { describe, expect, it } from "vitest"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import * as Replicator from "../../src/replicator/Replicator.js"

const config = Either.getOrThrow(
  Config.make({ blockSize: 4096, blockCount: 64, window: 4, congestionLimit: 1 << 20 })
)

describe("closing the replicator by interruption", () => {
  it("drains every write into the journal and records a clean close", async () => {
    const store = EventJournal.makeMemoryStore()
    const layer = Replicator.layer({ diskId: "d", config }).pipe(
      Layer.provideMerge(
        Layer.mergeAll(
          VirtualDisk.layerMemory(config),
          EventJournal.layerMemory({ store }),
          LogReceiver.layerMemory()
        )
      )
    )
    const written = Deferred.unsafeMake<void>(FiberId.none)
    const fiber = Effect.runFork(
      Effect.scoped(
        Effect.gen(function* () {
          const context = yield* Layer.build(layer)
          const replicator = yield* Effect.provide(Replicator.Replicator, context)
          yield* Effect.forEach(
            Array.from({ length: 32 }, (_, i) => i),
            (i) => replicator.write(i * 4096, new Uint8Array(4096).fill(i + 1)),
            { concurrency: 8, discard: true }
          )
          yield* Deferred.succeed(written, undefined)
          return yield* Effect.never
        })
      )
    )
    await Effect.runPromise(Deferred.await(written))
    await Effect.runPromise(Fiber.interrupt(fiber))
    const journal = EventJournal.makeMemory(store)
    const events = await Effect.runPromise(
      journal.read(0).pipe(
        Stream.runCollect,
        Effect.map((entries) => [...entries].map((e) => e.event))
      )
    )
    const writes = events.filter((e) => e.type === "WriteStreamed" || e.type === "WriteTracked")
    expect(writes.length).toBe(32)
    const last = await Effect.runPromise(
      journal.beginRun({
        blockSize: config.blockSize,
        blockCount: config.blockCount,
        initial: config.initial
      })
    )
    expect(last._tag).toBe("Clean")
  })
})

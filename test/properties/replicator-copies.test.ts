/**
 * The guest-data copies the replicator streams live come from a pool and are reused
 * once the connection has written them (design §3: a record carries the bytes that
 * were written). Bursts of concurrent writes of 4–64 KiB, one by one or in guest queues,
 * with a journal slow enough that records wait while later writes take copies: at
 * quiescence the replica must equal the disk. The mutant that hands a copy back as soon
 * as the disk has it (`unsafeReleaseCopiesEarly`) lets a later write overwrite a record
 * still waiting to be sent, and fails the same property.
 */
import * as fc from "fast-check"
import { Duration, Effect, Either, Layer } from "effect"
import { describe, expect, it } from "vitest"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import * as Mutants from "../../src/replicator/internal/mutants.js"
import * as Replicator from "../../src/replicator/Replicator.js"
import { numRuns } from "../support/arbitraries.js"

const BS = 65536
const BLOCKS = 64
const SECTORS = (BS * BLOCKS) / 512
// No pull-ahead: a resync would re-read the disk and hide a corrupted live record.
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: BLOCKS, window: 8, congestionLimit: 1 << 30, initial: "in-sync" })
)

interface Burst {
  readonly writes: ReadonlyArray<{ readonly sector: number; readonly sectors: number }>
  /** Absent: one by one; else guest queues of this many writes. */
  readonly queue: number | undefined
  /** Milliseconds each journal append takes. */
  readonly appendMillis: number
}

const burst: fc.Arbitrary<Burst> = fc.record({
  writes: fc.array(
    fc
      .record({ sector: fc.nat({ max: SECTORS - 1 }), sectors: fc.integer({ min: 8, max: 128 }) })
      .map((w) => ({ ...w, sectors: Math.min(w.sectors, SECTORS - w.sector) })),
    { minLength: 20, maxLength: 60 }
  ),
  queue: fc.option(fc.integer({ min: 2, max: 16 }), { nil: undefined }),
  appendMillis: fc.integer({ min: 0, max: 4 })
})

const run = (bursts: ReadonlyArray<Burst>, mutant: boolean) =>
  Effect.scoped(
    Effect.gen(function* () {
      const memory = EventJournal.makeMemory(EventJournal.makeMemoryStore())
      let appendMillis = 0
      const slowJournal = Layer.succeed(EventJournal.EventJournal, {
        ...memory,
        append: (events) =>
          Effect.zipRight(Effect.sleep(Duration.millis(appendMillis)), memory.append(events))
      })
      const context = yield* Layer.build(
        Replicator.layer({ diskId: "d", config }).pipe(
          Layer.provide(Mutants.layer({ releaseCopiesEarly: mutant })),
          Layer.provideMerge(
            Layer.mergeAll(VirtualDisk.layerMemory(config), slowJournal, LogReceiver.layerMemory({}))
          )
        )
      )
      const replicator = yield* Effect.provide(Replicator.Replicator, context)
      const disk = yield* Effect.provide(VirtualDisk.VirtualDisk, context)
      const receiver = yield* Effect.provide(LogReceiver.MemoryReceiver, context)
      yield* replicator.quiesce
      let fill = 0
      for (const b of bursts) {
        appendMillis = b.appendMillis
        const requests = b.writes.map((w): Replicator.GuestWrite => {
          fill = (fill % 255) + 1
          return { offset: w.sector * 512, bytes: new Uint8Array(w.sectors * 512).fill(fill) }
        })
        const size = b.queue ?? 1
        const batches = Array.from({ length: Math.ceil(requests.length / size) }, (_, i) =>
          requests.slice(i * size, (i + 1) * size)
        )
        yield* Effect.forEach(
          batches,
          (batch) =>
            b.queue === undefined
              ? replicator.write(batch[0]!.offset, batch[0]!.bytes)
              : replicator.writeAll(batch),
          { concurrency: "unbounded", discard: true }
        )
      }
      yield* replicator.quiesce
      return {
        disk: yield* disk.read(0, BS * BLOCKS),
        replica: yield* receiver.image("d")
      }
    })
  )

const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0

describe("pooled guest-data copies", () => {
  it("whatever the timing, every live record carries the bytes written: replica = disk at quiescence", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(burst, { minLength: 1, maxLength: 3 }), async (bursts) => {
        const { disk, replica } = await Effect.runPromise(run(bursts, false))
        expect(same(disk, replica)).toBe(true)
      }),
      { numRuns: numRuns(25) }
    )
  }, 120_000)

  it("MUTANT: handing a copy back once the disk has it fails the same property", async () => {
    const failure = await fc
      .assert(
        fc.asyncProperty(fc.array(burst, { minLength: 1, maxLength: 3 }), async (bursts) => {
          const { disk, replica } = await Effect.runPromise(run(bursts, true))
          return same(disk, replica)
        }),
        { numRuns: 100, endOnFailure: true }
      )
      .then(
        () => undefined,
        (error: unknown) => error
      )
    expect(failure, "the mutant must be caught").toBeDefined()
    // Caught by a different replica, not by an error along the way.
    expect(String(failure)).not.toMatch(/Got error/)
  }, 120_000)
})

/**
 * Overlapping guest writes (design §3, docs/replicator.md): a real disk may apply two
 * concurrent writes in one order and report their completion in the other (two
 * thread-pool `pwrite`s, a device queue). The filter folds writes in completion order,
 * so it must not let a write overlap one still in progress: at quiescence the replica
 * must equal the disk, whatever the disk's timing. The disk here applies each write
 * after a drawn delay and reports it after another. A round's writes arrive one by one
 * (`write`) or in guest queues (`writeAll` batches, themselves concurrent). Fibers
 * yield after a drawn number of steps, so a write may lose the processor anywhere, e.g.
 * between finding the write it overlaps and waiting for it; every write must still
 * complete (a write whose blocker had left before it began to wait once waited for
 * ever). The mutant without the overlap gate fails the same property.
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

const BS = 4096
const BLOCKS = 8
const SECTORS = (BS * BLOCKS) / 512
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: BLOCKS, window: 4, congestionLimit: 1 << 24, initial: "in-sync" })
)

interface Write {
  readonly sector: number
  readonly sectors: number
  /** Milliseconds before the disk applies the write, then before it reports it done. */
  readonly applyAfter: number
  readonly reportAfter: number
}

interface Round {
  readonly writes: ReadonlyArray<Write>
  /** Absent: each write on its own; else the sizes of the guest queues the writes arrive in. */
  readonly queues: ReadonlyArray<number> | undefined
}

/** Rounds of concurrent writes crowded onto a small disk, so most of them overlap. */
const rounds: fc.Arbitrary<ReadonlyArray<Round>> = fc.array(
  fc.record({
    writes: fc.array(
      fc
        .record({
          sector: fc.integer({ min: 0, max: SECTORS - 1 }),
          sectors: fc.integer({ min: 1, max: 16 }),
          applyAfter: fc.integer({ min: 0, max: 3 }),
          reportAfter: fc.integer({ min: 0, max: 3 })
        })
        .map((w) => ({ ...w, sectors: Math.min(w.sectors, SECTORS - w.sector) })),
      { minLength: 2, maxLength: 6 }
    ),
    queues: fc.option(fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 6 }), {
      nil: undefined
    })
  }),
  { minLength: 1, maxLength: 5 }
)

/** The round's writes cut into consecutive batches of the drawn sizes (the last takes the rest). */
const batchesOf = (round: Round): ReadonlyArray<ReadonlyArray<Write>> => {
  if (round.queues === undefined) return round.writes.map((w) => [w])
  const out: Array<ReadonlyArray<Write>> = []
  let at = 0
  for (const size of round.queues) {
    if (at >= round.writes.length) break
    out.push(round.writes.slice(at, at + size))
    at += size
  }
  if (at < round.writes.length) out.push(round.writes.slice(at))
  return out
}

/** A memory disk whose writes land after `applyAfter` and complete `reportAfter` later. */
const slowDisk = (
  memory: VirtualDisk.MemoryDisk,
  timingOf: (bytes: Uint8Array) => Write | undefined
): VirtualDisk.VirtualDisk.Service => {
  const pause = (ms: number) => (ms === 0 ? Effect.yieldNow() : Effect.sleep(Duration.millis(ms)))
  return {
    ...memory,
    // Only the asynchronous write can land late: the write path must use it.
    writeSync: undefined,
    write: (offset, bytes) => {
      const w = timingOf(bytes)
      return pause(w?.applyAfter ?? 0).pipe(
        Effect.zipRight(memory.write(offset, bytes)),
        Effect.zipLeft(pause(w?.reportAfter ?? 0))
      )
    }
  }
}

/**
 * Steps a fiber runs before it yields: small ones move the yields around. (Effect 3's
 * runtime itself stalls below about a dozen, a yield costs steps of its own, so the
 * least drawn is 16.)
 */
const opsBeforeYield = fc.constantFrom(16, 17, 19, 20, 23, 27, 32, 48, 64, 2048)

/** Runs the rounds, quiesces, and returns the disk and the restored replica. */
const run = (writes: ReadonlyArray<Round>, mutant: boolean, ops = 2048) =>
  Effect.scoped(
    Effect.gen(function* () {
      const memory = VirtualDisk.makeMemory(config)
      // Each write's bytes are its fill value (the filter hands the disk its own copy).
      const byFill = new Map<number, Write>()
      const disk = slowDisk(memory, (bytes) => byFill.get(bytes[0]!))
      const world = Layer.mergeAll(
        Layer.succeed(VirtualDisk.VirtualDisk, disk),
        EventJournal.layerMemory(),
        LogReceiver.layerMemory({})
      )
      const context = yield* Layer.build(
        Replicator.layer({ diskId: "d", config }).pipe(
          Layer.provide(Mutants.layer({ skipOverlapGate: mutant })),
          Layer.provideMerge(world)
        )
      )
      const replicator = yield* Effect.provide(Replicator.Replicator, context)
      const receiver = yield* Effect.provide(LogReceiver.MemoryReceiver, context)
      yield* replicator.quiesce
      let fill = 0
      const request = (w: Write): Replicator.GuestWrite => {
        fill = (fill % 250) + 1
        byFill.set(fill, w)
        return { offset: w.sector * 512, bytes: new Uint8Array(w.sectors * 512).fill(fill) }
      }
      for (const round of writes)
        yield* Effect.forEach(
          batchesOf(round),
          (batch) => {
            const requests = batch.map(request)
            return round.queues === undefined
              ? replicator.write(requests[0]!.offset, requests[0]!.bytes)
              : replicator.writeAll(requests)
          },
          { concurrency: "unbounded", discard: true }
        )
      yield* replicator.quiesce
      const image = new Uint8Array(BS * BLOCKS)
      for (let b = 0; b < BLOCKS; b++) image.set(yield* memory.readBlock(b), b * BS)
      return { disk: image, replica: yield* receiver.image("d") }
    })
  ).pipe(
    Effect.withMaxOpsBeforeYield(ops),
    Effect.timeoutFail({
      duration: "10 seconds",
      onTimeout: () => new Error("a guest write never completed")
    })
  )

const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i])

describe("overlapping guest writes", () => {
  it("whatever order the disk applies and reports them in, the replica equals the disk at quiescence", async () => {
    await fc.assert(
      fc.asyncProperty(rounds, opsBeforeYield, async (writes, ops) => {
        const { disk, replica } = await Effect.runPromise(run(writes, false, ops))
        expect(sameBytes(disk, replica)).toBe(true)
      }),
      { numRuns: numRuns(40) }
    )
  })

  it("MUTANT: without the overlap gate the same property fails", async () => {
    const failure = await fc
      .assert(
        fc.asyncProperty(rounds, async (writes) => {
          const { disk, replica } = await Effect.runPromise(run(writes, true))
          return sameBytes(disk, replica)
        }),
        { numRuns: 200 }
      )
      .then(
        () => undefined,
        (error: unknown) => error
      )
    expect(failure, "the mutant must be caught").toBeDefined()
    // Caught by a different replica, not by an error along the way.
    expect(String(failure)).not.toMatch(/Got error/)
  })
})

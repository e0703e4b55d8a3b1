/**
 * The whole replicator (decision loop, journal, sender, link supervisor) against
 * memory layers under TestClock, with fault schedules drawn by fast-check: no
 * write is lost (the receiver's image equals the disk at quiescence), sync
 * resumes after every fault once the link is healthy, every journaled event is
 * legal, and a restart of the filter mid-resync loses nothing.
 */
import { Duration, Effect, Either, Exit, Fiber, Layer, Scope, TestClock, TestContext } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as ActivityLog from "../../src/adapters/ActivityLog.js"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import type * as Event from "../../src/domain/Event.js"
import * as Legality from "../../src/domain/Legality.js"
import * as State from "../../src/domain/State.js"
import * as Replicator from "../../src/replicator/Replicator.js"
import { numRuns } from "../support/arbitraries.js"

type Op =
  | {
      readonly _tag: "Write"
      readonly block: number
      readonly sectors: number
      readonly at: number
      readonly fill: number
    }
  | { readonly _tag: "Burst"; readonly blocks: ReadonlyArray<number>; readonly fill: number }
  | { readonly _tag: "Tick"; readonly millis: number }
  | { readonly _tag: "Flush" }
  | { readonly _tag: "DropConnection" }
  | { readonly _tag: "DropNextRecord" }
  | { readonly _tag: "StallAcks"; readonly on: boolean }
  | { readonly _tag: "ReceiverRestart"; readonly loseUnacked: boolean }
  | { readonly _tag: "FilterRestart" }
  /** The filter dies while guest writes are in progress: the next start is unclean. */
  | { readonly _tag: "CrashDuringBurst"; readonly blocks: ReadonlyArray<number>; readonly fill: number }

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 30,
    arbitrary: fc.record({
      _tag: fc.constant("Write" as const),
      block: fc.nat(),
      sectors: fc.integer({ min: 1, max: 16 }),
      at: fc.nat({ max: 7 }),
      fill: fc.integer({ min: 1, max: 255 })
    })
  },
  {
    weight: 6,
    arbitrary: fc.record({
      _tag: fc.constant("Burst" as const),
      blocks: fc.array(fc.nat(), { minLength: 2, maxLength: 12 }),
      fill: fc.integer({ min: 1, max: 255 })
    })
  },
  {
    weight: 10,
    arbitrary: fc.record({ _tag: fc.constant("Tick" as const), millis: fc.integer({ min: 1, max: 400 }) })
  },
  { weight: 8, arbitrary: fc.constant({ _tag: "Flush" as const }) },
  { weight: 3, arbitrary: fc.constant({ _tag: "DropConnection" as const }) },
  { weight: 2, arbitrary: fc.constant({ _tag: "DropNextRecord" as const }) },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("StallAcks" as const), on: fc.boolean() }) },
  {
    weight: 2,
    arbitrary: fc.record({ _tag: fc.constant("ReceiverRestart" as const), loseUnacked: fc.boolean() })
  },
  { weight: 2, arbitrary: fc.constant({ _tag: "FilterRestart" as const }) },
  {
    weight: 2,
    arbitrary: fc.record({
      _tag: fc.constant("CrashDuringBurst" as const),
      blocks: fc.array(fc.nat(), { minLength: 1, maxLength: 8 }),
      fill: fc.integer({ min: 1, max: 255 })
    })
  }
)

const scenario = fc.record({
  blockCount: fc.integer({ min: 2, max: 24 }),
  window: fc.integer({ min: 1, max: 4 }),
  congestionLimit: fc.constantFrom(8192, 32768, 1 << 20),
  ack: fc.constantFrom("immediate" as const, "on-flush" as const),
  // 0 turns the switchover hold off; otherwise guest writes may wait for the clock.
  switchoverHold: fc.constantFrom(0, 30),
  // An activity log (two blocks per extent) of this many extents, or none.
  activityExtents: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
  ops: fc.array(op, { maxLength: 40 })
})
type Scenario = typeof scenario extends fc.Arbitrary<infer A> ? A : never

const DISK = "disk-under-test"
const BS = 4096

const runScenario = (s: Scenario) =>
  Effect.gen(function* () {
    const config = Either.getOrThrow(
      Config.make({
        blockSize: BS,
        blockCount: s.blockCount,
        window: s.window,
        congestionLimit: s.congestionLimit
      })
    )
    const journalStore = EventJournal.makeMemoryStore()
    const logStore = ActivityLog.makeMemoryStore()
    const trace: Array<Event.Event> = []
    const world = yield* Layer.build(
      Layer.mergeAll(VirtualDisk.layerMemory(config), LogReceiver.layerMemory({ ack: s.ack }))
    )
    const control = Effect.provide(LogReceiver.MemoryReceiver, world)
    const receiver = yield* control
    const disk = yield* Effect.provide(VirtualDisk.VirtualDisk, world)

    // A crash: from here nothing more becomes durable in the journal (the run stays open).
    let crashed = false
    const journalLayer = Layer.sync(EventJournal.EventJournal, () => {
      const memory = EventJournal.makeMemory(journalStore)
      const dead = Effect.fail(new EventJournal.JournalIoError({ op: "append", cause: "crashed" }))
      return {
        ...memory,
        append: (events: ReadonlyArray<Event.Event>) => (crashed ? dead : memory.append(events)),
        endRun: Effect.suspend(() => (crashed ? dead : memory.endRun))
      }
    })

    /** Starts a filter over the same disk, journal and receiver (a restart reuses the journal). */
    const start = () =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const layer = Replicator.layer({
          diskId: DISK,
          config,
          ackTimeout: "1 second",
          switchoverHold: Duration.millis(s.switchoverHold),
          ...(s.activityExtents === undefined ? {} : { activityExtents: s.activityExtents }),
          onEvents: (events) => Effect.sync(() => trace.push(...events))
        }).pipe(
          Layer.provide(
            Layer.mergeAll(
              Layer.succeedContext(world),
              journalLayer,
              s.activityExtents === undefined
                ? Layer.empty
                : ActivityLog.layerMemory({ store: logStore, extentBytes: 2 * BS })
            )
          )
        )
        const context = yield* Layer.buildWithScope(layer, scope)
        return { scope, replicator: yield* Effect.provide(Replicator.Replicator, context) }
      })

    let filter = yield* start()
    const settle = TestClock.adjust("5 millis")
    // Virtual time moves on while a guest write waits (e.g. for a switchover hold).
    const withTime = <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.raceFirst(
        effect,
        Effect.forever(TestClock.adjust("10 millis")).pipe(Effect.as(undefined as never))
      )
    for (const o of s.ops) {
      switch (o._tag) {
        case "Write": {
          const offset = (o.block % s.blockCount) * BS + o.at * 512
          const length = Math.min(o.sectors * 512, s.blockCount * BS - offset)
          yield* withTime(filter.replicator.write(offset, new Uint8Array(length).fill(o.fill)))
          break
        }
        case "Burst":
          // Concurrent guest writes, some overlapping.
          yield* withTime(
            Effect.all(
              o.blocks.map((b, i) =>
                filter.replicator.write((b % s.blockCount) * BS, new Uint8Array(BS).fill((o.fill + i) % 256))
              ),
              { concurrency: "unbounded", discard: true }
            )
          )
          break
        case "Tick":
          yield* TestClock.adjust(`${o.millis} millis`)
          break
        case "Flush":
          yield* receiver.flush
          break
        case "DropConnection":
          yield* receiver.dropConnection()
          break
        case "DropNextRecord":
          yield* receiver.dropNextRecord
          break
        case "StallAcks":
          yield* receiver.stallAcks(o.on)
          break
        case "ReceiverRestart":
          yield* receiver.restart({ loseUnacked: o.loseUnacked })
          break
        case "FilterRestart":
          // The process dies between guest writes: the journal and the disk survive.
          yield* Scope.close(filter.scope, Exit.void)
          filter = yield* start()
          break
        case "CrashDuringBurst": {
          const replicator = filter.replicator
          const burst = yield* Effect.fork(
            Effect.all(
              o.blocks.map((b, i) =>
                replicator.write((b % s.blockCount) * BS, new Uint8Array(BS).fill((o.fill + i) % 256))
              ),
              { concurrency: "unbounded", discard: true }
            )
          )
          yield* Effect.yieldNow()
          crashed = true
          yield* Scope.close(filter.scope, Exit.void)
          yield* Fiber.interrupt(burst)
          crashed = false
          // The journal finds its run open: the start is unclean.
          filter = yield* start()
          break
        }
      }
      yield* settle
    }

    // Heal: no more faults; let time pass until the filter is quiescent.
    yield* receiver.stallAcks(false)
    let status = yield* filter.replicator.status
    for (let i = 0; i < 400 && !status.quiescent; i++) {
      yield* receiver.flush
      yield* TestClock.adjust("100 millis")
      status = yield* filter.replicator.status
    }
    const image = yield* receiver.image(DISK)
    const diskImage = yield* disk.read(0, s.blockCount * BS)
    const checked = Legality.checkAll(State.initial(config), trace, { quiescent: true })
    yield* Scope.close(filter.scope, Exit.void)
    return { status, same: Buffer.compare(Buffer.from(image), Buffer.from(diskImage)) === 0, checked, trace }
  }).pipe(Effect.scoped, Effect.provide(TestContext.TestContext))

describe("the replicator against memory layers under TestClock", () => {
  it("no write is lost, sync resumes after every fault, every event is legal", async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const result = await Effect.runPromise(runScenario(s))
        expect(result.status.quiescent, `not quiescent: ${JSON.stringify(result.status)}`).toBe(true)
        expect(result.status.mode).toBe("sync")
        expect(result.same, "the receiver's image differs from the disk").toBe(true)
        expect(result.checked, JSON.stringify(result.checked?.violation)).toBeUndefined()
      }),
      { numRuns: numRuns(60) }
    )
  })

  it("a restart of the filter in the middle of a resync loses nothing", async () => {
    const midResync = scenario.map((s) => ({
      ...s,
      congestionLimit: 8192,
      ops: [
        { _tag: "StallAcks" as const, on: true },
        ...Array.from({ length: 6 }, (_, i) => ({
          _tag: "Write" as const,
          block: i,
          sectors: 8,
          at: 0,
          fill: i + 1
        })),
        ...s.ops.filter((o) => o._tag === "Write").slice(0, 10),
        { _tag: "FilterRestart" as const },
        { _tag: "StallAcks" as const, on: false },
        ...s.ops.slice(0, 10)
      ]
    }))
    await fc.assert(
      fc.asyncProperty(midResync, async (s) => {
        const result = await Effect.runPromise(runScenario(s))
        expect(result.trace.some((e) => e.type === "LinkLost" && e.reason === "filter-restart")).toBe(true)
        expect(result.status.quiescent).toBe(true)
        expect(result.same).toBe(true)
        expect(result.checked).toBeUndefined()
      }),
      { numRuns: numRuns(20) }
    )
  })
})

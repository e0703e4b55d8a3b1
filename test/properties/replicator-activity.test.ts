/**
 * The activity log narrows the resync after a crash without losing a write
 * (docs/replicator.md, "Restart"). A crash is modelled on memory layers: at a drawn
 * moment the filter's journal and activity log stop making anything durable while
 * guest writes race on, so the disk holds writes the journal lacks; then a filter
 * starts unclean over the same disk, journal, log and receiver. Property: once it is
 * quiescent the replica equals the disk, and the resync after the crash covered only
 * extents the log held. The mutants that let a write reach the disk before its extent
 * is durable in the log, or retire an extent whose writes are not journaled, lose
 * writes here.
 */
import * as fc from "fast-check"
import { Effect, Either, Exit, Layer, Logger, LogLevel, Option, Scope } from "effect"
import { describe, expect, it } from "vitest"
import * as ActivityLog from "../../src/adapters/ActivityLog.js"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import type * as Event from "../../src/domain/Event.js"
import * as Mutants from "../../src/replicator/internal/mutants.js"
import * as Replicator from "../../src/replicator/Replicator.js"
import { numRuns } from "../support/arbitraries.js"

const BS = 4096
const BLOCKS = 64
/** Two blocks per extent: 32 extents. */
const EXTENT = 2 * BS
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: BLOCKS, window: 4, congestionLimit: 1 << 20, initial: "in-sync" })
)

interface Crash {
  readonly writes: ReadonlyArray<{ readonly block: number; readonly blocks: number }>
  /** Guest writes that return before the crash. */
  readonly crashAfter: number
  readonly capacity: number
  readonly concurrency: number
  /** How long a journal commit takes (an fsync), so writes wait unjournaled a while. */
  readonly journalMillis: number
  /** Absent: writes one by one; else guest queues (`writeAll`) of this size. */
  readonly queue: number | undefined
}

const crash: fc.Arbitrary<Crash> = fc
  .record({
    writes: fc.array(
      fc.record({ block: fc.integer({ min: 0, max: BLOCKS - 1 }), blocks: fc.integer({ min: 1, max: 3 }) }),
      { minLength: 1, maxLength: 80 }
    ),
    crashAfter: fc.nat(),
    capacity: fc.integer({ min: 1, max: 3 }),
    concurrency: fc.integer({ min: 1, max: 16 }),
    journalMillis: fc.integer({ min: 0, max: 5 }),
    queue: fc.option(fc.integer({ min: 2, max: 8 }), { nil: undefined })
  })
  .map((c) => ({ ...c, crashAfter: c.crashAfter % (c.writes.length + 1) }))

type Mutant = "none" | "skip-activity-wait" | "retire-busy-extents"

const ioError = () => new EventJournal.JournalIoError({ op: "append", cause: "crashed" })

const runCrash = (c: Crash, mutant: Mutant) =>
  Effect.gen(function* () {
    const journalStore = EventJournal.makeMemoryStore()
    const logStore = ActivityLog.makeMemoryStore()
    let crashed = false
    // After the crash nothing more becomes durable: appends and commits fail.
    const journalLayer = Layer.sync(EventJournal.EventJournal, () => {
      const memory = EventJournal.makeMemory(journalStore)
      return {
        ...memory,
        append: (events: ReadonlyArray<Event.Event>) =>
          Effect.sleep(c.journalMillis).pipe(
            Effect.zipRight(Effect.suspend(() => (crashed ? Effect.fail(ioError()) : memory.append(events))))
          ),
        endRun: Effect.suspend(() => (crashed ? Effect.fail(ioError()) : memory.endRun))
      }
    })
    const world = yield* Layer.build(
      Layer.mergeAll(VirtualDisk.layerMemory(config), LogReceiver.layerMemory({ ack: "immediate" }))
    )
    const disk = yield* Effect.provide(VirtualDisk.VirtualDisk, world)
    const receiver = yield* Effect.provide(LogReceiver.MemoryReceiver, world)
    const trace: Array<Event.Event> = []

    const start = () =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const log = yield* ActivityLog.makeMemory({ store: logStore, extentBytes: EXTENT })
        const crashable: ActivityLog.ActivityLog.Service = {
          ...log,
          commit: (activate, retire) =>
            Effect.suspend(() =>
              crashed
                ? Effect.fail(new ActivityLog.ActivityLogIoError({ op: "commit", cause: "crashed" }))
                : log.commit(activate, retire)
            )
        }
        const context = yield* Layer.buildWithScope(
          Replicator.layer({
            diskId: "d",
            config,
            activityExtents: c.capacity,
            ackTimeout: "1 second",
            onEvents: (events) => Effect.sync(() => trace.push(...events))
          }).pipe(
            Layer.provide(
              Mutants.layer({
                skipActivityWait: mutant === "skip-activity-wait",
                retireBusyExtents: mutant === "retire-busy-extents"
              })
            ),
            Layer.provide(
              Layer.mergeAll(
                Layer.succeedContext(world),
                journalLayer,
                Layer.succeed(ActivityLog.ActivityLog, crashable)
              )
            )
          ),
          scope
        )
        return { scope, replicator: yield* Effect.provide(Replicator.Replicator, context) }
      })

    const first = yield* start()
    let returned = 0
    const requests = c.writes.map((w, i) => ({
      offset: w.block * BS,
      bytes: new Uint8Array(Math.min(w.blocks, BLOCKS - w.block) * BS).fill((i % 250) + 1)
    }))
    const batches =
      c.queue === undefined
        ? requests.map((r) => [r])
        : Array.from({ length: Math.ceil(requests.length / c.queue) }, (_, k) =>
            requests.slice(k * c.queue!, (k + 1) * c.queue!)
          )
    yield* Effect.forEach(
      batches,
      (batch) =>
        (batch.length === 1
          ? first.replicator.write(batch[0]!.offset, batch[0]!.bytes)
          : first.replicator.writeAll(batch)
        ).pipe(
          Effect.tap(() =>
            Effect.sync(() => {
              returned += batch.length
              if (returned >= c.crashAfter) crashed = true
            })
          ),
          Effect.ignore
        ),
      { concurrency: c.concurrency, discard: true }
    )
    crashed = true
    yield* Scope.close(first.scope, Exit.void)
    crashed = false

    const seen = trace.length
    const held = (yield* ActivityLog.makeMemory({ store: logStore, extentBytes: EXTENT })).recovered
    // The crashed run never closed: the journal says so, and the start is unclean.
    const second = yield* start()
    yield* second.replicator.quiesce.pipe(
      Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => "no quiescence" })
    )
    const image = yield* receiver.image("d")
    const onDisk = yield* disk.read(0, BLOCKS * BS)
    yield* Scope.close(second.scope, Exit.void)
    // What the unclean start owed: only extents in the log.
    const owed = trace.slice(seen).flatMap((e) => (e.type === "WriteTracked" ? [e] : []))
    return { same: Buffer.compare(Buffer.from(image), Buffer.from(onDisk)) === 0, owed, held }
  }).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.None))

describe("the activity log and unclean starts", () => {
  it("after a crash the replica still equals the disk, and only extents in the log were resynced", async () => {
    await fc.assert(
      fc.asyncProperty(crash, async (c) => {
        const { same, owed, held } = await Effect.runPromise(runCrash(c, "none"))
        expect(same, "the replica differs from the disk").toBe(true)
        expect(Option.isSome(held)).toBe(true)
        const expected = Replicator.extentRanges(Option.getOrThrow(held), EXTENT, BLOCKS * BS)
        expect(owed.map((w) => ({ offset: w.offset, length: w.length }))).toEqual(expected)
      }),
      { numRuns: numRuns(40) }
    )
  }, 120_000)

  it("an unreadable log: an unclean start resyncs the whole disk, a new journal owes nothing", async () => {
    const owedAfter = (unclean: boolean) =>
      Effect.gen(function* () {
        const journal = EventJournal.makeMemoryStore()
        // A run that began and never closed (killed): the next start is unclean.
        if (unclean)
          yield* EventJournal.makeMemory(journal).beginRun({
            blockSize: config.blockSize,
            blockCount: config.blockCount,
            initial: config.initial
          })
        const store = ActivityLog.makeMemoryStore()
        // Both copies damaged: the log cannot say which extents were active.
        store.slots[0] = new Uint8Array(40).fill(0xee)
        store.slots[1] = new Uint8Array(12).fill(0x11)
        const trace: Array<Event.Event> = []
        const context = yield* Layer.build(
          Replicator.layer({
            diskId: "d",
            config,
            onEvents: (events) => Effect.sync(() => trace.push(...events))
          }).pipe(
            Layer.provideMerge(
              Layer.mergeAll(
                VirtualDisk.layerMemory(config),
                EventJournal.layerMemory({ store: journal }),
                ActivityLog.layerMemory({ store, extentBytes: EXTENT }),
                LogReceiver.layerMemory()
              )
            )
          )
        )
        const replicator = yield* Effect.provide(Replicator.Replicator, context)
        yield* replicator.write(3 * BS, new Uint8Array(BS).fill(5))
        yield* replicator.quiesce
        return trace.flatMap((e) => (e.type === "WriteTracked" && e.length > BS ? [e.length] : []))
      }).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.None), Effect.runPromise)
    expect(await owedAfter(true)).toEqual([BLOCKS * BS])
    expect(await owedAfter(false)).toEqual([])
  })

  it("a write spanning more extents than the log keeps gets in (its extents are reserved while it waits)", async () => {
    // Room for one extent: without the reservation, each commit bringing in one of the
    // write's two extents retired the other (idle), and the write waited for ever.
    const program = Effect.gen(function* () {
      const context = yield* Layer.build(
        Replicator.layer({ diskId: "d", config, activityExtents: 1 }).pipe(
          Layer.provideMerge(
            Layer.mergeAll(
              VirtualDisk.layerMemory(config),
              EventJournal.layerMemory(),
              ActivityLog.layerMemory({ extentBytes: EXTENT }),
              LogReceiver.layerMemory()
            )
          )
        )
      )
      const replicator = yield* Effect.provide(Replicator.Replicator, context)
      yield* replicator.write(0, new Uint8Array(BS).fill(1))
      yield* replicator.flush
      // Blocks 1 and 2: extent 0 (in the log, idle) and extent 1 (not in it).
      yield* replicator.write(BS, new Uint8Array(2 * BS).fill(2))
      yield* replicator.quiesce
      return yield* replicator.status
    }).pipe(
      Effect.scoped,
      Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "the write waited for ever" }),
      Logger.withMinimumLogLevel(LogLevel.None)
    )
    expect((await Effect.runPromise(program)).quiescent).toBe(true)
  })

  for (const mutant of ["skip-activity-wait", "retire-busy-extents"] as const)
    it(`mutant: ${mutant} loses writes after a crash`, async () => {
      await expect(
        fc.assert(
          fc.asyncProperty(crash, async (c) => {
            const { same } = await Effect.runPromise(runCrash(c, mutant))
            expect(same).toBe(true)
          }),
          // A run catches skip-activity-wait almost always, retire-busy-extents about one in
          // twenty (10 of 200 runs, seed 42, before and after the replicator's split): the
          // crash must come while a retired extent's write is unjournaled. 120 runs missed
          // it once under a loaded full suite; 400 miss it about once in a billion.
          { numRuns: numRuns(400), endOnFailure: true }
        )
      ).rejects.toThrow()
    }, 120_000)
})

/**
 * Crash points of the file journal: a journal of real events (the reference filter
 * under a faulty workload) written in batches with a snapshot midway, then cut at a
 * byte inside its last records — as a crash during an unfinished append leaves it.
 * Reopening must cut the torn record off and say so, keep an exact prefix of what
 * was written, and replay (snapshot + rest) to the fold of that prefix. A damaged
 * byte before the tail must be refused with the damaged record's offset.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Either, Layer, Logger, LogLevel, Option, Schema, Stream } from "effect"
import fc from "fast-check"
import * as Config from "../../src/domain/Config.js"
import * as Decider from "../../src/domain/Decider.js"
import type * as Event from "../../src/domain/Event.js"
import * as Simulation from "../../src/conformance/Simulation.js"
import * as State from "../../src/domain/State.js"
import * as Trace from "../../src/domain/Trace.js"
import * as EventJournal from "../../src/adapters/EventJournal.js"

const numRuns = Math.max(1, Math.round(200 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1)))

// Decoded, so its key order is the schema's (`State.equals` compares JSON text; a loaded snapshot's config is decoded).
const config = Schema.decodeUnknownSync(Config.Config)(
  Either.getOrThrow(Config.make({ blockCount: 32, blockSize: 4096, window: 4, congestionLimit: 32 * 1024 }))
)
const diskSectors = (config.blockSize * config.blockCount) / 512

const stepArb: fc.Arbitrary<Simulation.Step> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.tuple(fc.nat({ max: diskSectors - 1 }), fc.integer({ min: 1, max: 24 })).map(
      ([s, n]): Simulation.Step => ({
        _tag: "Write",
        offset: s * 512,
        length: Math.min(n, diskSectors - s) * 512
      })
    )
  },
  {
    weight: 3,
    arbitrary: fc.integer({ min: 1, max: 4 }).map((budget): Simulation.Step => ({ _tag: "Pump", budget }))
  },
  { weight: 4, arbitrary: fc.constant<Simulation.Step>({ _tag: "Send" }) },
  { weight: 3, arbitrary: fc.constant<Simulation.Step>({ _tag: "Read" }) },
  { weight: 3, arbitrary: fc.constant<Simulation.Step>({ _tag: "Flush" }) },
  { weight: 4, arbitrary: fc.constant<Simulation.Step>({ _tag: "Deliver" }) },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom("connection-lost" as const, "ack-timeout" as const)
      .map((reason): Simulation.Step => ({ _tag: "Cut", reason }))
  },
  { weight: 1, arbitrary: fc.constant<Simulation.Step>({ _tag: "Reconnect" }) },
  { weight: 1, arbitrary: fc.constant<Simulation.Step>({ _tag: "Drop" }) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.boolean(), fc.option(fc.nat({ max: 6 }), { nil: undefined }))
      .map(([lose, rollback]): Simulation.Step => ({ _tag: "Restart", lose, rollback }))
  }
)

/**
 * The events the reference filter records for some steps (at least a few): a third of
 * the journals compare in runs (trace version 3's `RunCompared` / `RunMatched`, records
 * of every length up to a few hundred bytes), a third block by block (version 2).
 */
const eventsArb: fc.Arbitrary<ReadonlyArray<Event.Event>> = fc
  .tuple(fc.array(stepArb, { minLength: 10, maxLength: 150 }), fc.constantFrom(0, 1, 4))
  .map(
    ([steps, compare]) =>
      Simulation.run(
        config,
        Simulation.reference,
        steps,
        compare === 0 ? {} : { compareFrom: 1, ...(compare > 1 ? { compareRun: compare } : {}) }
      ).events as ReadonlyArray<Event.Event>
  )
  .filter((events) => events.length >= 4)

/** Runs an effect without the recovery warnings (expected here by the hundred). */
const quiet = <A, E>(effect: Effect.Effect<A, E>): Promise<A> =>
  Effect.runPromise(effect.pipe(Logger.withMinimumLogLevel(LogLevel.Error)))

const recordSize = (event: Event.Event) => 8 + Buffer.byteLength(Trace.encodeEvent(event), "utf8")

/** `offsets[i]` is where record `i` starts; `offsets[n]` is the end of the log. */
const offsetsOf = (events: ReadonlyArray<Event.Event>): ReadonlyArray<number> => {
  const offsets = [0]
  for (const e of events) offsets.push(offsets.at(-1)! + recordSize(e))
  return offsets
}

const fold = (events: ReadonlyArray<Event.Event>) => events.reduce(Decider.evolve, State.initial(config))

const open = (directory: string) =>
  Effect.map(Layer.build(EventJournal.layerFile({ directory })), (ctx) =>
    Context.get(ctx, EventJournal.EventJournal)
  )

const readAll = (journal: EventJournal.EventJournal.Service, from = 0) =>
  Effect.map(Stream.runCollect(journal.read(from)), (c) => Chunk.toReadonlyArray(c).map((e) => e.event))

const withTempDir = <A, E>(f: (dir: string) => Effect.Effect<A, E>) =>
  Effect.acquireUseRelease(
    Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-crash-"))),
    f,
    (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
  )

/** Writes `events` in batches of the given sizes (cycled), snapshotting after batch `snapshotAfter`; the snapshot's position. */
const writeJournal = (
  directory: string,
  events: ReadonlyArray<Event.Event>,
  sizes: ReadonlyArray<number>,
  snapshotAfter: number
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const journal = yield* open(directory)
      const ends: Array<number> = []
      for (let at = 0, k = 0; at < events.length; k++) {
        const next = Math.min(events.length, at + sizes[k % sizes.length]!)
        ends.push(yield* journal.append(events.slice(at, next)))
        at = next
      }
      // Midway, but never after the last batch, so some records follow the snapshot.
      const position = ends.length === 1 ? 0 : ends[Math.min(snapshotAfter, ends.length - 2)]!
      yield* journal.saveSnapshot(State.toSnapshot(fold(events.slice(0, position))), position)
      return position
    })
  )

/** Reopens a journal cut at `cut` and checks recovery, the surviving prefix and replay. */
const checkReopen = (
  directory: string,
  events: ReadonlyArray<Event.Event>,
  offsets: ReadonlyArray<number>,
  snapshotAt: number,
  cut: number
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const survivors = offsets.filter((o, i) => i > 0 && o <= cut).length
      const boundary = offsets[survivors]!
      const journal = yield* open(directory)
      if (cut === boundary) expect(journal.recovery).toBeUndefined()
      else expect(journal.recovery).toMatchObject({ at: boundary, truncatedBytes: cut - boundary })
      expect(yield* journal.position).toBe(survivors)
      expect((yield* Effect.promise(() => fs.stat(path.join(directory, EventJournal.LOG_FILE)))).size).toBe(
        boundary
      )
      const prefix = events.slice(0, survivors)
      expect(yield* readAll(journal)).toEqual(prefix)
      const saved = Option.getOrThrow(yield* journal.loadSnapshot)
      expect(saved.position).toBe(snapshotAt)
      const replayed = (yield* readAll(journal, saved.position)).reduce(
        Decider.evolve,
        State.fromSnapshot(saved.snapshot)
      )
      expect(State.equals(replayed, fold(prefix))).toBe(true)
      return { journal, survivors }
    })
  )

describe("EventJournal crash points (file layer)", () => {
  it("reopens a journal cut inside its last records: torn tail cut and reported, exact prefix, replay agrees", () =>
    fc.assert(
      fc.asyncProperty(
        eventsArb,
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 5 }),
        fc.nat({ max: 20 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (events, sizes, snapshotAfter, where) =>
          quiet(
            withTempDir((dir) =>
              Effect.gen(function* () {
                const snapshotAt = yield* writeJournal(dir, events, sizes, snapshotAfter)
                const offsets = offsetsOf(events)
                const size = offsets.at(-1)!
                const log = path.join(dir, EventJournal.LOG_FILE)
                expect((yield* Effect.promise(() => fs.stat(log))).size).toBe(size)
                // Anywhere from the start of the last three records (after the snapshot) to the end.
                const from = offsets[Math.max(snapshotAt, events.length - 3)]!
                const cut = Math.min(size, from + Math.floor(where * (size - from + 1)))
                yield* Effect.promise(() => fs.truncate(log, cut))
                const { survivors } = yield* checkReopen(dir, events, offsets, snapshotAt, cut)
                // After recovery the journal appends cleanly and reopens with nothing to repair.
                const extra: Event.Event = { type: "LinkLost", reason: "connection-lost" }
                yield* Effect.scoped(Effect.flatMap(open(dir), (journal) => journal.append([extra])))
                const again = yield* Effect.scoped(
                  Effect.gen(function* () {
                    const journal = yield* open(dir)
                    return { recovery: journal.recovery, events: yield* readAll(journal) }
                  })
                )
                expect(again.recovery).toBeUndefined()
                expect(again.events).toEqual([...events.slice(0, survivors), extra])
              })
            )
          )
      ),
      { numRuns }
    ))

  it("reopens after a cut at every byte offset of the last records of one journal", () =>
    quiet(
      withTempDir((dir) =>
        Effect.gen(function* () {
          const steps = fc.sample(fc.array(stepArb, { minLength: 120, maxLength: 120 }), {
            numRuns: 1,
            seed: 42
          })[0]!
          const events = Simulation.run(config, Simulation.reference, steps).events
          expect(events.length).toBeGreaterThan(20)
          const snapshotAt = yield* writeJournal(dir, events, [7, 1, 13], 1)
          const offsets = offsetsOf(events)
          const log = path.join(dir, EventJournal.LOG_FILE)
          const bytes = yield* Effect.promise(() => fs.readFile(log))
          const from = offsets[Math.max(snapshotAt, events.length - 4)]!
          let torn = 0
          for (let cut = from; cut <= bytes.length; cut++) {
            yield* Effect.promise(() => fs.writeFile(log, bytes.subarray(0, cut)))
            const { journal } = yield* checkReopen(dir, events, offsets, snapshotAt, cut)
            if (journal.recovery !== undefined) torn++
          }
          expect(torn).toBe(bytes.length - from + 1 - 5)
        })
      )
    ))

  it("refuses a flipped byte in any record before the last with JournalCorrupt at that record's offset; the last one is torn", () =>
    fc.assert(
      fc.asyncProperty(
        eventsArb,
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.integer({ min: 1, max: 255 }),
        (events, whichRecord, whichByte, mask) =>
          quiet(
            withTempDir((dir) =>
              Effect.gen(function* () {
                yield* Effect.scoped(Effect.flatMap(open(dir), (journal) => journal.append(events)))
                const offsets = offsetsOf(events)
                const n = events.length
                const record = Math.min(n - 1, Math.floor(whichRecord * n))
                const start = offsets[record]!
                const length = offsets[record + 1]! - start
                const log = path.join(dir, EventJournal.LOG_FILE)
                const bytes = yield* Effect.promise(() => fs.readFile(log))
                // In the last record only the CRC and payload can be torn; a changed length is damage.
                const byte =
                  record === n - 1
                    ? 4 + Math.min(length - 5, Math.floor(whichByte * (length - 4)))
                    : Math.min(length - 1, Math.floor(whichByte * length))
                bytes[start + byte]! ^= mask
                yield* Effect.promise(() => fs.writeFile(log, bytes))
                const opened = yield* Effect.either(
                  Effect.scoped(Effect.map(open(dir), (journal) => journal.recovery))
                )
                if (record < n - 1) {
                  expect(Either.isLeft(opened)).toBe(true)
                  if (Either.isLeft(opened))
                    expect(opened.left).toMatchObject({ _tag: "JournalCorrupt", offset: start })
                  // Refusing changed nothing.
                  expect(Buffer.compare(yield* Effect.promise(() => fs.readFile(log)), bytes)).toBe(0)
                } else {
                  expect(opened).toEqual(
                    Either.right({
                      at: start,
                      truncatedBytes: length,
                      reason: "CRC32C mismatch on the last record"
                    })
                  )
                }
              })
            )
          )
      ),
      { numRuns }
    ))
})

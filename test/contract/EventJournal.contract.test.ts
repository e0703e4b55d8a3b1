/**
 * The EventJournal contract, run against every layer (append/read/position,
 * group-committed concurrent appends, snapshots, reopen), then the file layer's
 * format, recovery and failure rules.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Chunk,
  Context,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Option,
  Schema,
  type Scope,
  Stream
} from "effect"
import * as Config from "../../src/domain/Config.js"
import * as Decider from "../../src/domain/Decider.js"
import type * as Event from "../../src/domain/Event.js"
import * as Simulation from "../../src/conformance/Simulation.js"
import * as State from "../../src/domain/State.js"
import * as Trace from "../../src/domain/Trace.js"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import { crc32c } from "../../src/internal/crc32c.js"
import * as journalFile from "../../src/adapters/internal/journalFile.js"

type Journal = EventJournal.EventJournal.Service

// Decoded, so its key order is the schema's: `State.equals` compares JSON text, and a snapshot's config comes back decoded.
const config = Schema.decodeUnknownSync(Config.Config)(
  Either.getOrThrow(Config.make({ blockCount: 64, blockSize: 4096, window: 8, congestionLimit: 65536 }))
)

const header: EventJournal.Header = { blockSize: 4096, blockCount: 64, initial: "in-sync" }

/** Real events, from the reference filter under a faulty workload. */
const sampleEvents = (count: number, seed = 1): ReadonlyArray<Event.Event> => {
  const out: Array<Event.Event> = []
  for (let s = seed; out.length < count; s++) {
    const world = Simulation.run(config, Simulation.reference, Simulation.workload(config, s, 400, "some"))
    // Each world starts from the initial state, so only the first is a legal sequence; later ones pad.
    out.push(...world.events)
  }
  return out.slice(0, count)
}

/** Distinguishable filler events for order checks. */
const acks = (from: number, count: number): Array<Event.Event> =>
  Array.from({ length: count }, (_, i) => ({ type: "Acked", seq: from + i }))

const tempDir = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-journal-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

const build = <E>(layer: Layer.Layer<EventJournal.EventJournal, E>) =>
  Effect.map(Layer.build(layer), (ctx) => Context.get(ctx, EventJournal.EventJournal))

/** Opens the same journal again each time it is called; each open lives in its own scope. */
type Opener = () => Effect.Effect<Journal, EventJournal.JournalError, Scope.Scope>
type Storage = Effect.Effect<Opener, never, Scope.Scope>

const layers: ReadonlyArray<readonly [string, Storage]> = [
  [
    "layerMemory",
    Effect.sync(() => {
      const store = EventJournal.makeMemoryStore()
      return () => build(EventJournal.layerMemory({ store }))
    })
  ],
  ["layerFile", Effect.map(tempDir, (directory) => () => build(EventJournal.layerFile({ directory })))]
]

const readAll = (journal: Journal, from = 0) =>
  Effect.map(Stream.runCollect(journal.read(from)), Chunk.toReadonlyArray)

const events = (entries: ReadonlyArray<EventJournal.Entry>) => entries.map((e) => e.event)

const contract = (name: string, storage: Storage) =>
  describe(`EventJournal contract: ${name}`, () => {
    it.scoped("starts empty", () =>
      Effect.gen(function* () {
        const journal = yield* (yield* storage)()
        expect(yield* journal.position).toBe(0)
        expect(yield* readAll(journal)).toEqual([])
        expect(yield* journal.loadSnapshot).toEqual(Option.none())
        expect(journal.recovery).toBeUndefined()
      })
    )

    it.scoped("appends batches and reads them back from any position, in order", () =>
      Effect.gen(function* () {
        const journal = yield* (yield* storage)()
        const all = sampleEvents(300)
        expect(yield* journal.append(all.slice(0, 1))).toBe(1)
        expect(yield* journal.append(all.slice(1, 101))).toBe(101)
        expect(yield* journal.append([])).toBe(101)
        expect(yield* journal.append(all.slice(101))).toBe(300)
        expect(yield* journal.position).toBe(300)
        const entries = yield* readAll(journal)
        expect(events(entries)).toEqual(all)
        expect(entries.map((e) => e.position)).toEqual(all.map((_, i) => i))
        for (const from of [0, 1, 100, 101, 299, 300]) {
          const suffix = yield* readAll(journal, from)
          expect(suffix.map((e) => e.position)).toEqual(all.slice(from).map((_, i) => from + i))
          expect(events(suffix)).toEqual(all.slice(from))
        }
      })
    )

    it.scoped("reads long journals across index and chunk boundaries", () =>
      Effect.gen(function* () {
        const journal = yield* (yield* storage)()
        const all = acks(1, 12_000)
        for (let i = 0; i < all.length; i += 3000) yield* journal.append(all.slice(i, i + 3000))
        for (const from of [0, 1023, 1024, 1025, 4096, 7777, 11_999, 12_000]) {
          const suffix = yield* readAll(journal, from)
          expect(suffix.length).toBe(all.length - from)
          expect(suffix[0]?.position).toBe(from === all.length ? undefined : from)
          expect(suffix[0]?.event).toEqual(all[from])
          expect(suffix.at(-1)?.event).toEqual(from === all.length ? undefined : all.at(-1))
        }
        expect(events(yield* readAll(journal))).toEqual(all)
      })
    )

    it.scoped("keeps large events whole across read chunks and reopen", () =>
      Effect.gen(function* () {
        const open = yield* storage
        const big = (n: number): Event.Event => ({ type: "LinkLost", reason: "r".repeat(n) })
        const all = [
          ...acks(1, 3),
          big(300_000),
          ...acks(4, 2),
          big(700_000),
          big(1000),
          big(600_000),
          ...acks(6, 1)
        ]
        yield* Effect.scoped(Effect.flatMap(open(), (journal) => journal.append(all)))
        const journal = yield* open()
        expect(journal.recovery).toBeUndefined()
        expect(events(yield* readAll(journal))).toEqual(all)
        expect(events(yield* readAll(journal, 4))).toEqual(all.slice(4))
      })
    )

    it.scoped("refuses reads from beyond the end or from a negative or fractional position", () =>
      Effect.gen(function* () {
        const journal = yield* (yield* storage)()
        yield* journal.append(acks(1, 3))
        for (const from of [4, -1, 1.5, Number.NaN]) {
          const error = yield* Effect.flip(readAll(journal, from))
          expect(error._tag).toBe("JournalInvalidRequest")
        }
      })
    )

    it.scoped("refuses events that would not read back, and stays unchanged", () =>
      Effect.gen(function* () {
        const journal = yield* (yield* storage)()
        yield* journal.append(acks(1, 2))
        const bad: ReadonlyArray<unknown> = [
          { type: "Acked", seq: -1 },
          { type: "Acked", seq: 1.5 },
          { type: "Nope", seq: 1 },
          { type: "LinkLost", reason: "" },
          { type: "ResyncActivated", epoch: 1, reason: "boredom" },
          { type: "LinkLost", reason: "x".repeat(EventJournal.MAX_PAYLOAD) }
        ]
        for (const event of bad) {
          const error = yield* Effect.flip(journal.append([{ type: "Acked", seq: 3 }, event as Event.Event]))
          expect(error._tag).toBe("JournalInvalidRequest")
        }
        expect(yield* journal.position).toBe(2)
        expect(events(yield* readAll(journal))).toEqual(acks(1, 2))
      })
    )

    it.scoped("stores events as they read back: unknown fields are dropped", () =>
      Effect.gen(function* () {
        const journal = yield* (yield* storage)()
        yield* journal.append([{ type: "Acked", seq: 5, extra: true } as unknown as Event.Event])
        expect(events(yield* readAll(journal))).toEqual([{ type: "Acked", seq: 5 }])
      })
    )

    it.scoped("commits concurrent appends whole, durable and in one total order", () =>
      Effect.gen(function* () {
        const journal = yield* (yield* storage)()
        const batches = Array.from({ length: 200 }, (_, i) => acks(i * 1000, 1 + ((i * 7) % 13)))
        const ends = yield* Effect.all(
          batches.map((batch) => journal.append(batch)),
          { concurrency: "unbounded" }
        )
        const total = batches.reduce((n, b) => n + b.length, 0)
        expect(yield* journal.position).toBe(total)
        const all = events(yield* readAll(journal))
        // Each batch sits whole just before the position its append returned; together they tile the journal.
        const spans = batches.map((batch, i) => [ends[i]! - batch.length, ends[i]!] as const)
        batches.forEach((batch, i) => {
          expect(all.slice(spans[i]![0], spans[i]![1])).toEqual(batch)
        })
        const sorted = [...spans].sort((a, b) => a[0] - b[0])
        sorted.forEach(([start], k) => {
          expect(start).toBe(k === 0 ? 0 : sorted[k - 1]![1])
        })
        expect(sorted.at(-1)![1]).toBe(total)
      })
    )

    it.scoped("saves and loads snapshots at a position it has reached", () =>
      Effect.gen(function* () {
        const journal = yield* (yield* storage)()
        const all = sampleEvents(120)
        yield* journal.append(all.slice(0, 80))
        const at50 = State.toSnapshot(all.slice(0, 50).reduce(Decider.evolve, State.initial(config)))
        yield* journal.saveSnapshot(at50, 50)
        expect(yield* journal.loadSnapshot).toEqual(Option.some({ position: 50, snapshot: at50 }))
        const error = yield* Effect.flip(journal.saveSnapshot(at50, 81))
        expect(error._tag).toBe("JournalInvalidRequest")
        yield* journal.append(all.slice(80))
        const at120 = State.toSnapshot(all.reduce(Decider.evolve, State.initial(config)))
        yield* journal.saveSnapshot(at120, 120)
        const loaded = Option.getOrThrow(yield* journal.loadSnapshot)
        expect(loaded.position).toBe(120)
        expect(
          State.equals(State.fromSnapshot(loaded.snapshot), all.reduce(Decider.evolve, State.initial(config)))
        ).toBe(true)
      })
    )

    it.scoped("keeps events, position and snapshot across close and reopen", () =>
      Effect.gen(function* () {
        const open = yield* storage
        const all = sampleEvents(200)
        const snapshot = State.toSnapshot(all.slice(0, 90).reduce(Decider.evolve, State.initial(config)))
        yield* Effect.scoped(
          Effect.gen(function* () {
            const journal = yield* open()
            yield* journal.append(all.slice(0, 90))
            yield* journal.saveSnapshot(snapshot, 90)
            yield* journal.append(all.slice(90, 150))
          })
        )
        const journal = yield* open()
        expect(journal.recovery).toBeUndefined()
        expect(yield* journal.position).toBe(150)
        expect(events(yield* readAll(journal))).toEqual(all.slice(0, 150))
        expect(yield* journal.loadSnapshot).toEqual(Option.some({ position: 90, snapshot }))
        expect(yield* journal.append(all.slice(150))).toBe(200)
        // Replaying the snapshot and the rest equals folding everything.
        const saved = Option.getOrThrow(yield* journal.loadSnapshot)
        const rest = events(yield* readAll(journal, saved.position))
        const replayed = rest.reduce(Decider.evolve, State.fromSnapshot(saved.snapshot))
        expect(State.equals(replayed, all.reduce(Decider.evolve, State.initial(config)))).toBe(true)
      })
    )

    // --- runs: the journal knows whether its writer's last run closed cleanly ---------

    it.scoped("a new journal's first run is New; a run that never ends leaves the next one Unclean", () =>
      Effect.gen(function* () {
        const open = yield* storage
        expect(yield* Effect.scoped(Effect.flatMap(open(), (j) => j.beginRun(header)))).toEqual({
          _tag: "New"
        })
        // Killed: events appended, no endRun.
        yield* Effect.scoped(
          Effect.flatMap(open(), (j) => Effect.zipRight(j.beginRun(header), j.append(acks(1, 3))))
        )
        const last = yield* Effect.scoped(Effect.flatMap(open(), (j) => j.beginRun(header)))
        expect(last).toMatchObject({
          _tag: "Unclean",
          reason: expect.stringContaining("did not close cleanly")
        })
        // Even a run killed before its first event.
        const again = yield* Effect.scoped(Effect.flatMap(open(), (j) => j.beginRun(header)))
        expect(again._tag).toBe("Unclean")
      })
    )

    it.scoped(
      "a run that ends cleanly leaves the next one Clean; an append after endRun makes it Unclean",
      () =>
        Effect.gen(function* () {
          const open = yield* storage
          const run = (after?: ReadonlyArray<Event.Event>) =>
            Effect.scoped(
              Effect.gen(function* () {
                const journal = yield* open()
                const last = yield* journal.beginRun(header)
                yield* journal.append(acks(1, 5))
                yield* journal.endRun
                if (after !== undefined) yield* journal.append(after)
                return last
              })
            )
          expect(yield* run()).toEqual({ _tag: "New" })
          expect(yield* run()).toEqual({ _tag: "Clean" })
          // Within one open too: beginRun after endRun sees the clean close.
          const journal = yield* open()
          yield* journal.endRun
          expect(yield* journal.beginRun(header)).toEqual({ _tag: "Clean" })
          yield* journal.endRun
          yield* journal.append(acks(9, 1))
          expect(yield* journal.beginRun(header)).toMatchObject({
            _tag: "Unclean",
            reason: expect.stringContaining("closed cleanly at event 10, but the journal holds 11")
          })
        })
    )

    it.scoped("beginRun refuses another geometry or initial state and records nothing", () =>
      Effect.gen(function* () {
        const open = yield* storage
        yield* Effect.scoped(
          Effect.flatMap(open(), (j) =>
            Effect.zipRight(j.beginRun(header), Effect.zipRight(j.append(acks(1, 2)), j.endRun))
          )
        )
        for (const other of [
          { ...header, blockCount: header.blockCount + 1 },
          { ...header, blockCount: header.blockCount - 1 },
          { ...header, blockSize: header.blockSize * 2 },
          { ...header, initial: "full-sync" as const }
        ]) {
          const error = yield* Effect.flip(Effect.scoped(Effect.flatMap(open(), (j) => j.beginRun(other))))
          expect(error).toMatchObject({ _tag: "JournalGeometryMismatch", recorded: header, given: other })
        }
        // The refusals changed nothing: the last run still reads as clean.
        expect(yield* Effect.scoped(Effect.flatMap(open(), (j) => j.beginRun(header)))).toEqual({
          _tag: "Clean"
        })
      })
    )

    it.scoped(
      "a journal without runs (older than run files) starts Unclean; its snapshot's geometry is checked",
      () =>
        Effect.gen(function* () {
          const open = yield* storage
          const all = sampleEvents(40)
          yield* Effect.scoped(
            Effect.gen(function* () {
              const journal = yield* open()
              yield* journal.append(all)
              yield* journal.saveSnapshot(
                State.toSnapshot(all.reduce(Decider.evolve, State.initial(config))),
                40
              )
            })
          )
          const error = yield* Effect.flip(
            Effect.scoped(Effect.flatMap(open(), (j) => j.beginRun({ ...header, blockCount: 32 })))
          )
          expect(error).toMatchObject({ _tag: "JournalGeometryMismatch", recorded: header })
          const last = yield* Effect.scoped(Effect.flatMap(open(), (j) => j.beginRun(header)))
          expect(last).toMatchObject({ _tag: "Unclean", reason: expect.stringContaining("no clean close") })
        })
    )

    it.scoped("endRun before any run is refused", () =>
      Effect.gen(function* () {
        const journal = yield* (yield* storage)()
        expect((yield* Effect.flip(journal.endRun))._tag).toBe("JournalInvalidRequest")
      })
    )
  })

for (const [name, storage] of layers) contract(name, storage)

// ---------------------------------------------------------------------------
// The file layer: on-disk format, recovery rules, failure handling.

const logOf = (dir: string) => path.join(dir, EventJournal.LOG_FILE)

const record = (payload: Uint8Array): Uint8Array => {
  const out = Buffer.alloc(8 + payload.length)
  out.writeUInt32LE(payload.length, 0)
  out.writeUInt32LE(crc32c(payload), 4)
  out.set(payload, 8)
  return out
}
const recordOf = (event: Event.Event) => record(Buffer.from(Trace.encodeEvent(event), "utf8"))

const openFile = (directory: string) => build(EventJournal.layerFile({ directory }))

const withLog = (dir: string, f: (bytes: Buffer) => Uint8Array) =>
  Effect.promise(async () => {
    const bytes = await fs.readFile(logOf(dir))
    await fs.writeFile(logOf(dir), f(bytes))
  })

const writeJournal = (dir: string, batch: ReadonlyArray<Event.Event>) =>
  Effect.scoped(Effect.flatMap(openFile(dir), (journal) => journal.append(batch)))

describe("EventJournal layerFile: format", () => {
  it.scoped("writes [u32 length][u32 CRC32C][trace line] records, little-endian, nothing else", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const all = sampleEvents(40)
      yield* writeJournal(dir, all)
      const bytes = yield* Effect.promise(() => fs.readFile(logOf(dir)))
      expect(Buffer.compare(bytes, Buffer.concat(all.map(recordOf)))).toBe(0)
    })
  )

  it.scoped("writes the snapshot as {position, log, snapshot} JSON, leaving no temp file", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const all = sampleEvents(30)
      const snapshot = State.toSnapshot(all.reduce(Decider.evolve, State.initial(config)))
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* openFile(dir)
          yield* journal.append(all)
          yield* journal.saveSnapshot(snapshot, 30)
        })
      )
      const text = yield* Effect.promise(() =>
        fs.readFile(path.join(dir, EventJournal.SNAPSHOT_FILE), "utf8")
      )
      // `log`: where event 30 starts, and the record before it (its start and its header's CRC).
      const offset = all.reduce((n, e) => n + recordOf(e).length, 0)
      const previous = offset - recordOf(all[29]!).length
      expect(JSON.parse(text)).toEqual({
        position: 30,
        log: {
          offset,
          previous,
          crc32c: Buffer.from(recordOf(all[29]!)).readUInt32LE(4),
          check: crc32c(
            Buffer.from(
              JSON.stringify([30, offset, previous, Buffer.from(recordOf(all[29]!)).readUInt32LE(4)])
            )
          )
        },
        snapshot: JSON.parse(JSON.stringify(snapshot))
      })
      expect((yield* Effect.promise(() => fs.readdir(dir))).sort()).toEqual(["events.log", "snapshot.json"])
    })
  )
})

describe("EventJournal layerFile: recovery", () => {
  const base = acks(1, 20)

  it.scoped("cuts off a torn last record, reports and logs it, and appends cleanly afterwards", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* writeJournal(dir, base)
      const whole = recordOf({ type: "Acked", seq: 21 })
      yield* withLog(dir, (bytes) => Buffer.concat([bytes, whole.subarray(0, 13)]))
      const size = (yield* Effect.promise(() => fs.stat(logOf(dir)))).size
      const logs: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => logs.push(`${logLevel.label} ${String(message)}`))
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* openFile(dir)
          expect(journal.recovery).toMatchObject({
            at: size - 13,
            truncatedBytes: 13,
            reason: "short payload"
          })
          expect(yield* journal.position).toBe(20)
          expect(events(yield* readAll(journal))).toEqual(base)
          yield* journal.append(acks(21, 2))
        }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      )
      expect(logs.some((l) => l.startsWith("WARN") && l.includes("torn"))).toBe(true)
      const journal = yield* openFile(dir)
      expect(journal.recovery).toBeUndefined()
      expect(events(yield* readAll(journal))).toEqual(acks(1, 22))
    })
  )

  it.scoped("treats a short header, a bad CRC on the last record and a zero-filled tail as torn", () =>
    Effect.gen(function* () {
      const cases: ReadonlyArray<readonly [string, (bytes: Buffer) => Uint8Array, number]> = [
        ["short header", (b) => Buffer.concat([b, Buffer.from([5, 0, 0])]), 3],
        [
          "CRC32C mismatch on the last record",
          (b) => {
            const r = Buffer.from(recordOf({ type: "Acked", seq: 21 }))
            r[r.length - 2]! ^= 0x20
            return Buffer.concat([b, r])
          },
          recordOf({ type: "Acked", seq: 21 }).length
        ],
        ["zero-filled tail", (b) => Buffer.concat([b, Buffer.alloc(4096)]), 4096]
      ]
      for (const [reason, damage, cut] of cases) {
        const dir = yield* tempDir
        yield* writeJournal(dir, base)
        yield* withLog(dir, damage)
        const journal = yield* Effect.scoped(openFile(dir)).pipe(Logger.withMinimumLogLevel(LogLevel.Error))
        expect(journal.recovery).toMatchObject({ truncatedBytes: cut, reason })
        expect((yield* Effect.promise(() => fs.stat(logOf(dir)))).size).toBe(
          Buffer.concat(base.map(recordOf)).length
        )
      }
    })
  )

  it.scoped("fails with JournalCorrupt naming the offset of a damaged record followed by more data", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* writeJournal(dir, base)
      const offset = base.slice(0, 7).reduce((n, e) => n + recordOf(e).length, 0)
      yield* withLog(dir, (bytes) => {
        bytes[offset + 12]! ^= 0x01
        return bytes
      })
      const before = yield* Effect.promise(() => fs.readFile(logOf(dir)))
      const error = yield* Effect.flip(Effect.scoped(openFile(dir)))
      expect(error).toMatchObject({ _tag: "JournalCorrupt", file: logOf(dir), offset })
      // Refusing to open changed nothing.
      expect(Buffer.compare(yield* Effect.promise(() => fs.readFile(logOf(dir))), before)).toBe(0)
    })
  )

  it.scoped("fails with JournalCorrupt on a record whose CRC matches but whose event does not decode", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* writeJournal(dir, base)
      const size = (yield* Effect.promise(() => fs.stat(logOf(dir)))).size
      yield* withLog(dir, (bytes) =>
        Buffer.concat([bytes, record(Buffer.from('{"type":"Nope"}')), recordOf({ type: "Acked", seq: 21 })])
      )
      const error = yield* Effect.flip(Effect.scoped(openFile(dir)))
      expect(error).toMatchObject({ _tag: "JournalCorrupt", offset: size })
      expect(error.message).toContain("undecodable")
    })
  )

  it.scoped(
    "fails with JournalCorrupt on a torn-looking record that hides a valid one, or an implausible length",
    () =>
      Effect.gen(function* () {
        // A length flipped so the record seems to run past the end: yet a whole record follows.
        const dir = yield* tempDir
        yield* writeJournal(dir, base)
        const offset = base.slice(0, 18).reduce((n, e) => n + recordOf(e).length, 0)
        yield* withLog(dir, (bytes) => {
          bytes[offset + 1]! ^= 0x01
          return bytes
        })
        expect(yield* Effect.flip(Effect.scoped(openFile(dir)))).toMatchObject({
          _tag: "JournalCorrupt",
          offset
        })
        const dir2 = yield* tempDir
        yield* writeJournal(dir2, base)
        yield* withLog(dir2, (bytes) => {
          bytes.writeUInt32LE(0x7fffffff, 0)
          return bytes
        })
        expect(yield* Effect.flip(Effect.scoped(openFile(dir2)))).toMatchObject({
          _tag: "JournalCorrupt",
          offset: 0
        })
      })
  )

  it.scoped("fails with JournalCorrupt on a damaged snapshot, or one ahead of the log", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const all = sampleEvents(30)
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* openFile(dir)
          yield* journal.append(all)
          yield* journal.saveSnapshot(State.toSnapshot(all.reduce(Decider.evolve, State.initial(config))), 30)
        })
      )
      const snapshotPath = path.join(dir, EventJournal.SNAPSHOT_FILE)
      const text = yield* Effect.promise(() => fs.readFile(snapshotPath, "utf8"))
      const recordBytes = all.reduce((n, e) => n + recordOf(e).length, 0)
      yield* withLog(dir, (bytes) => bytes.subarray(0, recordBytes - recordOf(all[29]!).length))
      expect(yield* Effect.flip(Effect.scoped(openFile(dir)))).toMatchObject({
        _tag: "JournalCorrupt",
        file: snapshotPath
      })
      yield* Effect.promise(() => fs.writeFile(snapshotPath, text.slice(0, -5)))
      expect(yield* Effect.flip(Effect.scoped(openFile(dir)))).toMatchObject({
        _tag: "JournalCorrupt",
        file: snapshotPath
      })
      yield* Effect.promise(() =>
        fs.writeFile(snapshotPath, JSON.stringify({ position: 1, snapshot: { version: 2 } }))
      )
      expect(yield* Effect.flip(Effect.scoped(openFile(dir)))).toMatchObject({
        _tag: "JournalCorrupt",
        file: snapshotPath
      })
    })
  )
})

describe("EventJournal layerFile: the run file and the writer", () => {
  it.scopedLive("endRun is recorded after the appends queued before it, at the position they reach", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // The first append's fsync waits on a gate, so the others and the endRun queue behind it.
      let release: () => void = () => undefined
      const gate = new Promise<void>((resolve) => {
        release = resolve
      })
      let gated = false
      const io: journalFile.LogIo = {
        ...journalFile.nodeIo,
        sync: async (h) => {
          if (gated) await gate
          return journalFile.nodeIo.sync(h)
        }
      }
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* journalFile.make({ directory: dir, io })
          yield* journal.beginRun(header)
          gated = true
          const first = yield* Effect.fork(journal.append(acks(1, 3)))
          yield* Effect.sleep("20 millis")
          const rest = yield* Effect.fork(
            Effect.all([journal.append(acks(4, 2)), journal.append(acks(6, 4))], { concurrency: "unbounded" })
          )
          yield* Effect.sleep("20 millis")
          const ended = yield* Effect.fork(journal.endRun)
          yield* Effect.sleep("20 millis")
          // Nothing is durable yet, so nothing is recorded yet either.
          expect(yield* journal.position).toBe(0)
          release()
          yield* Fiber.join(first)
          yield* Fiber.join(rest)
          yield* Fiber.join(ended)
          expect(yield* journal.position).toBe(9)
        })
      )
      const text = yield* Effect.promise(() => fs.readFile(path.join(dir, EventJournal.RUN_FILE), "utf8"))
      expect(JSON.parse(text)).toMatchObject({ run: "closed", closedAt: 9 })
      expect(yield* Effect.scoped(Effect.flatMap(openFile(dir), (j) => j.beginRun(header)))).toEqual({
        _tag: "Clean"
      })
    })
  )
})

describe("EventJournal layerFile: failures and group commit", () => {
  const counting = () => {
    const counts = { writes: 0, syncs: 0 }
    const io: journalFile.LogIo = {
      write: (h, bytes, position) => {
        counts.writes++
        return journalFile.nodeIo.write(h, bytes, position)
      },
      sync: (h) => {
        counts.syncs++
        return journalFile.nodeIo.sync(h)
      },
      truncate: journalFile.nodeIo.truncate,
      replace: journalFile.nodeIo.replace
    }
    return { counts, io }
  }

  it.scoped("group-commits concurrent appends: far fewer fsyncs than batches", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { counts, io } = counting()
      const journal = yield* journalFile.make({ directory, io })
      yield* Effect.all(
        Array.from({ length: 300 }, (_, i) => journal.append(acks(i * 10, 1))),
        { concurrency: "unbounded" }
      )
      expect(yield* journal.position).toBe(300)
      expect(counts.syncs).toBe(counts.writes)
      expect(counts.syncs).toBeLessThan(30)
    })
  )

  it.scoped("a failed fsync fails the append, rolls the log back, and the journal goes on", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      let failNext = false
      const io: journalFile.LogIo = {
        ...journalFile.nodeIo,
        sync: (h) => {
          if (failNext) {
            failNext = false
            return Promise.reject(Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO" }))
          }
          return h.sync()
        }
      }
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* journalFile.make({ directory, io })
          yield* journal.append(acks(1, 5))
          failNext = true
          const error = yield* Effect.flip(journal.append(acks(6, 3)))
          expect(error).toMatchObject({ _tag: "JournalIoError", op: "append" })
          expect(yield* journal.position).toBe(5)
          expect(yield* journal.append(acks(100, 2))).toBe(7)
        })
      )
      const journal = yield* openFile(directory)
      expect(journal.recovery).toBeUndefined()
      expect(events(yield* readAll(journal))).toEqual([...acks(1, 5), ...acks(100, 2)])
    })
  )

  it.scoped("a torn write whose rollback fails makes the journal refuse appends; reopening recovers", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      let broken = false
      const io: journalFile.LogIo = {
        write: async (h, bytes, position) => {
          if (!broken) return journalFile.nodeIo.write(h, bytes, position)
          await journalFile.nodeIo.write(h, bytes.subarray(0, bytes.length - 3), position)
          throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" })
        },
        sync: journalFile.nodeIo.sync,
        truncate: (h, length) =>
          broken
            ? Promise.reject(new Error("EIO: i/o error, ftruncate"))
            : journalFile.nodeIo.truncate(h, length),
        replace: journalFile.nodeIo.replace
      }
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* journalFile.make({ directory, io })
          yield* journal.append(acks(1, 5))
          broken = true
          expect((yield* Effect.flip(journal.append(acks(6, 3))))._tag).toBe("JournalIoError")
          broken = false
          const error = yield* Effect.flip(journal.append(acks(9, 1)))
          expect(error._tag).toBe("JournalIoError")
          expect(error.message).toContain("reopen")
          expect(yield* journal.position).toBe(5)
        })
      )
      // The two whole records of the failed batch are there (the outcome of a failed append is unknown), its torn third is cut.
      const journal = yield* openFile(directory).pipe(Logger.withMinimumLogLevel(LogLevel.Error))
      expect(journal.recovery).toMatchObject({ reason: "short payload" })
      expect(events(yield* readAll(journal))).toEqual(acks(1, 7))
    })
  )

  it.scoped("closing commits the batches already queued; later appends are refused", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const fibers = yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* openFile(directory)
          // Appends in flight when the scope closes: queued ones are committed, the rest refused.
          const append = (i: number) => Effect.forkDaemon(Effect.exit(journal.append(acks(i, 1))))
          const early = yield* Effect.all(Array.from({ length: 50 }, (_, i) => append(i)))
          yield* Effect.yieldNow()
          const late = yield* Effect.all(Array.from({ length: 50 }, (_, i) => append(50 + i)))
          const fibers = [...early, ...late]
          return fibers
        })
      )
      const exits = yield* Effect.all(fibers.map(Fiber.join))
      const committed = exits.flatMap((exit, i) => (Exit.isSuccess(exit) ? [i] : []))
      for (const exit of exits)
        if (Exit.isFailure(exit))
          expect(Cause.failureOption(exit.cause)).toMatchObject(Option.some({ _tag: "JournalIoError" }))
      expect(committed.length).toBeGreaterThanOrEqual(50)
      const reopened = yield* openFile(directory)
      const seqs = events(yield* readAll(reopened)).map((e) => (e.type === "Acked" ? e.seq : -1))
      expect(seqs.sort((a, b) => a - b)).toEqual(committed)
    })
  )
})

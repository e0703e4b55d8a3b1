/**
 * The ActivityLog contract, run against every layer (fresh log, commit and reopen,
 * alternating slots, idempotence, refused requests, damaged slots, widening to
 * another extent size, serialized commits), then the file layer's own rules: the
 * files it writes, failed writes, closing.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Effect, Either, Exit, Layer, Logger, LogLevel, Option, type Scope } from "effect"
import * as ActivityLog from "../../src/adapters/ActivityLog.js"
import { decodeSlot, encodeSlot } from "../../src/adapters/internal/activityLog.js"
import * as activityLogFile from "../../src/adapters/internal/activityLogFile.js"

type Log = ActivityLog.ActivityLog.Service
type Slots = readonly [Option.Option<Uint8Array>, Option.Option<Uint8Array>]

/** One log's storage: open it (again), look at or replace its slots' bytes. */
interface Storage {
  readonly open: (extentBytes?: number) => Effect.Effect<Log, ActivityLog.ActivityLogIoError, Scope.Scope>
  readonly slots: Effect.Effect<Slots>
  readonly setSlot: (slot: 0 | 1, bytes: Uint8Array) => Effect.Effect<void>
}

const tempDir = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-al-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

const build = <E>(layer: Layer.Layer<ActivityLog.ActivityLog, E>) =>
  Effect.map(Layer.build(layer), (ctx) => Context.get(ctx, ActivityLog.ActivityLog))

const readSlotFile = (file: string) =>
  fs.readFile(file).then(
    (b) => Option.some(new Uint8Array(b)),
    () => Option.none()
  )

const layers: ReadonlyArray<readonly [string, Effect.Effect<Storage, never, Scope.Scope>]> = [
  [
    "layerMemory",
    Effect.sync((): Storage => {
      const store = ActivityLog.makeMemoryStore()
      return {
        open: (extentBytes) => build(ActivityLog.layerMemory({ store, extentBytes })),
        slots: Effect.sync(() => [Option.fromNullable(store.slots[0]), Option.fromNullable(store.slots[1])]),
        setSlot: (slot, bytes) =>
          Effect.sync(() => {
            store.slots[slot] = bytes
          })
      }
    })
  ],
  [
    "layerFile",
    Effect.map(tempDir, (directory): Storage => {
      const file = (slot: 0 | 1) => path.join(directory, ActivityLog.SLOT_FILES[slot])
      return {
        open: (extentBytes) => build(ActivityLog.layerFile({ directory, extentBytes })),
        slots: Effect.promise(
          async () => [await readSlotFile(file(0)), await readSlotFile(file(1))] as const
        ),
        setSlot: (slot, bytes) => Effect.promise(() => fs.writeFile(file(slot), bytes))
      }
    })
  ]
]

/** Opens the log in its own scope, runs `f`, closes it. */
const session = <A, E>(storage: Storage, f: (log: Log) => Effect.Effect<A, E>, extentBytes?: number) =>
  Effect.scoped(Effect.flatMap(storage.open(extentBytes), f))

const reopen = (storage: Storage, extentBytes?: number) => session(storage, Effect.succeed, extentBytes)

/** Runs `self` with its log lines collected in `into` ("LEVEL message"). */
const capturingLogs = <A, E, R>(self: Effect.Effect<A, E, R>, into: Array<string>) =>
  self.pipe(
    Effect.provide(
      Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ logLevel, message }) => {
          into.push(`${logLevel.label} ${String(message)}`)
        })
      )
    )
  )

const seqs = (slots: Slots) =>
  slots.map((s) =>
    Option.match(s, {
      onNone: () => undefined,
      onSome: (bytes) => Either.match(decodeSlot(bytes), { onLeft: () => "damaged", onRight: (d) => d.seq })
    })
  )

const failure = <A, E>(exit: Exit.Exit<A, E>) =>
  Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()

const contract = (name: string, storage: Effect.Effect<Storage, never, Scope.Scope>) =>
  describe(`ActivityLog contract: ${name}`, () => {
    it.scoped("a fresh log recovers some([]) and writes nothing until a commit changes the set", () =>
      Effect.gen(function* () {
        const store = yield* storage
        const log = yield* reopen(store)
        expect(log.extentBytes).toBe(ActivityLog.DEFAULT_EXTENT_BYTES)
        expect(log.recovered).toEqual(Option.some([]))
        yield* session(store, (l) =>
          Effect.gen(function* () {
            expect(yield* l.active).toEqual([])
            yield* l.commit([], [])
            yield* l.commit([], [1, 2])
          })
        )
        expect(yield* store.slots).toEqual([Option.none(), Option.none()])
        expect((yield* reopen(store)).recovered).toEqual(Option.some([]))
      })
    )

    it.scoped("a commit is durable: reopening recovers exactly the set, ascending", () =>
      Effect.gen(function* () {
        const store = yield* storage
        yield* session(store, (log) =>
          Effect.gen(function* () {
            yield* log.commit([9, 3, 0, 3, 0xffff_ffff], [])
            expect(yield* log.active).toEqual([0, 3, 9, 0xffff_ffff])
          })
        )
        const log = yield* reopen(store)
        expect(log.recovered).toEqual(Option.some([0, 3, 9, 0xffff_ffff]))
        yield* session(store, (l) => Effect.map(l.active, (a) => expect(a).toEqual([0, 3, 9, 0xffff_ffff])))
      })
    )

    it.scoped("commits alternate slots with rising seqs; reopening (mid-way too) gives the last set", () =>
      Effect.gen(function* () {
        const store = yield* storage
        const model = new Set<number>()
        const expectedSeqs: Array<number | undefined> = [undefined, undefined]
        for (let round = 0; round < 3; round++)
          yield* session(store, (log) =>
            Effect.gen(function* () {
              for (let i = 0; i < 7; i++) {
                const activate = [round * 10 + i, i]
                const retire = [round * 10 + i - 3]
                yield* log.commit(
                  activate,
                  retire.filter((e) => e >= 0 && !activate.includes(e))
                )
                for (const e of activate) model.add(e)
                for (const e of retire) if (!activate.includes(e)) model.delete(e)
                const n = round * 7 + i + 1
                // The first commit writes slot 0, then they alternate.
                expectedSeqs[(n - 1) % 2] = n
                expect(seqs(yield* store.slots)).toEqual(expectedSeqs)
                expect(yield* log.active).toEqual([...model].sort((a, b) => a - b))
              }
            })
          )
        expect((yield* reopen(store)).recovered).toEqual(Option.some([...model].sort((a, b) => a - b)))
      })
    )

    it.scoped("activating an active extent and retiring an inactive one are allowed and change nothing", () =>
      Effect.gen(function* () {
        const store = yield* storage
        yield* session(store, (log) =>
          Effect.gen(function* () {
            yield* log.commit([1, 2, 3], [])
            const before = yield* store.slots
            yield* log.commit([1, 2], [7, 8])
            yield* log.commit([3, 3], [])
            expect(yield* log.active).toEqual([1, 2, 3])
            // Nothing changed, so nothing was written.
            expect(yield* store.slots).toEqual(before)
            yield* log.commit([4], [1, 99])
            expect(yield* log.active).toEqual([2, 3, 4])
          })
        )
        expect((yield* reopen(store)).recovered).toEqual(Option.some([2, 3, 4]))
      })
    )

    it.scoped("refuses bad extents and an extent in both lists before writing anything", () =>
      Effect.gen(function* () {
        const store = yield* storage
        yield* session(store, (log) =>
          Effect.gen(function* () {
            yield* log.commit([5, 6], [])
            const before = yield* store.slots
            const bad: ReadonlyArray<readonly [ReadonlyArray<number>, ReadonlyArray<number>]> = [
              [[-1], []],
              [[1.5], []],
              [[Number.NaN], []],
              [[Number.POSITIVE_INFINITY], []],
              [[2 ** 32], []],
              [[7], [-0.5]],
              [[], [2 ** 40]],
              [[1, 2, 8], [8]],
              [
                [7, 5],
                [6, 5]
              ]
            ]
            for (const [activate, retire] of bad) {
              const exit = yield* Effect.exit(log.commit(activate, retire))
              expect(failure(exit)).toMatchObject(Option.some({ _tag: "ActivityLogInvalidRequest" }))
              expect(yield* log.active).toEqual([5, 6])
            }
            expect(yield* store.slots).toEqual(before)
          })
        )
        expect((yield* reopen(store)).recovered).toEqual(Option.some([5, 6]))
      })
    )

    it.scoped("serializes concurrent commits: every one lands, each in its own transaction", () =>
      Effect.gen(function* () {
        const store = yield* storage
        yield* session(store, (log) =>
          Effect.gen(function* () {
            yield* Effect.all(
              Array.from({ length: 40 }, (_, i) => log.commit([i], i >= 20 ? [i - 20] : [])),
              { concurrency: "unbounded" }
            )
            const active = yield* log.active
            // Each retire of i − 20 raced the activate of i − 20: either order is a valid serialization.
            expect(active.filter((e) => e >= 20)).toEqual(Array.from({ length: 20 }, (_, i) => 20 + i))
            expect(Math.max(...seqs(yield* store.slots).map((s) => (typeof s === "number" ? s : 0)))).toBe(40)
          })
        )
      })
    )

    it.scoped(
      "one damaged slot: recovers the other, logs it, and the next commit overwrites the damage",
      () =>
        Effect.gen(function* () {
          const store = yield* storage
          yield* session(store, (log) =>
            Effect.gen(function* () {
              yield* log.commit([1, 2], []) // seq 1, slot 0
              yield* log.commit([3], [1]) // seq 2, slot 1
            })
          )
          // The newest slot torn: the previous set comes back.
          const slot1 = Option.getOrThrow((yield* store.slots)[1])
          yield* store.setSlot(1, slot1.subarray(0, slot1.length - 3))
          const logs: Array<string> = []
          const log = yield* capturingLogs(reopen(store), logs)
          expect(log.recovered).toEqual(Option.some([1, 2]))
          expect(logs.some((l) => l.startsWith("INFO") && l.includes("activity.1"))).toBe(true)
          // The damaged slot is left alone by opening, then written by the next commit.
          expect(seqs(yield* store.slots)).toEqual([1, "damaged"])
          yield* session(store, (l) => l.commit([4], []))
          expect(seqs(yield* store.slots)).toEqual([1, 2])
          expect((yield* reopen(store)).recovered).toEqual(Option.some([1, 2, 4]))
          // The older slot damaged instead: the newest wins, quietly enough.
          yield* store.setSlot(0, new Uint8Array(40))
          expect((yield* reopen(store).pipe(Logger.withMinimumLogLevel(LogLevel.Error))).recovered).toEqual(
            Option.some([1, 2, 4])
          )
        })
    )

    it.scoped("both slots damaged: none, a warning naming each slot, and commits start a fresh set", () =>
      Effect.gen(function* () {
        const store = yield* storage
        yield* session(store, (log) => Effect.andThen(log.commit([1], []), log.commit([2], [])))
        yield* store.setSlot(0, new Uint8Array(0))
        const slot1 = new Uint8Array(Option.getOrThrow((yield* store.slots)[1]))
        slot1[slot1.length - 1]! ^= 0x01
        yield* store.setSlot(1, slot1)
        const logs: Array<string> = []
        const log = yield* capturingLogs(reopen(store), logs)
        expect(log.recovered).toEqual(Option.none())
        const warning = logs.find((l) => l.startsWith("WARN"))
        expect(warning).toContain("activity.0")
        expect(warning).toContain("shorter than the 28-byte header")
        expect(warning).toContain("activity.1")
        expect(warning).toContain("CRC32C mismatch")
        yield* Effect.scoped(
          capturingLogs(
            Effect.gen(function* () {
              const l = yield* store.open()
              expect(yield* l.active).toEqual([])
              yield* l.commit([7], [])
            }),
            []
          )
        )
        expect((yield* capturingLogs(reopen(store), [])).recovered).toEqual(Option.some([7]))
        // A present but never-valid slot alone is no fresh log either.
        const other = yield* storage
        yield* other.setSlot(0, new TextEncoder().encode("CDPSAL01"))
        expect((yield* capturingLogs(reopen(other), [])).recovered).toEqual(Option.none())
      })
    )

    it.scoped("reopened with another extentBytes, the set widens to cover the same bytes", () =>
      Effect.gen(function* () {
        const store = yield* storage
        yield* session(store, (log) => log.commit([0, 3, 4, 10], []), 8192)
        const quiet = Logger.withMinimumLogLevel(LogLevel.Error)
        const smaller = yield* reopen(store, 4096).pipe(quiet)
        expect(smaller.extentBytes).toBe(4096)
        expect(smaller.recovered).toEqual(Option.some([0, 1, 6, 7, 8, 9, 20, 21]))
        const larger = yield* reopen(store, 16384).pipe(quiet)
        expect(larger.recovered).toEqual(Option.some([0, 1, 2, 5]))
        // Sizes that do not divide each other: 8192-byte extent 4 (bytes 32768 … 40959) straddles two.
        expect((yield* reopen(store, 12288).pipe(quiet)).recovered).toEqual(Option.some([0, 2, 3, 6, 7]))
        // The next commit stores the set at the new size.
        yield* session(store, (log) => log.commit([], [1]), 16384).pipe(quiet)
        const slots = yield* store.slots
        const newest = decodeSlot(Option.getOrThrow(slots[1]))
        expect(newest).toEqual(Either.right({ seq: 2, extentBytes: 16384, extents: [0, 2, 5] }))
        expect((yield* reopen(store, 16384)).recovered).toEqual(Option.some([0, 2, 5]))
      })
    )

    it.scoped("two valid slots with the same seq (only a hand-made log has them) recover their union", () =>
      Effect.gen(function* () {
        const store = yield* storage
        yield* store.setSlot(0, encodeSlot({ seq: 5, extentBytes: 4096, extents: [1, 3] }))
        yield* store.setSlot(1, encodeSlot({ seq: 5, extentBytes: 4096, extents: [2, 3] }))
        yield* session(
          store,
          (log) =>
            Effect.gen(function* () {
              expect(log.recovered).toEqual(Option.some([1, 2, 3]))
              yield* log.commit([4], [])
            }),
          4096
        )
        expect(seqs(yield* store.slots)).toEqual([6, 5])
        expect((yield* reopen(store, 4096)).recovered).toEqual(Option.some([1, 2, 3, 4]))
      })
    )

    it.scoped("a stored set that cannot be represented at the new size recovers as none", () =>
      Effect.gen(function* () {
        const store = yield* storage
        yield* store.setSlot(
          0,
          encodeSlot({ seq: 1, extentBytes: ActivityLog.MAX_EXTENT_BYTES, extents: [0xffff_fff0] })
        )
        const logs: Array<string> = []
        expect((yield* capturingLogs(reopen(store, 512), logs)).recovered).toEqual(Option.none())
        expect(logs.some((l) => l.startsWith("WARN") && l.includes("cannot be represented"))).toBe(true)
        expect((yield* reopen(store, ActivityLog.MAX_EXTENT_BYTES)).recovered).toEqual(
          Option.some([0xffff_fff0])
        )
      })
    )

    it.scoped("an extentBytes that is not a positive multiple of 512 is a defect", () =>
      Effect.gen(function* () {
        const store = yield* storage
        for (const bad of [0, -512, 1000, 512.5, 2 ** 32, Number.NaN]) {
          const exit = yield* Effect.exit(reopen(store, bad))
          expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
          expect(Cause.pretty((exit as Exit.Failure<unknown, unknown>).cause)).toContain("extentBytes")
        }
        expect((yield* reopen(store, 512)).extentBytes).toBe(512)
      })
    )
  })

for (const [name, storage] of layers) contract(name, storage)

// ---------------------------------------------------------------------------
// The file layer: its files, failed writes, closing.

describe("ActivityLog layerFile", () => {
  it.scoped("keeps activity.0 and activity.1 in the directory, each exactly one encoded slot", () =>
    Effect.gen(function* () {
      const directory = path.join(yield* tempDir, "nested", "al")
      const open = () => build(ActivityLog.layerFile({ directory, extentBytes: 512 }))
      yield* Effect.scoped(
        Effect.gen(function* () {
          const log = yield* open()
          yield* log.commit(
            Array.from({ length: 100 }, (_, i) => i),
            []
          )
          yield* log.commit([200], [])
          // Shorter than the slot's previous content: the file is cut to the new length.
          yield* log.commit(
            [],
            Array.from({ length: 100 }, (_, i) => i)
          )
        })
      )
      expect((yield* Effect.promise(() => fs.readdir(directory))).sort()).toEqual([
        "activity.0",
        "activity.1"
      ])
      const bytes = yield* Effect.promise(() => fs.readFile(path.join(directory, "activity.0")))
      expect(Buffer.compare(bytes, encodeSlot({ seq: 3, extentBytes: 512, extents: [200] }))).toBe(0)
      expect(bytes.subarray(0, 8).toString("latin1")).toBe("CDPSAL01")
    })
  )

  it.scoped("a failed write fails the commit with ActivityLogIoError and keeps the previous set", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      let failing = false
      const io: activityLogFile.SlotIo = {
        ...activityLogFile.nodeIo,
        write: async (handle, bytes, position) => {
          if (!failing) return activityLogFile.nodeIo.write(handle, bytes, position)
          // Half the slot reaches the file, then the OS fails.
          await activityLogFile.nodeIo.write(handle, bytes.subarray(0, bytes.length >> 1), position)
          throw new Error("EIO: injected")
        }
      }
      yield* Effect.scoped(
        Effect.gen(function* () {
          const log = yield* activityLogFile.make({ directory, io })
          yield* log.commit([1], []) // seq 1, slot 0
          yield* log.commit([2], []) // seq 2, slot 1
          failing = true
          const exit = yield* Effect.exit(log.commit([3], [1]))
          expect(failure(exit)).toMatchObject(Option.some({ _tag: "ActivityLogIoError", op: "commit" }))
          expect(yield* log.active).toEqual([1, 2])
          // A crash now: the half-written slot 0 is refused, slot 1 still holds [1, 2].
          const meanwhile = yield* Effect.scoped(
            activityLogFile.make({ directory }).pipe(Logger.withMinimumLogLevel(LogLevel.Error))
          )
          expect(meanwhile.recovered).toEqual(Option.some([1, 2]))
          // Without a crash, the next commit writes the damaged slot again.
          failing = false
          yield* log.commit([4], [])
        })
      )
      const files = yield* Effect.promise(async () =>
        Promise.all([0, 1].map((i) => fs.readFile(path.join(directory, `activity.${i}`))))
      )
      expect(files.map((b) => Either.map(decodeSlot(b), (s) => [s.seq, s.extents]))).toEqual([
        Either.right([3, [1, 2, 4]]),
        Either.right([2, [1, 2]])
      ])
    })
  )

  it.scoped("commits after the scope closed fail with ActivityLogIoError", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const log = yield* Effect.scoped(activityLogFile.make({ directory }))
      const exit = yield* Effect.exit(log.commit([1], []))
      expect(failure(exit)).toMatchObject(Option.some({ _tag: "ActivityLogIoError" }))
    })
  )

  it.scoped("an unreadable directory fails the layer with ActivityLogIoError", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "not-a-directory")
      yield* Effect.promise(() => fs.writeFile(file, "x"))
      const exit = yield* Effect.exit(Effect.scoped(activityLogFile.make({ directory: file })))
      expect(failure(exit)).toMatchObject(Option.some({ _tag: "ActivityLogIoError", op: "open" }))
    })
  )
})

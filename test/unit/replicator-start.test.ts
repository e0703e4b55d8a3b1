/**
 * The replicator against the wrong disk (issue 13, finding 5), in process:
 * - a refusal no retry can heal (`geometry-mismatch`, `bad-geometry`) stops it with the
 *   refusal as the typed cause, after one attempt; transient ones are retried and said
 *   at WARN with their reason;
 * - a receiver ahead of everything the journal ever sent (another history of the disk)
 *   stops it with `ReceiverAheadOfJournal`, and it does not keep reconnecting;
 * - a journal that records another geometry, or a disk whose geometry is not the
 *   config's, is refused at start, before any guest write;
 * - a failure to record the run (a full file system) is a typed journal error at start.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, Effect, Either, Exit, Layer, Logger, LogLevel, Schedule } from "effect"
import { describe, expect, it } from "vitest"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as journalFile from "../../src/adapters/internal/journalFile.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import * as Replicator from "../../src/replicator/Replicator.js"

const BS = 4096
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: 64, window: 4, congestionLimit: 1 << 20 })
)
const header = { blockSize: BS, blockCount: 64, initial: config.initial }

/** A receiver that refuses the first hellos with `reasons`, then lets them through; counts hellos. */
const refusing = (reasons: ReadonlyArray<string>) => {
  const counter = { hellos: 0 }
  const layer = Layer.effect(
    LogReceiver.LogReceiver,
    Effect.map(LogReceiver.LogReceiver, (inner) => ({
      connect: (hello: LogReceiver.Hello) =>
        Effect.suspend(() => {
          const reason = reasons[counter.hellos++]
          return reason === undefined
            ? inner.connect(hello)
            : Effect.fail(
                new LogReceiver.ReceiverRefused({ reason, detail: `refused for the test (${reason})` })
              )
        })
    }))
  )
  return { counter, layer }
}

/** Every log line, with its level. */
const capture = () => {
  const lines: Array<{ level: string; message: string }> = []
  const logger = Logger.make(({ logLevel, message }) => {
    lines.push({
      level: logLevel.label,
      message: Array.isArray(message) ? message.join(" ") : String(message)
    })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

const options: Replicator.Options = {
  diskId: "d",
  config,
  ackTimeout: "1 second",
  reconnect: Schedule.spaced("5 millis")
}

/** Builds a replicator over `receiver` (wrapping a memory receiver shared through `world`). */
const start = (
  receiver: Layer.Layer<LogReceiver.LogReceiver, never, LogReceiver.LogReceiver> | undefined,
  world: Layer.Layer<LogReceiver.LogReceiver | LogReceiver.MemoryReceiver>
) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(
      Replicator.layer(options).pipe(
        Layer.provideMerge(
          Layer.mergeAll(
            VirtualDisk.layerMemory(config),
            EventJournal.layerMemory(),
            receiver === undefined ? world : Layer.provide(receiver, world)
          )
        )
      )
    )
    return yield* Effect.provide(Replicator.Replicator, context)
  })

const stoppedCause = (exit: Exit.Exit<unknown, unknown>) => {
  expect(Exit.isFailure(exit)).toBe(true)
  const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
  expect(error).toBeInstanceOf(Replicator.ReplicatorStopped)
  return (error as Replicator.ReplicatorStopped).cause
}

describe("the replicator meets a receiver that refuses it", () => {
  for (const reason of ["geometry-mismatch", "bad-geometry"]) {
    it(`${reason} is fatal: it stops after one hello, with the refusal as its cause`, async () => {
      const { counter, layer } = refusing(Array.from({ length: 1000 }, () => reason))
      const logs = capture()
      const program = Effect.gen(function* () {
        const replicator = yield* start(layer, LogReceiver.layerMemory())
        // Without the fix the supervisor retries for ever and quiesce never returns.
        const exit = yield* replicator.quiesce.pipe(
          Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => "still retrying" }),
          Effect.exit
        )
        const cause = stoppedCause(exit)
        expect(cause).toBeInstanceOf(LogReceiver.ReceiverRefused)
        expect((cause as LogReceiver.ReceiverRefused).reason).toBe(reason)
        const stopped = yield* Effect.flip(replicator.stopped)
        expect(stopped.cause).toBe(cause)
        // Refused writes: the disk is not touched once stopped.
        expect((yield* Effect.either(replicator.write(0, new Uint8Array(BS))))._tag).toBe("Left")
        return counter.hellos
      })
      const hellos = await Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(logs.layer)))
      expect(hellos).toBe(1)
      const errors = logs.lines.filter((l) => l.level === "ERROR")
      expect(errors).toHaveLength(1)
      expect(errors[0]!.message).toContain(reason)
    })
  }

  it("already-connected and log-failed are retried, each said at WARN with its reason", async () => {
    const reasons = ["already-connected", "log-failed", "already-connected"]
    const { counter, layer } = refusing(reasons)
    const logs = capture()
    const program = Effect.gen(function* () {
      const replicator = yield* start(layer, LogReceiver.layerMemory())
      yield* replicator.write(0, new Uint8Array(BS).fill(1))
      yield* replicator.quiesce
      return counter.hellos
    })
    const hellos = await Effect.runPromise(
      Effect.scoped(program).pipe(Effect.provide(logs.layer), Logger.withMinimumLogLevel(LogLevel.Info))
    )
    expect(hellos).toBe(reasons.length + 1)
    const warnings = logs.lines.filter((l) => l.level === "WARN" && l.message.includes("refused"))
    expect(warnings.map((w) => reasons.find((r) => w.message.includes(r)))).toEqual(reasons)
  })

  it("a receiver ahead of everything this journal sent stops it with ReceiverAheadOfJournal, once", async () => {
    const world = LogReceiver.layerMemory()
    const program = Effect.gen(function* () {
      const shared = yield* Layer.build(world)
      const worldLayer = Layer.succeedContext(shared)
      // A first history of the disk: its journal is then lost.
      yield* Effect.scoped(
        Effect.gen(function* () {
          const first = yield* start(undefined, worldLayer)
          for (let i = 0; i < 5; i++) yield* first.write(i * BS, new Uint8Array(BS).fill(i + 1))
          yield* first.quiesce
        })
      )
      const { counter, layer } = refusing([])
      const logs = capture()
      const second = yield* start(layer, worldLayer).pipe(Effect.provide(logs.layer))
      const exit = yield* second.quiesce.pipe(Effect.exit)
      const cause = stoppedCause(exit)
      expect(cause).toBeInstanceOf(Replicator.ReceiverAheadOfJournal)
      const ahead = cause as Replicator.ReceiverAheadOfJournal
      expect(ahead.diskId).toBe("d")
      expect(ahead.lastSent).toBe(0)
      expect(ahead.receiverSeq).toBeGreaterThan(0)
      // The stopped replicator does not keep knocking (each hello was one more stop before).
      yield* Effect.sleep("100 millis")
      expect(counter.hellos).toBe(1)
      expect(logs.lines.filter((l) => l.level === "ERROR")).toHaveLength(1)
    })
    await Effect.runPromise(Effect.scoped(program))
  })
})

describe("the replicator checks its disk at start", () => {
  it("refuses a journal that records another geometry, before any guest write", async () => {
    for (const recorded of [
      { ...header, blockCount: 32 },
      { ...header, blockCount: 128 },
      { ...header, blockSize: 8192, blockCount: 32 },
      { ...header, initial: "full-sync" as const }
    ]) {
      const store = EventJournal.makeMemoryStore()
      await Effect.runPromise(EventJournal.makeMemory(store).beginRun(recorded))
      const before = store.run
      const disk = VirtualDisk.makeMemory(config)
      const exit = await Effect.runPromiseExit(
        Effect.scoped(
          Layer.build(
            Replicator.layer(options).pipe(
              Layer.provide(
                Layer.mergeAll(
                  Layer.succeed(VirtualDisk.VirtualDisk, disk),
                  EventJournal.layerMemory({ store }),
                  LogReceiver.layerMemory()
                )
              )
            )
          )
        )
      )
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      expect(error).toBeInstanceOf(EventJournal.JournalGeometryMismatch)
      expect((error as EventJournal.JournalGeometryMismatch).recorded).toEqual(recorded)
      expect((error as EventJournal.JournalGeometryMismatch).given).toEqual(header)
      // Nothing written: not the run file, not the disk.
      expect(store.run).toBe(before)
      expect(store.events).toEqual([])
      expect(disk.allocatedBlocks()).toBe(0)
    }
  })

  it("refuses a disk whose geometry is not the config's", async () => {
    const exit = await Effect.runPromiseExit(
      Effect.scoped(
        Layer.build(
          Replicator.layer(options).pipe(
            Layer.provide(
              Layer.mergeAll(
                VirtualDisk.layerMemory({ blockSize: BS, blockCount: 63 }),
                EventJournal.layerMemory(),
                LogReceiver.layerMemory()
              )
            )
          )
        )
      )
    )
    const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
    expect(error).toBeInstanceOf(Replicator.GeometryMismatch)
  })

  it("a run file that cannot be written (no space) is a typed journal error at start", async () => {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-start-"))
    try {
      const io: journalFile.LogIo = {
        ...journalFile.nodeIo,
        replace: () =>
          Promise.reject(
            Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" })
          )
      }
      const exit = await Effect.runPromiseExit(
        Effect.scoped(
          Layer.build(
            Replicator.layer(options).pipe(
              Layer.provide(
                Layer.mergeAll(
                  VirtualDisk.layerMemory(config),
                  Layer.scoped(EventJournal.EventJournal, journalFile.make({ directory, io })),
                  LogReceiver.layerMemory()
                )
              )
            )
          )
        )
      )
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      expect(error).toBeInstanceOf(EventJournal.JournalIoError)
      expect((error as EventJournal.JournalIoError).message).toContain("no space left on device")
    } finally {
      await fs.rm(directory, { recursive: true, force: true })
    }
  })
})

/**
 * An NBD server in process for tests: the replicator over an in-memory disk, journal and
 * receiver, served on loopback TCP (port 0) or a unix socket. The disk's writes and the
 * journal's appends can be held (latches), the journaled writes are recorded as the
 * journal makes them durable, and every log line is kept, so a test can see what the
 * server answered, when, and what it logged.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, Effect, Either, ExecutionStrategy, Exit, Layer, Logger, type LogLevel, Scope } from "effect"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import * as Nbd from "../../src/nbd/Nbd.js"
import type { Endpoint } from "../../src/nbd/internal/client.js"
import * as NbdMutants from "../../src/nbd/internal/mutants.js"
import * as Replicator from "../../src/replicator/Replicator.js"

export const BLOCK = 64 * 1024
export const BLOCKS = 64
export const DISK_BYTES = BLOCK * BLOCKS
export const DISK_ID = "nbd-under-test"

export interface LogLine {
  readonly level: LogLevel.LogLevel["label"]
  readonly text: string
  /** Tags of the tagged errors logged with the line. */
  readonly tags: ReadonlyArray<string>
}

export interface Harness {
  readonly server: Nbd.Server
  readonly endpoint: Endpoint
  readonly disk: VirtualDisk.VirtualDisk.Service
  readonly replicator: Replicator.Replicator.Service
  readonly receiver: LogReceiver.MemoryReceiver.Service
  /** Byte ranges of the writes whose events the journal made durable, in order. */
  readonly journaled: Array<{ readonly offset: number; readonly length: number }>
  readonly logs: Array<LogLine>
  /** While closed, disk writes wait (after `diskWriteEntered` is told). */
  readonly diskWrites: Effect.Latch
  readonly diskWriteEntered: Array<number>
  /** While closed, journal appends wait. */
  readonly journalAppends: Effect.Latch
  /** Closes the server (not the replicator), as the end of its scope would. */
  readonly closeServer: Effect.Effect<void>
  /** The replica (latest durable image at the receiver) equals the disk, after a quiesce. */
  readonly replicaEqualsDisk: Effect.Effect<boolean, unknown>
}

export interface HarnessOptions {
  readonly serve?: Partial<Nbd.ServeOptions>
  readonly unix?: boolean
  readonly mutants?: Partial<NbdMutants.Mutants>
}

const tagsOf = (value: unknown): Array<string> => {
  if (Array.isArray(value)) return value.flatMap(tagsOf)
  if (Cause.isCause(value)) return tagsOf(Cause.squash(value))
  return typeof value === "object" && value !== null && typeof (value as { _tag?: unknown })._tag === "string"
    ? [(value as { _tag: string })._tag]
    : []
}

const textOf = (value: unknown): string =>
  Array.isArray(value)
    ? value.map(textOf).join(" ")
    : value instanceof Error || (typeof value === "object" && value !== null && "message" in value)
      ? String((value as { message: unknown }).message)
      : String(value)

export const config = Either.getOrThrow(
  Config.make({ blockSize: BLOCK, blockCount: BLOCKS, window: 16, congestionLimit: 4 * 1024 * 1024 })
)

/** Builds the harness in the scope; everything closes with it (server first, then the replicator). */
export const make = (options: HarnessOptions = {}): Effect.Effect<Harness, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const logs: Array<LogLine> = []
    const journaled: Array<{ offset: number; length: number }> = []
    const diskWrites = yield* Effect.makeLatch(true)
    const journalAppends = yield* Effect.makeLatch(true)
    const diskWriteEntered: Array<number> = []
    const memoryDisk = VirtualDisk.makeMemory(config)
    const disk: VirtualDisk.VirtualDisk.Service = {
      ...memoryDisk,
      // Writes wait at the latch: the synchronous write would pass it.
      writeSync: undefined,
      write: (offset, bytes) =>
        Effect.suspend(() => {
          diskWriteEntered.push(offset)
          return Effect.zipRight(diskWrites.await, memoryDisk.write(offset, bytes))
        })
    }
    const memoryJournal = EventJournal.makeMemory(EventJournal.makeMemoryStore())
    const journal: EventJournal.EventJournal.Service = {
      ...memoryJournal,
      append: (events) => Effect.zipRight(journalAppends.await, memoryJournal.append(events))
    }
    const logger = Logger.make<unknown, void>(({ logLevel, message }) => {
      logs.push({ level: logLevel.label, text: textOf(message), tags: tagsOf(message) })
    })
    const replicatorLayer = Replicator.layer({
      diskId: DISK_ID,
      config,
      switchoverHold: 0,
      onEvents: (events) =>
        Effect.sync(() => {
          for (const e of events)
            if (e.type === "WriteStreamed" || e.type === "WriteTracked")
              journaled.push({ offset: e.offset, length: e.length })
        })
    }).pipe(
      Layer.provideMerge(
        Layer.mergeAll(
          Layer.succeed(VirtualDisk.VirtualDisk, disk),
          Layer.succeed(EventJournal.EventJournal, journal),
          LogReceiver.layerMemory()
        )
      )
    )
    const context = yield* Layer.build(replicatorLayer)
    const replicator = yield* Effect.provide(Replicator.Replicator, context)
    const receiver = yield* Effect.provide(LogReceiver.MemoryReceiver, context)
    const socketPath = options.unix === true ? yield* tempSocketPath : undefined
    // The server in a scope of its own, inside the harness's: a test may close it alone.
    const serverScope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const server = yield* Nbd.serve({
      listen: socketPath === undefined ? { host: "127.0.0.1", port: 0 } : { path: socketPath },
      exportName: "test",
      maxPayload: 1024 * 1024,
      ...options.serve
    }).pipe(
      Scope.extend(serverScope),
      Effect.provide(context),
      Effect.provide(NbdMutants.layer(options.mutants ?? {})),
      Effect.provide(Logger.replace(Logger.defaultLogger, logger))
    )
    const endpoint: Endpoint =
      server.address._tag === "Tcp"
        ? { host: server.address.host, port: server.address.port }
        : { path: server.address.path }
    return {
      server,
      endpoint,
      disk,
      replicator,
      receiver,
      journaled,
      logs,
      diskWrites,
      diskWriteEntered,
      journalAppends,
      closeServer: Scope.close(serverScope, Exit.void),
      replicaEqualsDisk: Effect.gen(function* () {
        yield* replicator.quiesce
        const replica = yield* receiver.image(DISK_ID)
        const image = yield* memoryDisk.read(0, DISK_BYTES)
        return Buffer.compare(Buffer.from(replica), Buffer.from(image)) === 0
      })
    } satisfies Harness
  }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none)))

const tempSocketPath = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-sync-nbd-"))
    return { dir, path: path.join(dir, "nbd.sock") }
  }),
  ({ dir }) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((t) => t.path))

/** A pattern only this (`seed`, `offset`) writes: a later read tells whose data is there. */
export const pattern = (seed: number, offset: number, length: number): Uint8Array => {
  const out = new Uint8Array(length)
  let x = (seed * 2654435761 + offset) >>> 0
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    out[i] = x >>> 24
  }
  return out
}

export const logged = (h: Harness, tag: string): boolean =>
  h.logs.some((l) => l.level === "WARN" && l.tags.includes(tag))

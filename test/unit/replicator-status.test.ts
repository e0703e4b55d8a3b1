/**
 * `Replicator.Status` says what an operator asks (issue 16): the dirty bytes, the drain
 * while it resyncs, the last recovery point the filter knows the receiver holds (never
 * one it does not), the last link loss, and — once it stopped — that it stopped and why.
 * In process, against the in-memory receiver (and one that refuses the disk).
 */
import { Chunk, Effect, Either, Fiber, Layer, Schedule, Stream } from "effect"
import { describe, expect, it } from "vitest"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import { filterDisk, serveFilterControl } from "../../src/cli/internal/control.js"
import * as Config from "../../src/domain/Config.js"
import * as Control from "../../src/internal/control.js"
import { layer as mutantLayer, type Mutants } from "../../src/replicator/internal/mutants.js"
import * as Replicator from "../../src/replicator/Replicator.js"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"

const BS = 4096
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: 64, window: 4, congestionLimit: 1 << 20 })
)

const options: Replicator.Options = {
  diskId: "d",
  config,
  ackTimeout: "1 second",
  reconnect: Schedule.spaced("5 millis")
}

const start = (receiver: Layer.Layer<LogReceiver.LogReceiver | LogReceiver.MemoryReceiver>) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(
      Replicator.layer(options).pipe(
        Layer.provideMerge(
          Layer.mergeAll(VirtualDisk.layerMemory(config), EventJournal.layerMemory(), receiver)
        )
      )
    )
    return {
      replicator: yield* Effect.provide(Replicator.Replicator, context),
      memory: yield* Effect.provide(LogReceiver.MemoryReceiver, context)
    }
  })

/** The in-memory receiver, refusing every hello as `geometry-mismatch` (no retry can heal it). */
const refusingReceiver = Layer.effect(
  LogReceiver.LogReceiver,
  Effect.succeed({
    connect: () =>
      Effect.fail(
        new LogReceiver.ReceiverRefused({
          reason: "geometry-mismatch",
          detail: "the receiver holds 32 blocks"
        })
      )
  })
).pipe(Layer.provideMerge(LogReceiver.layerMemory()))

const block = (n: number) => new Uint8Array(BS).fill(n)

describe("Replicator.Status", () => {
  it("in sync: no dirty bytes, no drain, and a last recovery point the receiver holds", async () => {
    const program = Effect.gen(function* () {
      const { replicator, memory } = yield* start(LogReceiver.layerMemory())
      for (let round = 1; round <= 5; round++) {
        for (let i = 0; i < 4; i++) yield* replicator.write(((round * 4 + i) % 64) * BS, block(round))
        yield* replicator.quiesce
        yield* memory.flush
        const s = yield* replicator.status
        expect(s.mode).toBe("sync")
        expect(s.link).toBe("up")
        expect(s.dirtyBlocks).toBe(0)
        expect(s.dirtyBytes).toBe(0)
        expect(s.blockSize).toBe(BS)
        expect(s.drain).toBeUndefined()
        expect(s.stopped).toBeUndefined()
        expect(s.lagRecords).toBe(0)
        // Quiescent: everything is acked, so the newest record is the newest point.
        expect(s.lastRecoveryPoint?.seq).toBe(s.watermark)
        expect(yield* memory.recoveryPoints("d")).toContain(s.lastRecoveryPoint!.seq)
      }
    })
    await Effect.runPromise(Effect.scoped(program))
  })

  /**
   * Writes, link cuts and ack stalls; every status published (one per decided batch)
   * is kept. Returns the claimed points the receiver does not mark as points.
   */
  const claimsThroughFaults = (mutants: Partial<Mutants> = {}) =>
    Effect.gen(function* () {
      const { replicator, memory } = yield* start(LogReceiver.layerMemory())
      const seen: Array<Replicator.Status> = []
      const watcher = yield* Effect.fork(
        replicator.changes.pipe(Stream.runForEach((s) => Effect.sync(() => seen.push(s))))
      )
      for (let round = 0; round < 12; round++) {
        if (round % 3 === 1) yield* memory.stallAcks(true)
        for (let i = 0; i < 20; i++)
          yield* replicator.write(((round * 7 + i * 3) % 64) * BS, block(round + i))
        if (round % 4 === 2) yield* replicator.dropLink("test: cut")
        if (round % 3 === 1) yield* memory.stallAcks(false)
        yield* replicator.quiesce
      }
      yield* Fiber.interrupt(watcher)
      seen.push(yield* replicator.status)
      const points = new Set(yield* memory.recoveryPoints("d"))
      const drains = seen.flatMap((s) => (s.drain === undefined ? [] : [s]))
      const last = seen.at(-1)!
      return {
        drains,
        last,
        claimed: seen.flatMap((s) => (s.lastRecoveryPoint === undefined ? [] : [s.lastRecoveryPoint.seq])),
        unheld: seen.flatMap((s) =>
          s.lastRecoveryPoint === undefined || points.has(s.lastRecoveryPoint.seq)
            ? []
            : [s.lastRecoveryPoint.seq]
        )
      }
    }).pipe(Effect.provide(mutantLayer(mutants)), Effect.scoped)

  it("never claims a recovery point the receiver does not hold, through losses, stalls and resyncs", async () => {
    const { drains, last, claimed, unheld } = await Effect.runPromise(claimsThroughFaults())
    expect(unheld).toEqual([])
    // Points only move forward, and the last one is the newest record once quiescent.
    expect(claimed).toEqual([...claimed].sort((a, b) => a - b))
    expect(last.lastRecoveryPoint?.seq).toBe(last.watermark)
    expect(last.lastError?.message).toContain("link lost: test: cut")
    expect(drains.length).toBeGreaterThan(0)
    for (const s of drains) {
      expect(s.mode).toBe("resync")
      expect(s.drain!.progress).toBeGreaterThanOrEqual(0)
      expect(s.drain!.progress).toBeLessThanOrEqual(1)
      expect(s.drain!.peakBlocks).toBeGreaterThanOrEqual(s.dirtyBlocks)
    }
    expect(drains.some((s) => s.drain!.sentBlocks > 0)).toBe(true)
  })

  it("MUTANT: a status that takes every ack for a point (drained blocks too) is caught", async () => {
    const { unheld } = await Effect.runPromise(claimsThroughFaults({ everyAckAPoint: true }))
    expect(unheld.length).toBeGreaterThan(0)
  })

  it("says that it stopped and why, in status, in changes and on the control endpoint", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "rst-"))
    try {
      const socket = path.join(dir, "control.sock")
      const program = Effect.gen(function* () {
        const { replicator } = yield* start(refusingReceiver)
        const changes = yield* Effect.fork(
          replicator.changes.pipe(
            Stream.takeUntil((s) => s.stopped !== undefined),
            Stream.runCollect
          )
        )
        yield* serveFilterControl(socket, { diskId: "d", receiver: "backup:7070" }, replicator)
        yield* Effect.flip(replicator.stopped)
        const s = yield* replicator.status
        expect(s.stopped?.reason).toBe("the receiver refuses this disk")
        expect(s.stopped?.detail).toContain("geometry-mismatch")
        expect(s.stopped?.at).toBeGreaterThan(0)
        expect(s.lastError?.message).toContain("refused")
        const last = Chunk.last(yield* Fiber.join(changes))
        expect(last._tag === "Some" && last.value.stopped?.reason).toBe("the receiver refuses this disk")

        const reply = yield* Control.request(socket)
        expect("status" in reply).toBe(true)
        if (!("status" in reply)) return
        expect(reply.status.role).toBe("filter")
        const disk = reply.status.disks[0]!
        expect(disk).toEqual(
          filterDisk(s, { diskId: "d", receiver: "backup:7070" }, Date.parse(reply.status.at))
        )
        expect(disk.role === "filter" && disk.stopped?.detail).toContain("geometry-mismatch")
      })
      await Effect.runPromise(Effect.scoped(program))
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})

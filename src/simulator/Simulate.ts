/**
 * `cdp-sync simulate`: the whole system on one machine. A disk image in a temp
 * directory, a log receiver as a child process on loopback, a fault proxy between
 * them, and the replicator driven by a mixed guest workload; faults on a schedule
 * (cut, ack stall, receiver SIGKILL + restart, congestion burst, receiver-side gap).
 * Then quiesce, restore the latest recovery point and compare it with the disk.
 */
import { createHash } from "node:crypto"
import { createReadStream } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, Duration, Effect, Either, Exit, Fiber, Layer, Ref, Stream } from "effect"
import * as ActivityLog from "../adapters/ActivityLog.js"
import * as EventJournal from "../adapters/EventJournal.js"
import * as LogReceiver from "../adapters/LogReceiver.js"
import * as VirtualDisk from "../adapters/VirtualDisk.js"
import * as Config from "../domain/Config.js"
import { prng } from "../conformance/Simulation.js"
import * as Trace from "../domain/Trace.js"
import * as FaultProxy from "./internal/FaultProxy.js"
import * as ReceiverProcess from "./internal/ReceiverProcess.js"
import * as Replicator from "../replicator/Replicator.js"
import * as Restore from "../receiver/Restore.js"
import * as Workload from "./Workload.js"

export type FaultLevel = "none" | "some" | "chaos"

export interface Options {
  readonly seconds: number
  readonly diskBytes: number
  readonly blockSize: number
  readonly faults: FaultLevel
  readonly seed: number
  readonly keep: string | undefined
  readonly json: boolean
  readonly trace: string | undefined
}

export interface Report {
  readonly writes: number
  readonly bytes: number
  readonly seconds: number
  readonly modeChanges: Record<string, number>
  readonly faults: Record<string, number>
  readonly recoveryPoints: number
  readonly epochs: number
  readonly verdict: "match" | "mismatch"
  readonly diskSha256: string
  readonly replicaSha256: string
  readonly restoredSeq: number
  readonly diskImage?: string
  readonly receiverDir?: string
  readonly timeline: ReadonlyArray<{
    readonly at: number
    readonly mode: "sync" | "resync"
    readonly dirty: number
  }>
}

const sha256 = (file: string) =>
  Effect.promise(
    () =>
      new Promise<string>((resolve, reject) => {
        const hash = createHash("sha256")
        createReadStream(file, { highWaterMark: 1 << 20 })
          .on("data", (chunk) => hash.update(chunk))
          .on("end", () => resolve(hash.digest("hex")))
          .on("error", reject)
      })
  )

type Fault = "cut" | "ack-stall" | "receiver-kill" | "congestion" | "gap"

/** What the status line shows, and what the timeline remembers. */
export interface Tick {
  readonly at: number
  readonly status: Replicator.Status
  readonly writes: number
  readonly bytes: number
  readonly fault: string | undefined
}

export const run = (options: Options, onTick: (tick: Tick) => Effect.Effect<void> = () => Effect.void) =>
  Effect.scoped(
    Effect.gen(function* () {
      const root =
        options.keep ??
        (yield* Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-simulate-"))))
      if (options.keep === undefined)
        yield* Effect.addFinalizer(() => Effect.promise(() => fs.rm(root, { recursive: true, force: true })))
      yield* Effect.promise(() => fs.mkdir(root, { recursive: true }))
      const diskImage = path.join(root, "disk.img")
      const journalDir = path.join(root, "journal")
      const receiverDir = path.join(root, "receiver")
      yield* Effect.promise(() => fs.mkdir(receiverDir, { recursive: true }))
      const config = yield* Config.make({
        blockSize: options.blockSize,
        blockCount: Math.ceil(options.diskBytes / options.blockSize),
        window: 32,
        congestionLimit: 8 * 1024 * 1024,
        initial: "in-sync"
      })

      const receiver = yield* ReceiverProcess.make({ dir: receiverDir })
      const proxy = yield* FaultProxy.make(receiver.port)
      const diskId = "sim-disk"

      const traceLines: Array<string> = []
      const layers = Replicator.layer({
        diskId,
        config,
        ackTimeout: "1 second",
        snapshotEvery: 20_000,
        onEvents: (events) =>
          options.trace === undefined
            ? Effect.void
            : Effect.sync(() => {
                for (const e of events) traceLines.push(Trace.encodeEvent(e))
              })
      }).pipe(
        Layer.provideMerge(
          Layer.mergeAll(
            VirtualDisk.layerFile({ path: diskImage, geometry: config, create: true }),
            EventJournal.layerFile({ directory: journalDir }),
            ActivityLog.layerFile({ directory: journalDir }),
            LogReceiver.layerTcp({ host: "127.0.0.1", port: proxy.port, connectTimeout: "2 seconds" })
          )
        )
      )
      const context = yield* Layer.build(layers)
      const replicator = yield* Effect.provide(Replicator.Replicator, context)
      const disk = yield* Effect.provide(VirtualDisk.VirtualDisk, context)

      const totals = yield* Ref.make<Workload.Totals>({ writes: 0, bytes: 0 })
      const burst = yield* Ref.make(false)
      const faults: Record<string, number> = {}
      const modeChanges: Record<string, number> = {}
      const timeline: Array<{ at: number; mode: "sync" | "resync"; dirty: number }> = []
      let currentFault: string | undefined
      const started = Date.now()

      // Mode changes with their reasons, from the journaled events.
      const watcher = yield* Effect.fork(
        replicator.changes.pipe(
          Stream.runForEach((s) =>
            Effect.sync(() => {
              const last = timeline[timeline.length - 1]
              if (last === undefined || last.mode !== s.mode)
                timeline.push({ at: Date.now() - started, mode: s.mode, dirty: s.dirtyBlocks })
            })
          )
        )
      )

      const workload = yield* Effect.fork(
        Workload.run(replicator, config, { seed: options.seed, writers: 4, pause: "2 millis" }, totals, burst)
      )

      // The fault schedule: one fault every few seconds, drawn from the seed.
      const random = prng(options.seed ^ 0x5eed)
      const kinds: ReadonlyArray<Fault> = ["cut", "ack-stall", "receiver-kill", "congestion", "gap"]
      const injector = yield* Effect.fork(
        Effect.gen(function* () {
          if (options.faults === "none") return
          const gap = options.faults === "chaos" ? 1200 : 3000
          let i = 0
          for (;;) {
            yield* Effect.sleep(Duration.millis(gap * (0.6 + 0.8 * random())))
            const kind =
              options.faults === "some"
                ? kinds[i++ % kinds.length]!
                : kinds[Math.floor(random() * kinds.length)]!
            faults[kind] = (faults[kind] ?? 0) + 1
            currentFault = kind
            switch (kind) {
              case "cut":
                yield* proxy.cut
                break
              case "ack-stall":
                yield* proxy.stallAcks(true)
                yield* Effect.sleep("1500 millis")
                yield* proxy.stallAcks(false)
                break
              case "receiver-kill":
                // One step: the end of the run waits for the restart (and the proxy's new target).
                yield* Effect.uninterruptible(
                  Effect.zipRight(
                    receiver.killAndRestart,
                    Effect.suspend(() => proxy.retarget(receiver.port))
                  )
                )
                break
              case "congestion":
                yield* proxy.throttle(2 * 1024 * 1024)
                yield* Ref.set(burst, true)
                yield* Effect.sleep("2 seconds")
                yield* Ref.set(burst, false)
                yield* proxy.throttle(undefined)
                break
              case "gap":
                yield* proxy.dropNextRecord
                break
            }
            currentFault = undefined
          }
        })
      )

      const reporter = yield* Effect.fork(
        Effect.gen(function* () {
          for (;;) {
            yield* Effect.sleep("250 millis")
            const t = yield* Ref.get(totals)
            const status = yield* replicator.status
            timeline.push({ at: Date.now() - started, mode: status.mode, dirty: status.dirtyBlocks })
            yield* onTick({
              at: Date.now() - started,
              status,
              writes: t.writes,
              bytes: t.bytes,
              fault: currentFault
            })
          }
        })
      )

      yield* Effect.sleep(Duration.seconds(options.seconds))
      yield* Fiber.interrupt(workload)
      // A fault the harness could not inject (the receiver would not restart) is the harness's
      // failure, not a verdict on the filter.
      const injected = yield* Fiber.interrupt(injector)
      if (Exit.isFailure(injected) && !Cause.isInterruptedOnly(injected.cause))
        return yield* Effect.failCause(injected.cause)
      yield* proxy.stallAcks(false)
      yield* proxy.throttle(undefined)
      yield* Ref.set(burst, false)

      // Quiesce: the link heals, the drain finishes, sync resumes with nothing in flight.
      const quiet = yield* replicator.quiesce.pipe(Effect.timeout("120 seconds"), Effect.either)
      yield* Fiber.interrupt(reporter)
      yield* Fiber.interrupt(watcher)
      const final = yield* replicator.status
      yield* onTick({
        at: Date.now() - started,
        status: final,
        writes: (yield* Ref.get(totals)).writes,
        bytes: (yield* Ref.get(totals)).bytes,
        fault: undefined
      })
      yield* disk.flush

      // Events journaled: count mode changes by reason.
      const journal = yield* Effect.provide(EventJournal.EventJournal, context)
      let epochs = 0
      yield* journal.read(0).pipe(
        Stream.runForEach(({ event }) =>
          Effect.sync(() => {
            if (event.type === "ResyncActivated") {
              modeChanges[event.reason] = (modeChanges[event.reason] ?? 0) + 1
              epochs = event.epoch
            }
            if (event.type === "SyncActivated") modeChanges.sync = (modeChanges.sync ?? 0) + 1
          })
        )
      )
      if (options.trace !== undefined)
        yield* Effect.promise(() =>
          fs.writeFile(
            options.trace!,
            `${[Trace.encodeHeader({ blockSize: config.blockSize, blockCount: config.blockCount, initial: config.initial }), ...traceLines].join("\n")}\n`
          )
        )

      // Restore the latest recovery point and compare it with the disk.
      const restoredImage = path.join(root, "restored.img")
      const restored = yield* Restore.restore({ dir: receiverDir, diskId, at: "latest", out: restoredImage })
      const points = yield* Restore.points(receiverDir, diskId)
      const diskSha256 = yield* sha256(diskImage)
      const replicaSha256 = yield* sha256(restoredImage)
      const t = yield* Ref.get(totals)
      const report: Report = {
        writes: t.writes,
        bytes: t.bytes,
        seconds: (Date.now() - started) / 1000,
        modeChanges,
        faults,
        recoveryPoints: points.reduce((n, d) => n + d.points.length, 0),
        epochs,
        verdict: Either.isRight(quiet) && diskSha256 === replicaSha256 ? "match" : "mismatch",
        diskSha256,
        replicaSha256,
        restoredSeq: restored.seq,
        ...(options.keep === undefined ? {} : { diskImage, receiverDir }),
        timeline
      }
      return report
    })
  )

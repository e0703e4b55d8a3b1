/**
 * The replicator with its real layers (a raw disk image, the file journal, TCP)
 * against the real log receiver as a child process on loopback. The receiver is
 * SIGKILLed mid-stream; the replicator process is SIGKILLed mid-workload. After
 * each run, the latest recovery point restored from the receiver must equal the
 * disk image byte for byte.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect, Either, Fiber, Layer, Ref } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import * as Legality from "../../src/domain/Legality.js"
import * as State from "../../src/domain/State.js"
import * as Trace from "../../src/domain/Trace.js"
import * as ReceiverProcess from "../../src/simulator/internal/ReceiverProcess.js"
import * as Replicator from "../../src/replicator/Replicator.js"
import * as Restore from "../../src/receiver/Restore.js"
import * as Workload from "../../src/simulator/Workload.js"

const CLI = path.resolve(import.meta.dirname, "../../dist/cli/main.js")
const DISK_BYTES = 16 * 1024 * 1024
const config = Either.getOrThrow(
  Config.make({
    blockSize: 65536,
    blockCount: DISK_BYTES / 65536,
    window: 16,
    congestionLimit: 2 * 1024 * 1024
  })
)

const dirs: Array<string> = []
const tempDir = async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-loopback-"))
  dirs.push(dir)
  return dir
}
afterEach(async () => {
  for (const dir of dirs.splice(0)) await fs.rm(dir, { recursive: true, force: true })
})

const sha256 = async (file: string) =>
  createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex")

/** Restores the latest recovery point and compares it with the disk image. */
const restoredEqualsDisk = async (receiverDir: string, diskId: string, diskImage: string) => {
  const out = path.join(path.dirname(diskImage), "restored.img")
  const restored = await Effect.runPromise(Restore.restore({ dir: receiverDir, diskId, at: "latest", out }))
  return { restored, same: (await sha256(out)) === (await sha256(diskImage)) }
}

describe("the replicator against the real receiver on loopback", () => {
  it("survives SIGKILLs of the receiver mid-stream and ends with a restorable, identical replica", async () => {
    const dir = await tempDir()
    const receiverDir = path.join(dir, "receiver")
    await fs.mkdir(receiverDir)
    const diskImage = path.join(dir, "disk.img")
    const trace: Array<string> = []
    const program = Effect.scoped(
      Effect.gen(function* () {
        const receiver = yield* ReceiverProcess.make({ dir: receiverDir, entry: CLI })
        const layer = Replicator.layer({
          diskId: "loop",
          config,
          ackTimeout: "1 second",
          onEvents: (events) => Effect.sync(() => trace.push(...events.map(Trace.encodeEvent)))
        }).pipe(
          Layer.provideMerge(
            Layer.mergeAll(
              VirtualDisk.layerFile({ path: diskImage, geometry: config, create: true }),
              EventJournal.layerFile({ directory: path.join(dir, "journal") }),
              LogReceiver.layerTcp({ host: "127.0.0.1", port: receiver.port, connectTimeout: "2 seconds" })
            )
          )
        )
        const context = yield* Layer.build(layer)
        const replicator = yield* Effect.provide(Replicator.Replicator, context)
        const totals = yield* Ref.make<Workload.Totals>({ writes: 0, bytes: 0 })
        const workload = yield* Effect.fork(
          Workload.run(
            replicator,
            config,
            { seed: 11, writers: 4, pause: "1 millis" },
            totals,
            yield* Ref.make(false)
          )
        )
        // Kill points spread over the stream, at uneven intervals.
        for (const wait of [400, 650, 300, 900, 500]) {
          yield* Effect.sleep(Duration.millis(wait))
          yield* receiver.killAndRestart
        }
        yield* Effect.sleep("500 millis")
        yield* Fiber.interrupt(workload)
        yield* replicator.quiesce.pipe(Effect.timeout("60 seconds"))
        yield* Effect.provide(VirtualDisk.VirtualDisk, context).pipe(Effect.flatMap((d) => d.flush))
        return yield* Ref.get(totals)
      })
    )
    const totals = await Effect.runPromise(program)
    expect(totals.writes).toBeGreaterThan(100)
    const { same, restored } = await restoredEqualsDisk(receiverDir, "loop", diskImage)
    expect(restored.records).toBeGreaterThan(0)
    expect(same).toBe(true)
    // The filter's own journal checks clean against the model and ends quiescent.
    const decoder = new Trace.Decoder()
    const lines = [Trace.encodeHeader(config), ...trace].join("\n")
    const events = [...decoder.push(lines), ...decoder.end()].flatMap((d) =>
      Either.isRight(d) && d.right._tag === "Event" ? [d.right.event] : []
    )
    expect(Legality.checkAll(State.initial(config), events, { quiescent: true })).toBeUndefined()
  })

  it("survives SIGKILLs of the replicator process mid-workload (unclean restarts resync the activity log's extents)", async () => {
    const dir = await tempDir()
    const receiverDir = path.join(dir, "receiver")
    await fs.mkdir(receiverDir)
    const diskImage = path.join(dir, "disk.img")
    const journal = path.join(dir, "journal")
    const traceFile = path.join(dir, "trace.jsonl")
    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const receiver = yield* ReceiverProcess.make({ dir: receiverDir, entry: CLI })
          const args = [
            CLI,
            "replicate",
            "--disk",
            diskImage,
            "--disk-size",
            String(DISK_BYTES),
            "--receiver",
            `127.0.0.1:${receiver.port}`,
            "--journal",
            journal,
            "--disk-id",
            "victim",
            "--ack-timeout-ms",
            "1000",
            "--trace",
            traceFile,
            // 16 extents of 1 MiB, at most 4 kept while idle: a crash owes a part of the disk.
            "--activity-extent-size",
            "1MiB",
            "--activity-extents",
            "4"
          ]
          const runFor = (extra: ReadonlyArray<string>, killAfterMs: number | undefined) =>
            Effect.async<{ code: number | null; signal: string | null; stdout: string }>((resume) => {
              const child: ChildProcess = spawn(process.execPath, [...args, ...extra], {
                stdio: ["ignore", "pipe", "pipe"]
              })
              let stdout = ""
              let sawStatus = false
              child.stdout!.on("data", (c) => {
                stdout += c
              })
              child.stderr!.on("data", (c: Buffer) => {
                // Kill only once the filter is really running (it reports status twice a second).
                if (!sawStatus && c.toString().includes("status ") && killAfterMs !== undefined) {
                  sawStatus = true
                  setTimeout(() => child.kill("SIGKILL"), killAfterMs)
                }
              })
              child.once("exit", (code, signal) => resume(Effect.succeed({ code, signal, stdout })))
            })
          for (const killAfter of [300, 900, 150]) {
            const run = yield* runFor(["--seconds", "30", "--seed", String(killAfter)], killAfter)
            expect(run.signal).toBe("SIGKILL")
          }
          const last = yield* runFor(["--seconds", "1", "--quiesce", "--json"], undefined)
          expect(last.code).toBe(0)
          const status = JSON.parse(last.stdout.trim().split("\n").at(-1)!)
          expect(status).toMatchObject({ mode: "sync", link: "up", inFlight: 0, quiescent: true })
          // The last, clean exit is in the journal's run file: the next start would not resync.
          const run = yield* Effect.promise(() => fs.readFile(path.join(journal, "journal.json"), "utf8"))
          expect(JSON.parse(run)).toMatchObject({ run: "closed" })
        })
      )
    )
    const { same } = await restoredEqualsDisk(receiverDir, "victim", diskImage)
    expect(same).toBe(true)
    // Every start after a kill resynced what the activity log held (whole 1 MiB extents, not
    // the whole disk), and the trace (appended across runs) checks clean.
    const text = await fs.readFile(traceFile, "utf8")
    expect(text.match(/"type":"LinkLost","reason":"filter-restart"/g)?.length).toBeGreaterThanOrEqual(3)
    const events = text
      .trim()
      .split("\n")
      .slice(1)
      .map((line) => JSON.parse(line) as { type: string; reason?: string; offset?: number; length?: number })
    const MiB = 1 << 20
    for (let i = 0; i < events.length; i++) {
      if (events[i]!.type !== "LinkLost" || events[i]!.reason !== "filter-restart") continue
      // The start-up batch: the link loss, maybe a resync, then the log's extents as whole MiB ranges.
      let j = i + 1
      if (events[j]?.type === "ResyncActivated") j++
      let owed = 0
      const isExtents = (e: (typeof events)[number] | undefined) =>
        e?.type === "WriteTracked" && e.offset! % MiB === 0 && e.length! % MiB === 0
      for (; isExtents(events[j]); j++) owed += events[j]!.length!
      expect(owed).toBeLessThan(DISK_BYTES)
    }
  })
})

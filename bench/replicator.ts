/**
 * The replicator end to end, in-process, with its real layers (raw disk image,
 * file journal with fsync, TCP) against the real log receiver process on loopback:
 * - live stream throughput at 4 KiB and 64 KiB writes, against moving the same
 *   bytes over a loopback TCP socket to a sink;
 * - resync drain rate (a full sync of the disk), against reading the same blocks
 *   from the file and sending them raw over loopback;
 * - convergence: link up to sync under concurrent writes at 25, 50 and 75 % of the
 *   measured drain rate, against the no-load time.
 */
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect, Either, Fiber, Layer, Stream } from "effect"
import * as EventJournal from "../src/adapters/EventJournal.js"
import * as LogReceiver from "../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../src/adapters/VirtualDisk.js"
import * as Config from "../src/domain/Config.js"
import * as ReceiverProcess from "../src/programs/internal/ReceiverProcess.js"
import * as Replicator from "../src/programs/Replicator.js"
import { type BenchRow, renderTable } from "./table.js"

const CLI = path.resolve(import.meta.dirname, "../dist/programs/main.js")
const MiB = 1024 * 1024

/** A TCP sink on loopback and the time to push `chunks` through it (the raw baseline). */
const rawTcp = async (
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>
): Promise<{ bytes: number; ms: number }> => {
  const server = net.createServer((s) => s.on("data", () => {}))
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  const port = (server.address() as net.AddressInfo).port
  const socket = net.connect(port, "127.0.0.1")
  await new Promise<void>((r) => socket.once("connect", () => r()))
  let bytes = 0
  const start = performance.now()
  for await (const chunk of chunks) {
    bytes += chunk.length
    if (!socket.write(chunk)) await new Promise<void>((r) => socket.once("drain", () => r()))
  }
  await new Promise<void>((r) => socket.end(() => r()))
  const ms = performance.now() - start
  server.close()
  return { bytes, ms }
}

const withSystem = <A>(
  diskBytes: number,
  initial: Config.Initial,
  body: (replicator: Replicator.Replicator.Service) => Effect.Effect<A>
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const dir = yield* Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-")))
      yield* Effect.addFinalizer(() => Effect.promise(() => fs.rm(dir, { recursive: true, force: true })))
      const receiverDir = path.join(dir, "receiver")
      yield* Effect.promise(() => fs.mkdir(receiverDir))
      const config = Either.getOrThrow(
        Config.make({
          blockSize: 65536,
          blockCount: diskBytes / 65536,
          window: 64,
          congestionLimit: 64 * MiB,
          initial
        })
      )
      const receiver = yield* ReceiverProcess.make({ dir: receiverDir, entry: CLI }).pipe(Effect.orDie)
      const context = yield* Layer.build(
        Replicator.layer({ diskId: "bench", config, switchoverHold: "50 millis" }).pipe(
          Layer.provideMerge(
            Layer.mergeAll(
              VirtualDisk.layerFile({ path: path.join(dir, "disk.img"), geometry: config, create: true }),
              EventJournal.layerFile({ directory: path.join(dir, "journal") }),
              LogReceiver.layerTcp({ host: "127.0.0.1", port: receiver.port, sendBuffer: 256 })
            )
          )
        )
      ).pipe(Effect.orDie)
      const replicator = yield* Effect.provide(Replicator.Replicator, context)
      return yield* body(replicator)
    })
  )

/** Writes of `size` bytes from `writers` fibers for `seconds`, in sync mode. */
const liveStream = (size: number, seconds: number) =>
  withSystem(256 * MiB, "in-sync", (replicator) =>
    Effect.gen(function* () {
      yield* replicator.quiesce.pipe(Effect.orDie)
      let writes = 0
      const data = new Uint8Array(size).fill(0x5a)
      const slots = (256 * MiB) / size
      const start = performance.now()
      const deadline = start + seconds * 1000
      yield* Effect.forEach(
        Array.from({ length: 16 }, (_, w) => w),
        (w) =>
          Effect.gen(function* () {
            let i = w
            while (performance.now() < deadline) {
              yield* replicator.write(((i * 7919) % slots) * size, data).pipe(Effect.orDie)
              writes++
              i += 16
            }
          }),
        { concurrency: "unbounded", discard: true }
      )
      yield* replicator.quiesce.pipe(Effect.orDie)
      const ms = performance.now() - start
      const status = yield* replicator.status
      return { writes, bytes: writes * size, ms, mode: status.mode }
    })
  )

/** A full sync of the disk: the time from start until sync with nothing in flight. */
const drain = (diskBytes: number, loadBytesPerSecond: number) =>
  withSystem(diskBytes, "full-sync", (replicator) =>
    Effect.gen(function* () {
      const start = performance.now()
      const data = new Uint8Array(64 * 1024).fill(0x33)
      const load =
        loadBytesPerSecond <= 0
          ? undefined
          : yield* Effect.fork(
              Effect.gen(function* () {
                let i = 0
                const pause = Duration.millis((data.length / loadBytesPerSecond) * 1000)
                for (;;) {
                  yield* replicator
                    .write(((i++ * 40503) % (diskBytes / data.length)) * data.length, data)
                    .pipe(Effect.orDie)
                  yield* Effect.sleep(pause)
                }
              })
            )
      yield* replicator.changes.pipe(
        Stream.filter((s) => s.mode === "sync" && s.link === "up"),
        Stream.take(1),
        Stream.runDrain
      )
      const ms = performance.now() - start
      if (load !== undefined) yield* Fiber.interrupt(load)
      return ms
    })
  )

async function* blocksOfFile(file: string, blockSize: number) {
  const handle = await fs.open(file, "r")
  const buffer = Buffer.alloc(blockSize)
  try {
    for (let pos = 0; ; pos += blockSize) {
      const { bytesRead } = await handle.read(buffer, 0, blockSize, pos)
      if (bytesRead === 0) return
      yield Buffer.from(buffer.subarray(0, bytesRead))
    }
  } finally {
    await handle.close()
  }
}

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const rows: Array<BenchRow> = []
  for (const size of [4096, 65536]) {
    const live = await Effect.runPromise(liveStream(size, 4))
    const payload = new Uint8Array(size).fill(0x5a)
    const raw = await rawTcp(Array.from({ length: Math.max(live.writes, 1000) }, () => payload))
    const liveMBs = live.bytes / MiB / (live.ms / 1000)
    const rawMBs = raw.bytes / MiB / (raw.ms / 1000)
    rows.push({
      name: `live stream, ${size / 1024} KiB writes (${Math.round((live.writes / live.ms) * 1000)} writes/s)`,
      value: liveMBs,
      unit: "MB/s",
      baseline: rawMBs,
      baselineName: "same bytes over raw loopback TCP",
      higherIsBetter: true,
      target: { ratio: 0.6, text: ">= 60% of raw" }
    })
  }
  const diskBytes = 128 * MiB
  await Effect.runPromise(drain(32 * MiB, 0)) // warm-up: JIT, page cache
  const noLoad = await Effect.runPromise(drain(diskBytes, 0))
  const drainMBs = diskBytes / MiB / (noLoad / 1000)
  const file = path.join(await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-raw-")), "disk.img")
  await fs.writeFile(file, Buffer.alloc(diskBytes, 0x11))
  const raw = await rawTcp(blocksOfFile(file, 65536))
  await fs.rm(path.dirname(file), { recursive: true, force: true })
  rows.push({
    name: "resync drain (full sync of 128 MiB)",
    value: drainMBs,
    unit: "MB/s",
    baseline: raw.bytes / MiB / (raw.ms / 1000),
    baselineName: "read blocks from file, send raw",
    higherIsBetter: true,
    target: { ratio: 0.7, text: ">= 70% of raw" }
  })
  for (const load of [0.25, 0.5, 0.75]) {
    const ms = await Effect.runPromise(drain(diskBytes, load * drainMBs * MiB))
    rows.push({
      name: `convergence at ${load * 100}% of the drain rate (link up to sync)`,
      value: ms,
      unit: "ms",
      baseline: noLoad,
      baselineName: "no load",
      higherIsBetter: false,
      ...(load === 0.5 ? { target: { ratio: 1 / 3, text: "<= 3x no-load" } } : {})
    })
  }
  return rows
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((rows) => console.log(renderTable("replicator: end to end on loopback", rows)))
}

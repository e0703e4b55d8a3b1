/**
 * The replicator end to end, in-process, with its real layers (raw disk image,
 * file journal with fsync, TCP) against the real log receiver process on loopback
 * (window 1024 blocks of 64 KiB, congestion limit 64 MiB; the window is sized to the
 * drain rate times the receiver's fsync latency, see docs/replicator.md):
 * - live stream throughput at 4 KiB and 64 KiB writes, against moving the same
 *   bytes over a loopback TCP socket to a sink. Sixteen guest writers keep the
 *   stream saturated but back off while more than a quarter of the congestion
 *   limit is unacked, so every write is streamed live (a pull-ahead would let the
 *   bitmap coalesce writes and flatter the figure; rows say if one happened).
 *   Rows: the default configuration (blocking disk writes); with writes through
 *   libuv's thread pool; the filter alone against a receiver that acks without
 *   storing (bench/internal/ackSink.mjs); at 4 KiB, writes handed over in guest
 *   queues of 32 (`writeAll`); and the plainest pipeline doing the same unavoidable
 *   work (pwrite, TCP, durable append) without the filter's protocol. Beside them, the
 *   filter journal's mean commit time during the 4 KiB run against a lone 4 KiB
 *   append and fdatasync: live records wait for that commit before they are sent.
 * - the durable ceiling: the same bytes appended to a file with an fdatasync per
 *   4 MiB, the least any receiver that acks only durable records must do;
 * - resync drain rate (a full sync of the disk), against reading the same blocks
 *   from the file and sending them raw over loopback;
 * - convergence: link up to sync under concurrent writes at 25, 50 and 75 % of the
 *   measured drain rate, against the no-load time.
 */
import { spawn } from "node:child_process"
import * as fsSync from "node:fs"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect, Either, Fiber, Layer, Metric, Stream } from "effect"
import * as ActivityLog from "../dist/adapters/ActivityLog.js"
import * as EventJournal from "../dist/adapters/EventJournal.js"
import * as LogReceiver from "../dist/adapters/LogReceiver.js"
import * as VirtualDisk from "../dist/adapters/VirtualDisk.js"
import * as Config from "../dist/domain/Config.js"
import { withIoScheduler } from "../dist/internal/IoScheduler.js"
import * as ReceiverProcess from "../dist/simulator/internal/ReceiverProcess.js"
import * as Replicator from "../dist/replicator/Replicator.js"
import { type BenchRow, renderTable } from "./table.js"

const CLI = path.resolve(import.meta.dirname, "../dist/cli/main.js")
const ACK_SINK = path.resolve(import.meta.dirname, "internal/ackSink.mjs")
const PLAIN_LOG = path.resolve(import.meta.dirname, "internal/plainLog.mjs")
const MiB = 1024 * 1024
const CONGESTION_LIMIT = 64 * MiB
/** The journal's commit histogram (seconds) of the disk `withSystem` replicates. */
const journalCommit = Metric.tagged(Replicator.metrics.journalCommit, "disk", "bench")

interface Setup {
  /** The real receiver process (fsync before ack), or a sink that acks at once and keeps nothing. */
  readonly receiver: "log-receiver" | "ack-sink"
  readonly blockingWrites: boolean
  /** With an activity log in the journal directory, keeping this many 4 MiB extents. */
  readonly activityExtents?: number
}
const DEFAULT_SETUP: Setup = { receiver: "log-receiver", blockingWrites: true }

/** The acking sink as a child process, killed with the scope. */
const ackSink = Effect.acquireRelease(
  Effect.promise(async () => {
    const child = spawn(process.execPath, [ACK_SINK], { stdio: ["ignore", "pipe", "inherit"] })
    const line = await new Promise<string>((resolve) => child.stdout.once("data", (d) => resolve(String(d))))
    return { port: Number(line.trim().split(":").pop()), child }
  }),
  ({ child }) => Effect.sync(() => child.kill())
)

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
  setup: Setup,
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
          window: 1024,
          congestionLimit: CONGESTION_LIMIT,
          initial
        })
      )
      const receiver =
        setup.receiver === "ack-sink"
          ? yield* ackSink
          : yield* ReceiverProcess.make({ dir: receiverDir, entry: CLI }).pipe(Effect.orDie)
      const context = yield* Layer.build(
        Replicator.layer({
          diskId: "bench",
          config,
          switchoverHold: "50 millis",
          ...(setup.activityExtents === undefined ? {} : { activityExtents: setup.activityExtents })
        }).pipe(
          Layer.provideMerge(
            Layer.mergeAll(
              setup.activityExtents === undefined
                ? Layer.empty
                : ActivityLog.layerFile({ directory: path.join(dir, "journal") }),
              VirtualDisk.layerFile({
                path: path.join(dir, "disk.img"),
                geometry: config,
                create: true,
                blockingWrites: setup.blockingWrites
              }),
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

/**
 * Writes of `size` bytes from 16 fibers for `seconds`, in sync mode, then until all
 * is acked. A writer waits while more than a quarter of the congestion limit is unacked.
 */
export const liveStream = (size: number, seconds: number, setup: Setup, batch = 1) =>
  withSystem(256 * MiB, "in-sync", setup, (replicator) =>
    Effect.gen(function* () {
      yield* replicator.quiesce.pipe(Effect.orDie)
      const { epoch, watermark: base } = yield* replicator.status
      const commitsBefore = yield* Metric.value(journalCommit)
      let writes = 0
      const data = new Uint8Array(size).fill(0x5a)
      const slots = (256 * MiB) / size
      const backlog = Math.floor(CONGESTION_LIMIT / 4 / size)
      const start = performance.now()
      const deadline = start + seconds * 1000
      yield* Effect.forEach(
        Array.from({ length: 16 }, (_, w) => w),
        (w) =>
          Effect.gen(function* () {
            let i = w
            while (performance.now() < deadline) {
              // Unacked counts the writes the loop has not decided yet: in sync mode each
              // write is one record, acked in seq order.
              if (writes - ((yield* replicator.status).watermark - base) > backlog) {
                yield* Effect.sleep("1 millis")
                continue
              }
              if (batch === 1) {
                yield* replicator.write(((i * 7919) % slots) * size, data).pipe(Effect.orDie)
                i += 16
              } else {
                // A guest queue's worth of requests at once.
                const requests: Array<Replicator.GuestWrite> = []
                for (let k = 0; k < batch; k++, i += 16)
                  requests.push({ offset: ((i * 7919) % slots) * size, bytes: data })
                yield* replicator.writeAll(requests).pipe(Effect.orDie)
              }
              writes += batch
            }
          }),
        { concurrency: "unbounded", discard: true }
      )
      yield* replicator.quiesce.pipe(Effect.orDie)
      const ms = performance.now() - start
      const status = yield* replicator.status
      const commits = yield* Metric.value(journalCommit)
      const journalCommitMs =
        (1000 * (commits.sum - commitsBefore.sum)) / Math.max(1, commits.count - commitsBefore.count)
      return { writes, bytes: writes * size, ms, pullAheads: status.epoch - epoch, journalCommitMs }
    })
  )

/** A full sync of the disk: the time from start until sync with nothing in flight. */
export const drain = (diskBytes: number, loadBytesPerSecond: number, setup: Setup = DEFAULT_SETUP) =>
  withSystem(diskBytes, "full-sync", setup, (replicator) =>
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

/** The same bytes appended to a file in 4 MiB writes, each followed by an fdatasync. */
const durableCeiling = async (bytes: number): Promise<number> => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-ceiling-"))
  const handle = await fs.open(path.join(dir, "log"), "w")
  const chunk = Buffer.alloc(4 * MiB, 0x5a)
  const start = performance.now()
  for (let at = 0; at < bytes; at += chunk.length) {
    await handle.write(chunk, 0, chunk.length, at)
    await handle.datasync()
  }
  const ms = performance.now() - start
  await handle.close()
  await fs.rm(dir, { recursive: true, force: true })
  return bytes / MiB / (ms / 1000)
}

/** Mean time of a 4 KiB append and its fdatasync on an otherwise idle disk: what a journal commit costs alone. */
const lonelyCommitMs = async (): Promise<number> => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-fsync-"))
  const handle = await fs.open(path.join(dir, "log"), "w")
  const record = Buffer.alloc(4096, 0x5a)
  const n = 200
  const start = performance.now()
  for (let i = 0; i < n; i++) {
    await handle.write(record, 0, record.length, i * record.length)
    await handle.datasync()
  }
  const ms = (performance.now() - start) / n
  await handle.close()
  await fs.rm(dir, { recursive: true, force: true })
  return ms
}

/**
 * The plainest pipeline doing a live stream's unavoidable work: each write a blocking
 * pwrite into a 256 MiB image, then a 32-byte header and the payload over loopback
 * TCP to bench/internal/plainLog.mjs, which appends and fdatasyncs every 4 MiB before
 * acking; at most 16 MiB unacked. No journal, no CRC, no index: what this machine
 * allows, to read the targets against.
 */
const plainPipeline = async (size: number, bytes: number): Promise<number> => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-plain-"))
  const child = spawn(process.execPath, [PLAIN_LOG, dir], { stdio: ["ignore", "pipe", "inherit"] })
  try {
    const line = await new Promise<string>((resolve) => child.stdout.once("data", (d) => resolve(String(d))))
    const image = fsSync.openSync(path.join(dir, "disk.img"), "w+")
    fsSync.ftruncateSync(image, 256 * MiB)
    const socket = net.connect({
      port: Number(line.trim().split(":").pop()),
      host: "127.0.0.1",
      noDelay: true
    })
    await new Promise<void>((r) => socket.once("connect", () => r()))
    let acked = 0
    socket.on("data", (d: Buffer) => {
      for (let i = 0; i + 8 <= d.length; i += 8) acked = d.readDoubleLE(i)
    })
    const payload = Buffer.alloc(size, 0x5a)
    const slots = (256 * MiB) / size
    const turn = () => new Promise<void>((r) => setImmediate(r))
    let sent = 0
    let n = 0
    const start = performance.now()
    while (n * size < bytes) {
      if (sent - acked > 16 * MiB) {
        await turn()
        continue
      }
      socket.cork()
      for (let k = 0; k < 64 && n * size < bytes; k++, n++) {
        fsSync.writeSync(image, payload, 0, size, ((n * 7919) % slots) * size)
        const header = Buffer.alloc(32)
        header.writeUInt32LE(size, 0)
        header.writeDoubleLE(n, 8)
        socket.write(header)
        socket.write(payload)
        sent += 32 + size
      }
      socket.uncork()
      await turn()
    }
    socket.end()
    while (acked < sent) await new Promise((r) => setTimeout(r, 1))
    const ms = performance.now() - start
    fsSync.closeSync(image)
    return (n * size) / MiB / (ms / 1000)
  } finally {
    child.kill()
    await fs.rm(dir, { recursive: true, force: true })
  }
}

/** As the CLI runs: the guest writers share the replicator's I/O scheduler. */
const runOnIoScheduler = <A>(effect: Effect.Effect<A>) => Effect.runPromise(withIoScheduler(effect))

interface LiveRun {
  readonly writes: number
  readonly bytes: number
  readonly ms: number
  readonly pullAheads: number
  readonly journalCommitMs: number
}

const liveRow = (size: number, label: string, live: LiveRun, rawMBs: number, target: boolean): BenchRow => ({
  name: `live stream, ${size / 1024} KiB writes, ${label} (${Math.round((live.writes / live.ms) * 1000)} writes/s${live.pullAheads > 0 ? `, ${live.pullAheads} pull-aheads` : ""})`,
  value: live.bytes / MiB / (live.ms / 1000),
  unit: "MB/s",
  baseline: rawMBs,
  baselineName: "same bytes over raw loopback TCP",
  higherIsBetter: true,
  ...(target ? { target: { ratio: 0.6, text: ">= 60% of raw" } } : {})
})

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const rows: Array<BenchRow> = []
  let rawLarge = 0
  for (const size of [4096, 65536]) {
    const payload = new Uint8Array(size).fill(0x5a)
    const raw = await rawTcp(Array.from({ length: (512 * MiB) / size }, () => payload))
    const rawMBs = raw.bytes / MiB / (raw.ms / 1000)
    if (size === 65536) rawLarge = rawMBs
    const sink: Setup = { receiver: "ack-sink", blockingWrites: true }
    // [label, setup, writes per writeAll call (1: `write`), has the target]
    const setups: ReadonlyArray<readonly [string, Setup, number, boolean]> = [
      ["end to end", DEFAULT_SETUP, 1, true],
      ["end to end, thread-pool disk writes", { receiver: "log-receiver", blockingWrites: false }, 1, false],
      ["filter alone (acking sink)", sink, 1, false],
      ...(size === 4096
        ? ([
            ["end to end, guest queues of 32 (writeAll)", DEFAULT_SETUP, 32, false],
            ["filter alone, guest queues of 32 (writeAll)", sink, 32, false]
          ] as const)
        : [])
    ]
    for (const [label, setup, batch, target] of setups) {
      const live = await runOnIoScheduler(liveStream(size, 4, setup, batch))
      rows.push(liveRow(size, label, live, rawMBs, target))
      if (size === 4096 && label === "filter alone (acking sink)")
        // The activity log's cost: holding the whole working set (64 extents, as the CLI's
        // default would), and holding a quarter of it, so most writes wait for a commit.
        for (const extents of [1024, 16]) {
          const logged = await runOnIoScheduler(liveStream(size, 4, { ...sink, activityExtents: extents }, 1))
          rows.push({
            name: `live stream, 4 KiB writes, filter alone, activity log of ${extents} × 4 MiB extents (working set: 64)`,
            value: logged.bytes / MiB / (logged.ms / 1000),
            unit: "MB/s",
            baseline: live.bytes / MiB / (live.ms / 1000),
            baselineName: "filter alone without the log",
            higherIsBetter: true
          })
        }
      if (size === 4096 && label === "end to end")
        rows.push({
          name: "filter journal commit (append + fsync), mean during the 4 KiB end-to-end run",
          value: live.journalCommitMs,
          unit: "ms",
          baseline: await lonelyCommitMs(),
          baselineName: "4 KiB append + fdatasync, idle disk",
          higherIsBetter: false
        })
    }
    rows.push({
      name: `plainest pipeline, ${size / 1024} KiB writes: pwrite + raw TCP + append with fdatasync per 4 MiB`,
      value: await plainPipeline(size, 512 * MiB),
      unit: "MB/s",
      baseline: rawMBs,
      baselineName: "same bytes over raw loopback TCP",
      higherIsBetter: true
    })
  }
  rows.push({
    name: "durable ceiling: the same bytes appended to a file, fdatasync per 4 MiB",
    value: await durableCeiling(512 * MiB),
    unit: "MB/s",
    baseline: rawLarge,
    baselineName: "64 KiB writes over raw loopback TCP",
    higherIsBetter: true
  })
  const diskBytes = 128 * MiB
  await runOnIoScheduler(drain(32 * MiB, 0)) // warm-up: JIT, page cache
  const noLoad = await runOnIoScheduler(drain(diskBytes, 0))
  const drainMBs = diskBytes / MiB / (noLoad / 1000)
  const file = path.join(await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-raw-")), "disk.img")
  await fs.writeFile(file, Buffer.alloc(diskBytes, 0x11))
  const raw = await rawTcp(blocksOfFile(file, 65536))
  await fs.rm(path.dirname(file), { recursive: true, force: true })
  const rawDrain = raw.bytes / MiB / (raw.ms / 1000)
  rows.push({
    name: "resync drain (full sync of 128 MiB), end to end",
    value: drainMBs,
    unit: "MB/s",
    baseline: rawDrain,
    baselineName: "read blocks from file, send raw",
    higherIsBetter: true,
    target: { ratio: 0.7, text: ">= 70% of raw" }
  })
  const alone = await runOnIoScheduler(drain(diskBytes, 0, { receiver: "ack-sink", blockingWrites: true }))
  rows.push({
    name: "resync drain (full sync of 128 MiB), filter alone (acking sink)",
    value: diskBytes / MiB / (alone / 1000),
    unit: "MB/s",
    baseline: rawDrain,
    baselineName: "read blocks from file, send raw",
    higherIsBetter: true
  })
  for (const load of [0.25, 0.5, 0.75]) {
    const ms = await runOnIoScheduler(drain(diskBytes, load * drainMBs * MiB))
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

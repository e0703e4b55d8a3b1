/**
 * The log receiver's sustained ingest with fsync-before-ack: the real service as a child
 * process on loopback, a client (`LogReceiver.layerTcp`) keeping many 64 KiB write records
 * in flight, MB/s of acked payload. Baseline: the same bytes written to a file with one
 * write + fdatasync per batch, the batch being the size the service's group commit
 * averaged (payload bytes / acks: one ack per group commit). Also: listing the recovery
 * points of a log with the segment indexes vs rescanning every segment.
 * Run alone: `npx tsx bench/receiver.ts` (about 30 s).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Deferred, Effect, Exit, Fiber, Stream } from "effect"
import * as LogReceiver from "../dist/adapters/LogReceiver.js"
import { type DiskMeta, listDisks, META_FILE, openChain } from "../dist/receiver/internal/chain.js"
import * as Proc from "../test/support/receiverProcess.js"
import { type BenchRow, QUICK, renderTable } from "./table.js"

const RECORD = 64 * 1024
/** Shorter in the quick pass (`--quick`). */
const INGEST_MS = QUICK ? 3000 : 9000
const ROUNDS = 3
const MB = 1e6

interface Ingest {
  readonly bytes: number
  readonly records: number
  readonly acks: number
  readonly ms: number
}

/** Streams 64 KiB writes for `ms`, then waits for the last ack. */
const ingest = (host: string, port: number, ms: number): Promise<Ingest> => {
  const geometry = { blockSize: 64 * 1024, blockCount: 16 * 1024 }
  const data = new Uint8Array(RECORD)
  for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24
  const program = Effect.scoped(
    Effect.gen(function* () {
      const receiver = yield* LogReceiver.LogReceiver
      const connection = yield* receiver.connect({ diskId: "bench", ...geometry, watermark: 0 })
      let acks = 0
      let lastAck = connection.durableSeq
      let target = Number.POSITIVE_INFINITY
      const done = yield* Deferred.make<void>()
      const consumer = yield* connection.messages.pipe(
        Stream.runForEach((m) =>
          Effect.sync(() => {
            if (m._tag !== "Ack") return
            acks++
            lastAck = m.seq
            if (lastAck >= target) Deferred.unsafeDone(done, Exit.void)
          })
        ),
        Effect.forkScoped
      )
      const start = performance.now()
      let seq = connection.durableSeq
      const slots = geometry.blockCount
      while (performance.now() - start < ms) {
        seq++
        yield* connection.send({ _tag: "Write", seq, epoch: 0, offset: (seq % slots) * RECORD, data })
      }
      target = seq
      if (lastAck < target) yield* Effect.raceFirst(Deferred.await(done), Fiber.join(consumer))
      const elapsed = performance.now() - start
      const records = seq - connection.durableSeq
      return { bytes: records * RECORD, records, acks, ms: elapsed }
    })
  ).pipe(Effect.provide(LogReceiver.layerTcp({ host, port, sendBuffer: 512 })))
  return Effect.runPromise(program)
}

/** Writes `total` bytes to a file in `batch`-byte writes, one fdatasync after each. */
const fileBaseline = async (dir: string, total: number, batch: number): Promise<number> => {
  const buf = Buffer.alloc(batch, 7)
  const file = path.join(dir, "baseline.bin")
  const handle = await fs.promises.open(file, "w")
  const start = performance.now()
  let position = 0
  while (position < total) {
    await handle.write(buf, 0, batch, position)
    await handle.datasync()
    position += batch
  }
  const ms = performance.now() - start
  await handle.close()
  fs.rmSync(file)
  return position / MB / (ms / 1000)
}

/** Lists every recovery point of the bench's disk: through the indexes, and by rescanning. */
const listing = async (dir: string): Promise<readonly [number, number, number]> => {
  const [disk] = await listDisks(dir)
  const meta: DiskMeta = JSON.parse(fs.readFileSync(path.join(disk!.diskDir, META_FILE), "utf8"))
  const time = async (f: () => Promise<unknown>) => {
    let best = Number.POSITIVE_INFINITY
    for (let i = 0; i < 3; i++) {
      const t = performance.now()
      await f()
      best = Math.min(best, performance.now() - t)
    }
    return best
  }
  const indexed = await time(() => openChain(disk!.diskDir, meta, "read"))
  // Without the indexes every segment is read and checked in full.
  const aside = path.join(dir, "idx-aside")
  fs.mkdirSync(aside)
  const indexes = fs.readdirSync(disk!.diskDir).filter((n) => n.endsWith(".idx"))
  for (const n of indexes) fs.renameSync(path.join(disk!.diskDir, n), path.join(aside, n))
  const scanned = await time(() => openChain(disk!.diskDir, meta, "read"))
  for (const n of indexes) fs.renameSync(path.join(aside, n), path.join(disk!.diskDir, n))
  const chain = await openChain(disk!.diskDir, meta, "read")
  return [indexed, scanned, chain.segments.reduce((n, s) => n + s.bytes, 0)]
}

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-bench-receiver-"))
  try {
    const receiver = await Proc.start(dir, ["--segment-bytes", "64MiB"])
    // The machine is shared: interleave service and baseline rounds, keep the best of each.
    let best: { rate: number; baseline: number; batch: number; result: Ingest } | undefined
    let baseline = 0
    try {
      // A short warm-up (page cache, JIT), then the measured rounds.
      await ingest(receiver.host, receiver.port, 1000)
      for (let round = 0; round < ROUNDS; round++) {
        const result = await ingest(receiver.host, receiver.port, INGEST_MS / ROUNDS)
        const rate = result.bytes / MB / (result.ms / 1000)
        const batch = Math.max(RECORD, Math.round(result.bytes / Math.max(1, result.acks) / 4096) * 4096)
        baseline = Math.max(baseline, await fileBaseline(dir, result.bytes, batch))
        if (best === undefined || rate > best.rate) best = { rate, baseline, batch, result }
      }
    } finally {
      await receiver.kill("SIGTERM")
    }
    const { rate, batch, result } = best!
    const [indexed, scanned, logBytes] = await listing(dir)
    process.stderr.write(
      `receiver: ${result.records} records in ${result.acks} acks (${(result.records / Math.max(1, result.acks)).toFixed(1)} records per group commit), ${(result.ms / 1000).toFixed(1)} s\n`
    )
    return [
      {
        name: "receiver ingest, fsync before ack (64 KiB writes, loopback)",
        value: rate,
        unit: "MB/s",
        baseline,
        baselineName: `file write + fdatasync per ${Math.round(batch / 1024)} KiB batch`,
        higherIsBetter: true
      },
      {
        name: `list recovery points of ${Math.round(logBytes / 2 ** 20)} MiB of log (segment indexes)`,
        value: indexed,
        unit: "ms",
        baseline: scanned,
        baselineName: "rescan every segment",
        higherIsBetter: false
      }
    ]
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rows = await run()
  console.log(renderTable("log receiver: ingest with fsync before ack", rows))
}

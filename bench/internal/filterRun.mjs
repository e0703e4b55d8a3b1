/**
 * One measured run of the replicator bench, in a process of its own so its CPU time and
 * peak RSS are the run's and nothing else's (bench/replicator.ts spawns one per run and
 * reads the JSON line it prints last). Usage: `node filterRun.mjs JSON`, where JSON is
 * `{ mode, port?, receiverPid?, …mode's fields }` (without `port`, `{ port, receiverPid }` is
 * read from a line on stdin: the child loads its modules while the receiver starts):
 * - `live`: a replicator (raw image, file journal with fsync, TCP to `port`) in sync
 *   mode; `writers` fibers write `size` bytes at spread-out offsets for `seconds`, then
 *   until all is acked. A writer waits while more than `backlog` bytes are unacked, so
 *   every write is streamed live. With `latency`, every write's time is kept, and a probe
 *   times a bare `pwrite` of the same size into a file beside the image every
 *   millisecond meanwhile: the guest-visible latency and its baseline, same load.
 * - `drain`: a full sync of a `diskBytes` disk, with guest writes at `load` bytes/s.
 * - `many`: `disks` replicators at once, each its own image, journal and connection,
 *   writing `size` bytes for `seconds`; the bytes each wrote, and the receiver's RSS
 *   before they connect and once all are connected, in sync and idle.
 * - `plain`: the plainest pipeline to bench/internal/plainLog.mjs: each block read from
 *   a file (`source: "file"`, the drain's work) or written to the image (`"guest"`, the
 *   live stream's), then a 32-byte header and the payload over loopback TCP; at most
 *   16 MiB unacked; until `bytes` are acked.
 * `replicatorOptions` are passed on to `Replicator.layer` (for experiments by hand).
 * Every mode reports its own CPU time (`process.cpuUsage`) and, given `receiverPid`, the
 * receiver's (utime + stime from /proc/PID/stat) over the measured interval only.
 * Plain JavaScript over the built package, so it starts as a bare child process (tsx
 * would add a second and 80 MiB to the RSS being measured).
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Deferred, Duration, Effect, Either, Exit, Fiber, FiberId, Layer, Metric, Stream } from "effect"
import * as ActivityLog from "../../dist/adapters/ActivityLog.js"
import * as EventJournal from "../../dist/adapters/EventJournal.js"
import * as LogReceiver from "../../dist/adapters/LogReceiver.js"
import * as VirtualDisk from "../../dist/adapters/VirtualDisk.js"
import * as Config from "../../dist/domain/Config.js"
import { withIoScheduler } from "../../dist/internal/IoScheduler.js"
import * as Replicator from "../../dist/replicator/Replicator.js"

const MiB = 1024 * 1024
const CONGESTION_LIMIT = 64 * MiB
/** The run's options; without a port, the receiver's port and pid come as a JSON line on stdin. */
const args = JSON.parse(process.argv[2])
if (args.port === undefined) {
  const line = await new Promise((resolve) => {
    let buffered = ""
    process.stdin.setEncoding("utf8").on("data", (s) => {
      buffered += s
      if (buffered.includes("\n")) resolve(buffered.slice(0, buffered.indexOf("\n")))
    })
  })
  Object.assign(args, JSON.parse(line))
  process.stdin.destroy()
}
const CLK_TCK = 100

/** The receiver's CPU time so far, in µs (undefined without a pid or off Linux). */
const receiverCpuUs = () => {
  if (args.receiverPid === undefined) return undefined
  try {
    const stat = fs.readFileSync(`/proc/${args.receiverPid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK
  } catch {
    return undefined
  }
}

/** The receiver's resident memory (bytes; undefined without a pid or off Linux). */
const receiverRss = () => {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${args.receiverPid}/status`, "utf8"))
    return m === null ? undefined : Number(m[1]) * 1024
  } catch {
    return undefined
  }
}

/** CPU of this process and of the receiver, from now until the returned function is called. */
const meter = () => {
  const cpu = process.cpuUsage()
  const receiver = receiverCpuUs()
  const start = performance.now()
  // On the monotonic clock V8's profiles use: bench/internal/profile.mjs --window cuts them to it.
  const fromUs = Number(process.hrtime.bigint() / 1000n)
  return () => {
    const used = process.cpuUsage(cpu)
    const receiverNow = receiverCpuUs()
    return {
      window: { fromUs, toUs: Number(process.hrtime.bigint() / 1000n) },
      ms: performance.now() - start,
      cpuUs: used.user + used.system,
      receiverCpuUs: receiver === undefined || receiverNow === undefined ? undefined : receiverNow - receiver
    }
  }
}

const percentile = (xs, p) => {
  if (xs.length === 0) return Number.NaN
  const sorted = Float64Array.from(xs).sort()
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]
}

/** A replicator of `diskBytes` in `dir`, connected to the receiver at `args.port`, in the caller's scope. */
const replicatorIn = (dir, diskId, diskBytes, initial, setup) =>
  Effect.gen(function* () {
    const config = Either.getOrThrow(
      Config.make({
        blockSize: 65536,
        blockCount: diskBytes / 65536,
        window: 1024,
        congestionLimit: CONGESTION_LIMIT,
        initial
      })
    )
    const journal = path.join(dir, "journal")
    const context = yield* Layer.build(
      Replicator.layer({
        diskId,
        config,
        switchoverHold: "50 millis",
        ...(setup.activityExtents === undefined ? {} : { activityExtents: setup.activityExtents }),
        // For experiments by hand (e.g. `maxPendingWrites`); the bench passes none.
        ...setup.replicatorOptions
      }).pipe(
        Layer.provideMerge(
          Layer.mergeAll(
            setup.activityExtents === undefined ? Layer.empty : ActivityLog.layerFile({ directory: journal }),
            VirtualDisk.layerFile({
              path: path.join(dir, "disk.img"),
              geometry: config,
              create: true,
              blockingWrites: setup.blockingWrites !== false
            }),
            EventJournal.layerFile({ directory: journal }),
            LogReceiver.layerTcp({ host: "127.0.0.1", port: args.port, sendBuffer: 256 })
          )
        )
      )
    ).pipe(Effect.orDie)
    return yield* Effect.provide(Replicator.Replicator, context)
  })

const scratch = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "cdp-sync-bench-filter-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/**
 * `writers` fibers writing `size` bytes into `replicator` until `deadline`, each waiting
 * while more than `backlog` bytes are unacked. A waiting writer costs nothing: it waits
 * on a gate that a fiber following `replicator.changes` (a status per decided batch, so
 * per ack) opens once the unacked writes are back under the limit, or the deadline
 * passed. (The writers used to poll the status every millisecond: 16 000 wake-ups a
 * second while the receiver lagged, which tripled the CPU per write of a slow run.)
 * `counter.writes` counts the writes; with `latencies`, each write's time in µs is pushed there.
 */
const writeUntil = (replicator, { size, writers, backlog, batch, slots, deadline, counter, latencies }) =>
  Effect.gen(function* () {
    const { watermark: base } = yield* replicator.status
    const data = new Uint8Array(size).fill(0x5a)
    const limit = Math.max(1, Math.floor(backlog / size))
    // In sync mode each write is one record, acked in seq order.
    let acked = 0
    let gate
    const open = () => {
      if (gate === undefined) return
      const g = gate
      gate = undefined
      Deferred.unsafeDone(g, Exit.void)
    }
    const follower = yield* Effect.fork(
      Stream.runForEach(replicator.changes, (s) =>
        Effect.sync(() => {
          acked = s.watermark - base
          if (counter.writes - acked <= limit) open()
        })
      )
    )
    // At the deadline every writer stops, waiting or not (after a pull-ahead the records
    // are fewer than the writes, and the unacked count never comes back under the limit).
    let expired = false
    const timer = setTimeout(
      () => {
        expired = true
        open()
      },
      Math.max(0, deadline - performance.now())
    )
    yield* Effect.forEach(
      Array.from({ length: writers }, (_, w) => w),
      (w) =>
        Effect.gen(function* () {
          let i = w
          while (!expired && performance.now() < deadline) {
            if (counter.writes - acked > limit) {
              gate ??= Deferred.unsafeMake(FiberId.none)
              yield* Deferred.await(gate)
              continue
            }
            if (batch === 1) {
              const t = latencies === undefined ? 0 : performance.now()
              yield* replicator.write(((i * 7919) % slots) * size, data).pipe(Effect.orDie)
              if (latencies !== undefined) latencies.push((performance.now() - t) * 1000)
              i += writers
            } else {
              // A guest queue's worth of requests at once.
              const requests = []
              for (let k = 0; k < batch; k++, i += writers)
                requests.push({ offset: ((i * 7919) % slots) * size, bytes: data })
              yield* replicator.writeAll(requests).pipe(Effect.orDie)
            }
            counter.writes += batch
          }
        }),
      { concurrency: "unbounded", discard: true }
    )
    clearTimeout(timer)
    yield* Fiber.interrupt(follower)
  })

/**
 * A file of 64 MiB for the bare pwrites, written through once before the measured interval:
 * the probe overwrites pages in the page cache, the cheapest pwrite there is (the
 * replicator's image is sparse, and its writes may allocate pages).
 */
const probeFile = (file) => {
  const fd = fs.openSync(file, "w+")
  const chunk = Buffer.alloc(MiB)
  for (let at = 0; at < 64 * MiB; at += MiB) fs.writeSync(fd, chunk, 0, MiB, at)
  return fd
}

/**
 * Bare pwrites of `size` bytes into `fd` every millisecond until `deadline`, timed as the
 * writers time theirs. Its own CPU time goes to `probe.cpuUs`, for the run to leave out
 * of the filter's (a thousand 4 KiB pwrites a second were several µs per guest write).
 */
const pwriteProbe = (fd, size, deadline, latencies, probe) =>
  Effect.gen(function* () {
    const data = Buffer.alloc(size, 0x5a)
    const slots = (64 * MiB) / size
    let i = 0
    const pwrite = Effect.sync(() => fs.writeSync(fd, data, 0, size, ((i++ * 7919) % slots) * size))
    while (performance.now() < deadline) {
      const cpu = process.cpuUsage()
      const t = performance.now()
      yield* pwrite
      latencies.push((performance.now() - t) * 1000)
      const used = process.cpuUsage(cpu)
      probe.cpuUs += used.user + used.system
      yield* Effect.sleep("1 millis")
    }
    fs.closeSync(fd)
  })

/**
 * `args.warmup` seconds of the same writes before the measured interval: the process is
 * fresh, and its first second is the JIT's (it doubled the CPU per write of a 1 s run).
 */
const warmUp = (replicator, size, writers, diskBytes) =>
  Effect.gen(function* () {
    if (!(args.warmup > 0)) return
    yield* writeUntil(replicator, {
      size,
      writers,
      backlog: CONGESTION_LIMIT / 4,
      batch: 1,
      slots: diskBytes / size,
      deadline: performance.now() + args.warmup * 1000,
      counter: { writes: 0 }
    })
    yield* replicator.quiesce.pipe(Effect.orDie)
  })

const live = Effect.scoped(
  Effect.gen(function* () {
    const { size, seconds, batch = 1, latency = false } = args
    const dir = yield* scratch
    const diskBytes = 256 * MiB
    const replicator = yield* replicatorIn(dir, "bench", diskBytes, "in-sync", args)
    const commits = Metric.tagged(Replicator.metrics.journalCommit, "disk", "bench")
    yield* replicator.quiesce.pipe(Effect.orDie)
    yield* warmUp(replicator, size, 16, diskBytes)
    const { epoch } = yield* replicator.status
    const commitsBefore = yield* Metric.value(commits)
    const counter = { writes: 0 }
    const writeLatencies = latency ? [] : undefined
    const pwriteLatencies = []
    const probeFd = latency ? probeFile(path.join(dir, "bare.img")) : undefined
    const probeCpu = { cpuUs: 0 }
    const stop = meter()
    const deadline = performance.now() + seconds * 1000
    const probe = latency
      ? yield* Effect.fork(pwriteProbe(probeFd, size, deadline, pwriteLatencies, probeCpu))
      : undefined
    yield* writeUntil(replicator, {
      size,
      writers: 16,
      backlog: CONGESTION_LIMIT / 4,
      batch,
      slots: diskBytes / size,
      deadline,
      counter,
      latencies: writeLatencies
    })
    if (probe !== undefined) yield* Fiber.join(probe)
    yield* replicator.quiesce.pipe(Effect.orDie)
    const measured = stop()
    const status = yield* replicator.status
    const after = yield* Metric.value(commits)
    return {
      ...measured,
      // The filter's: the probe's pwrites left out.
      cpuUs: measured.cpuUs - probeCpu.cpuUs,
      probeCpuUs: probeCpu.cpuUs,
      writes: counter.writes,
      bytes: counter.writes * size,
      pullAheads: status.epoch - epoch,
      journalCommitMs:
        (1000 * (after.sum - commitsBefore.sum)) / Math.max(1, after.count - commitsBefore.count),
      ...(latency
        ? {
            writeP50Us: percentile(writeLatencies, 0.5),
            writeP99Us: percentile(writeLatencies, 0.99),
            pwriteP50Us: percentile(pwriteLatencies, 0.5),
            pwriteP99Us: percentile(pwriteLatencies, 0.99),
            pwrites: pwriteLatencies.length
          }
        : {})
    }
  })
)

const drain = Effect.scoped(
  Effect.gen(function* () {
    const { diskBytes, load = 0 } = args
    if (args.warmup > 0)
      // A full sync of a small disk of its own first (see warmUp).
      yield* Effect.scoped(
        Effect.gen(function* () {
          const warm = yield* replicatorIn(yield* scratch, "warm-up", 16 * MiB, "full-sync", args)
          yield* warm.quiesce.pipe(Effect.orDie)
        })
      )
    const dir = yield* scratch
    const replicator = yield* replicatorIn(dir, "bench", diskBytes, "full-sync", args)
    const stop = meter()
    const data = new Uint8Array(64 * 1024).fill(0x33)
    const guest =
      load <= 0
        ? undefined
        : yield* Effect.fork(
            Effect.gen(function* () {
              let i = 0
              const pause = Duration.millis((data.length / load) * 1000)
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
    const measured = stop()
    if (guest !== undefined) yield* Fiber.interrupt(guest)
    return { ...measured, bytes: diskBytes, records: diskBytes / data.length }
  })
)

const many = Effect.scoped(
  Effect.gen(function* () {
    const { disks, size, seconds } = args
    const diskBytes = 64 * MiB
    const receiverRssBefore = receiverRss()
    const replicators = yield* Effect.forEach(
      Array.from({ length: disks }, (_, d) => d),
      (d) => Effect.flatMap(scratch, (dir) => replicatorIn(dir, `disk${d}`, diskBytes, "in-sync", args)),
      { concurrency: 8 }
    )
    yield* Effect.forEach(replicators, (r) => r.quiesce.pipe(Effect.orDie), { concurrency: "unbounded" })
    // Every disk connected, in sync and idle: what the receiver holds for them. A moment
    // first, for the handshakes' garbage to go.
    yield* Effect.sleep("1500 millis")
    const receiverRssIdle = receiverRss()
    yield* Effect.forEach(
      replicators,
      (r) => warmUp(r, size, Math.max(1, Math.ceil(16 / disks)), diskBytes),
      {
        concurrency: "unbounded"
      }
    )
    const counters = replicators.map(() => ({ writes: 0 }))
    const stop = meter()
    const deadline = performance.now() + seconds * 1000
    yield* Effect.forEach(
      replicators,
      (replicator, d) =>
        writeUntil(replicator, {
          size,
          writers: Math.max(1, Math.ceil(16 / disks)),
          // 16 MiB unacked in all, at least 1 MiB a disk.
          backlog: Math.max(MiB, (16 * MiB) / disks),
          batch: 1,
          slots: diskBytes / size,
          deadline,
          counter: counters[d]
        }),
      { concurrency: "unbounded", discard: true }
    )
    yield* Effect.forEach(replicators, (r) => r.quiesce.pipe(Effect.orDie), { concurrency: "unbounded" })
    const measured = stop()
    const perDisk = counters.map((c) => c.writes * size)
    return {
      ...measured,
      perDisk,
      bytes: perDisk.reduce((a, b) => a + b, 0),
      writes: perDisk.reduce((a, b) => a + b, 0) / size,
      receiverRssBefore,
      receiverRssIdle
    }
  })
)

/** The plainest pipeline's sender (see the header). */
const plain = async () => {
  const { size, bytes, source } = args
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-sync-bench-plain-"))
  try {
    const image = fs.openSync(path.join(dir, "disk.img"), "w+")
    const diskBytes = source === "file" ? bytes : 256 * MiB
    fs.ftruncateSync(image, diskBytes)
    const socket = net.connect({ port: args.port, host: "127.0.0.1", noDelay: true })
    await new Promise((r) => socket.once("connect", () => r()))
    let acked = 0
    socket.on("data", (d) => {
      for (let i = 0; i + 8 <= d.length; i += 8) acked = d.readDoubleLE(i)
    })
    const payload = Buffer.alloc(size, 0x5a)
    const slots = diskBytes / size
    const turn = () => new Promise((r) => setImmediate(r))
    let sent = 0
    let n = 0
    // The first eighth unmeasured: the JIT's (see warmUp).
    const warm = Math.floor(bytes / 8 / size)
    let stop
    while (n * size < bytes) {
      if (n >= warm && stop === undefined) stop = meter()
      if (sent - acked > 16 * MiB) {
        await turn()
        continue
      }
      socket.cork()
      for (let k = 0; k < 64 && n * size < bytes; k++, n++) {
        if (source === "file") {
          // A block read into a buffer of its own, as a drain reads it.
          const block = Buffer.allocUnsafe(size)
          fs.readSync(image, block, 0, size, n * size)
          socket.write(header(size, n))
          socket.write(block)
        } else {
          fs.writeSync(image, payload, 0, size, ((n * 7919) % slots) * size)
          socket.write(header(size, n))
          socket.write(payload)
        }
        sent += 32 + size
      }
      socket.uncork()
      await turn()
    }
    socket.end()
    while (acked < sent) await new Promise((r) => setTimeout(r, 1))
    const measured = stop()
    fs.closeSync(image)
    return { ...measured, writes: n - warm, bytes: (n - warm) * size }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const header = (size, n) => {
  const h = Buffer.alloc(32)
  h.writeUInt32LE(size, 0)
  h.writeDoubleLE(n, 8)
  return h
}

const modes = { live, drain, many }
const result =
  args.mode === "plain" ? await plain() : await Effect.runPromise(withIoScheduler(modes[args.mode]))
console.log(JSON.stringify({ ...result, maxRssBytes: process.resourceUsage().maxRSS * 1024 }))
process.exit(0)

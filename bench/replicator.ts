/**
 * `npm run bench -- replicator`: the replicator end to end, with its real layers (raw
 * disk image, file journal with fsync, TCP) against the real log receiver process on
 * loopback (window 1024 blocks of 64 KiB, congestion limit 64 MiB), each comparison
 * beside the plainest program doing the same unavoidable work. The machine is shared,
 * so every run of a round goes once per round, rows and their baselines interleaved
 * (row A, its baseline, row B, …, then round 2), `ROUNDS` rounds; the tables print the
 * median with the spread (min–max) of each and the ratio of the medians. Each filter run
 * is a child process of its own (bench/internal/filterRun.mjs): its CPU time and peak
 * RSS are the filter's, the receiver's CPU time is read from /proc over the same interval.
 * - live stream at 4 KiB and 64 KiB writes: sixteen guest writers keep the stream
 *   saturated but back off while more than a quarter of the congestion limit is
 *   unacked, so every write is streamed live (rows say if a pull-ahead happened).
 *   Baseline: the plainest pipeline (pwrite into an image, 32-byte header and payload
 *   over loopback TCP to bench/internal/plainLog.mjs, which appends and fdatasyncs every
 *   4 MiB before acking). Also: thread-pool disk writes; the filter alone against a
 *   receiver that acks without storing (bench/internal/ackSink.mjs); guest queues of
 *   32 (`writeAll`); the activity log; CPU per write (filter) and per record (receiver)
 *   beside the plainest pipeline's sender and receiver; p99 of a 4 KiB
 *   `Replicator.write` beside a bare pwrite of the same size timed in the same process
 *   meanwhile; the filter's peak RSS in the 64 KiB stream; the journal's commit time.
 * - resync drain (a full sync of the disk) beside its plainest pipeline (blocks read
 *   from a file, sent, appended durably by plainLog.mjs); convergence under load.
 * - many disks (its own group, `npm run bench -- many-disks`, `runManyDisks`): one
 *   receiver process ingesting from 1, 8 and 64 replicators at once
 *   (in one filter process, each its own image, journal and connection, 64 KiB writes):
 *   aggregate rate, the slowest and fastest disk beside the mean, and the receiver's
 *   memory per idle connected disk.
 * Full: 3 rounds of 4 s streams, 9–14 minutes on the shared 2-core VM (the many-disks
 *   group 2–3 more). `--quick`: 1 round of 1 s streams (3 s for many disks) of the rows
 *   that carry targets, about a minute for each group.
 * `CDP_SYNC_BENCH_REPLICATOR_ONLY=live-4k-e2e,plain-4k` runs only those runs (names in
 * `runs`); `CDP_SYNC_BENCH_PROFILE=DIR` runs every filter child and receiver with
 * `--cpu-prof` into DIR (see docs/performance.md).
 */
import { spawn } from "node:child_process"
import * as fsSync from "node:fs"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { CLI, type Child, ROOT, spawnReady } from "./internal/children.js"
import { type BenchRow, median, overRounds, QUICK, renderTable } from "./table.js"

const ACK_SINK = path.resolve(import.meta.dirname, "internal/ackSink.mjs")
const PLAIN_LOG = path.resolve(import.meta.dirname, "internal/plainLog.mjs")
const FILTER_RUN = path.resolve(import.meta.dirname, "internal/filterRun.mjs")
const MiB = 1024 * 1024
/** Rounds: 3, or 1 in the quick pass (which checks that the bench runs, and prints no spread). */
const ROUNDS = Math.max(1, Number(process.env.CDP_SYNC_BENCH_REPLICATOR_ROUNDS ?? (QUICK ? 1 : 3)))
const SECONDS = QUICK ? 1 : 4
/** Unmeasured writes first in each filter process (its JIT's first second). */
const WARMUP = QUICK ? 0.5 : 1
/** What the plainest pipelines and the raw TCP rows move. */
const PLAIN_BYTES = (QUICK ? 128 : 512) * MiB
const DRAIN_BYTES = (QUICK ? 64 : 128) * MiB
const ONLY = process.env.CDP_SYNC_BENCH_REPLICATOR_ONLY?.split(",")
const PROFILE = process.env.CDP_SYNC_BENCH_PROFILE

/** Node's flags for a child: `--cpu-prof` into PROFILE, named after the run, if asked. */
const nodeFlags = (name: string): ReadonlyArray<string> =>
  PROFILE === undefined
    ? []
    : ["--cpu-prof", `--cpu-prof-dir=${PROFILE}`, `--cpu-prof-name=${name}.cpuprofile`]

/** The figures of one run, by name. */
type Figures = Record<string, number>

interface Receiver {
  readonly port: number
  readonly pid: number
  readonly stop: () => Promise<void>
}

/** The real receiver (`cdp-sync receiver`) on a fresh directory, for one run. */
const logReceiver = async (name: string): Promise<Receiver> => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-receiver-"))
  const child = await spawnReady(
    process.execPath,
    [...nodeFlags(`receiver-${name}`), CLI, "receiver", "--dir", dir, "--port", "0"],
    /^listening (\S+):(\d+)$/m,
    { what: "cdp-sync receiver" }
  )
  return {
    port: Number(child.ready[2]),
    pid: child.child.pid!,
    stop: async () => {
      await child.stop("SIGTERM")
      await fs.rm(dir, { recursive: true, force: true })
    }
  }
}

/** A bench sink (ackSink.mjs, plainLog.mjs DIR) for one run. */
const sink = async (script: string, withDir: boolean): Promise<Receiver> => {
  const dir = withDir ? await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-sink-")) : undefined
  const child: Child = await spawnReady(
    process.execPath,
    [script, ...(dir === undefined ? [] : [dir])],
    /listening 127\.0\.0\.1:(\d+)/
  )
  return {
    port: Number(child.ready[1]),
    pid: child.child.pid!,
    stop: async () => {
      await child.stop("SIGTERM")
      if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true })
    }
  }
}

/** Runs filterRun.mjs against `receiver` with `options`; its figures. */
/**
 * Runs filterRun.mjs with `options` against the receiver `starting` resolves to; its
 * figures. The child loads its modules while the receiver starts, then reads the
 * receiver's port and pid on stdin (a second less per run).
 */
const filterRun = async (
  name: string,
  starting: Promise<Receiver>,
  options: Record<string, unknown>
): Promise<Figures> => {
  const child = spawn(
    process.execPath,
    [...nodeFlags(`filter-${name}`), FILTER_RUN, JSON.stringify({ warmup: WARMUP, ...options })],
    { stdio: ["pipe", "pipe", "pipe"], cwd: ROOT }
  )
  let out = ""
  let err = ""
  child.stdout.setEncoding("utf8").on("data", (s: string) => {
    out += s
  })
  child.stderr.setEncoding("utf8").on("data", (s: string) => {
    err = (err + s).slice(-4000)
  })
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  let receiver: Receiver | undefined
  try {
    receiver = await starting
    child.stdin.end(`${JSON.stringify({ port: receiver.port, receiverPid: receiver.pid })}\n`)
    const code = await exited
    if (code !== 0) throw new Error(`filterRun ${name} exited ${code}; stderr:\n${err}`)
    const figures = JSON.parse(out.trim().split("\n").at(-1)!) as Figures
    // The measured interval and its counts, for bench/internal/profile.mjs --window.
    if (PROFILE !== undefined)
      fsSync.writeFileSync(path.join(PROFILE, `${name}.json`), JSON.stringify(figures))
    return figures
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL")
      await exited
    }
    await (receiver ?? (await starting.catch(() => undefined)))?.stop()
  }
}

const mbs = (bytes: number, ms: number) => bytes / MiB / (ms / 1000)

/** A live stream: MB/s, writes/s, CPU per write and per record, and what the run reports. */
const liveFigures = (size: number, r: Figures): Figures => ({
  ...r,
  mbs: mbs(r.bytes!, r.ms!),
  writesPerS: (r.writes! / r.ms!) * 1000,
  cpuPerWriteUs: r.cpuUs! / r.writes!,
  receiverCpuPerRecordUs: r.receiverCpuUs === undefined ? Number.NaN : r.receiverCpuUs / r.writes!,
  rssMiB: r.maxRssBytes! / MiB,
  size
})

interface LiveSetup {
  readonly receiver: "log-receiver" | "ack-sink"
  readonly blockingWrites?: boolean
  readonly activityExtents?: number
  readonly batch?: number
  readonly latency?: boolean
}

const live =
  (size: number, setup: LiveSetup) =>
  async (name: string): Promise<Figures> => {
    const receiver = setup.receiver === "ack-sink" ? sink(ACK_SINK, false) : logReceiver(name)
    const r = await filterRun(name, receiver, { mode: "live", size, seconds: SECONDS, ...setup })
    return liveFigures(size, r)
  }

const plain =
  (size: number, source: "guest" | "file") =>
  async (name: string): Promise<Figures> => {
    const receiver = sink(PLAIN_LOG, true)
    const bytes = source === "file" ? DRAIN_BYTES : PLAIN_BYTES
    const r = await filterRun(name, receiver, { mode: "plain", size, bytes, source })
    return liveFigures(size, r)
  }

/** The same bytes over a loopback TCP socket to a sink that keeps nothing (the old baseline). */
const rawTcp = (size: number) => async (): Promise<Figures> => {
  const server = net.createServer((s) => s.on("data", () => {}))
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  const socket = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1")
  await new Promise<void>((r) => socket.once("connect", () => r()))
  const payload = new Uint8Array(size).fill(0x5a)
  const start = performance.now()
  for (let bytes = 0; bytes < PLAIN_BYTES; bytes += size)
    if (!socket.write(payload)) await new Promise<void>((r) => socket.once("drain", () => r()))
  await new Promise<void>((r) => socket.end(() => r()))
  const ms = performance.now() - start
  server.close()
  return { mbs: mbs(PLAIN_BYTES, ms) }
}

/** The same bytes appended to a file in 4 MiB writes, each followed by an fdatasync. */
const durableCeiling = async (): Promise<Figures> => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-ceiling-"))
  const handle = await fs.open(path.join(dir, "log"), "w")
  const chunk = Buffer.alloc(4 * MiB, 0x5a)
  const start = performance.now()
  for (let at = 0; at < PLAIN_BYTES; at += chunk.length) {
    await handle.write(chunk, 0, chunk.length, at)
    await handle.datasync()
  }
  const ms = performance.now() - start
  await handle.close()
  await fs.rm(dir, { recursive: true, force: true })
  return { mbs: mbs(PLAIN_BYTES, ms) }
}

/** Mean time of a 4 KiB append and its fdatasync on an otherwise idle disk: what a journal commit costs alone. */
const lonelyCommit = async (): Promise<Figures> => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-bench-fsync-"))
  const handle = await fs.open(path.join(dir, "log"), "w")
  const record = Buffer.alloc(4096, 0x5a)
  const n = QUICK ? 50 : 200
  const start = performance.now()
  for (let i = 0; i < n; i++) {
    await handle.write(record, 0, record.length, i * record.length)
    await handle.datasync()
  }
  const ms = (performance.now() - start) / n
  await handle.close()
  await fs.rm(dir, { recursive: true, force: true })
  return { ms }
}

const drain =
  (receiverKind: "log-receiver" | "ack-sink", load: () => number = () => 0) =>
  async (name: string): Promise<Figures> => {
    const receiver = receiverKind === "ack-sink" ? sink(ACK_SINK, false) : logReceiver(name)
    const r = await filterRun(name, receiver, { mode: "drain", diskBytes: DRAIN_BYTES, load: load() })
    return {
      ...r,
      mbs: mbs(r.bytes!, r.ms!),
      receiverCpuPerRecordUs: r.receiverCpuUs === undefined ? Number.NaN : r.receiverCpuUs / r.records!
    }
  }

const many =
  (disks: number) =>
  async (name: string): Promise<Figures> => {
    const r = (await filterRun(name, logReceiver(name), {
      mode: "many",
      disks,
      size: 65536,
      // Each of 64 disks needs its turns for a fair judgement of starvation: 1 s was too
      // few on the loaded machine (the writers take turns in bursts of a few writes).
      seconds: Math.max(3, SECONDS)
    })) as Figures & { perDisk: ReadonlyArray<number> }
    const mean = r.bytes! / disks
    return {
      idlePerDiskMiB: (r.receiverRssIdle! - r.receiverRssBefore!) / disks / MiB,
      receiverRssBeforeMiB: r.receiverRssBefore! / MiB,
      receiverRssIdleMiB: r.receiverRssIdle! / MiB,
      mbs: mbs(r.bytes!, r.ms!),
      slowest: Math.min(...r.perDisk) / mean,
      fastest: Math.max(...r.perDisk) / mean,
      receiverCpuPerRecordUs: r.receiverCpuUs === undefined ? Number.NaN : r.receiverCpuUs / r.writes!
    }
  }

/** One run of a round: its name, whether the quick pass runs it, and the run. */
type Run = readonly [string, boolean, (name: string) => Promise<Figures>]

const samples = new Map<string, Array<Figures>>()
const last = (name: string): Figures | undefined => samples.get(name)?.at(-1)

/** Every run of a round, in order: each row beside its baseline. */
const runs: ReadonlyArray<Run> = [
  ["live-4k-e2e", true, live(4096, { receiver: "log-receiver", latency: true })],
  ["plain-4k", true, plain(4096, "guest")],
  ["live-4k-threadpool", false, live(4096, { receiver: "log-receiver", blockingWrites: false })],
  ["live-4k-alone", false, live(4096, { receiver: "ack-sink" })],
  ["live-4k-alone-activity1024", false, live(4096, { receiver: "ack-sink", activityExtents: 1024 })],
  ["live-4k-alone-activity16", false, live(4096, { receiver: "ack-sink", activityExtents: 16 })],
  ["live-4k-e2e-queues", false, live(4096, { receiver: "log-receiver", batch: 32 })],
  ["live-4k-alone-queues", false, live(4096, { receiver: "ack-sink", batch: 32 })],
  ["lonely-commit", true, lonelyCommit],
  ["raw-4k", false, rawTcp(4096)],
  ["live-64k-e2e", true, live(65536, { receiver: "log-receiver" })],
  ["plain-64k", true, plain(65536, "guest")],
  ["live-64k-threadpool", false, live(65536, { receiver: "log-receiver", blockingWrites: false })],
  ["live-64k-alone", false, live(65536, { receiver: "ack-sink" })],
  ["raw-64k", false, rawTcp(65536)],
  ["durable-ceiling", false, durableCeiling],
  ["drain-e2e", true, drain("log-receiver")],
  ["plain-drain", true, plain(65536, "file")],
  ["drain-alone", false, drain("ack-sink")],
  ...[0.25, 0.5, 0.75].map(
    (load): Run => [
      `converge-${load * 100}`,
      false,
      // A fraction of the drain rate measured just before, in this round.
      drain("log-receiver", () => load * (last("drain-e2e")?.mbs ?? 100) * MiB)
    ]
  ),
  ["many-1", true, many(1)],
  ["many-8", false, many(8)],
  ["many-64", true, many(64)]
]

/** The samples of `figure` in run `name`, one per round. */
const of = (name: string, figure: string): Array<number> => (samples.get(name) ?? []).map((f) => f[figure]!)
const has = (name: string) => (samples.get(name)?.length ?? 0) > 0

const rowsOf = (): Array<BenchRow> => {
  const rows: Array<BenchRow> = []
  // A row needs its own run; without its baseline's (CDP_SYNC_BENCH_REPLICATOR_ONLY) it prints alone.
  const add = (when: ReadonlyArray<string>, row: () => BenchRow) => {
    if (has(when[0]!)) rows.push(row())
  }
  const rate = (
    name: string,
    e2e: string,
    baseline: string,
    baselineName: string,
    target?: BenchRow["target"]
  ) =>
    add([e2e, baseline], () => {
      const pullAheads = of(e2e, "pullAheads").reduce((a, b) => a + (b ?? 0), 0)
      return overRounds(
        {
          name: `${name} (${Math.round(median(of(e2e, "writesPerS")))} writes/s${pullAheads > 0 ? `, ${pullAheads} pull-aheads` : ""})`,
          unit: "MB/s",
          baselineName,
          higherIsBetter: true,
          ...(target === undefined ? {} : { target })
        },
        of(e2e, "mbs"),
        of(baseline, "mbs")
      )
    })
  const plainest = "plainest pipeline"
  for (const k of ["4k", "64k"] as const) {
    const size = k === "4k" ? "4 KiB" : "64 KiB"
    rate(
      `live stream, ${size} writes, end to end`,
      `live-${k}-e2e`,
      `plain-${k}`,
      plainest,
      k === "4k" ? { ratio: 0.5, text: ">= 0.5x plainest" } : { ratio: 0.6, text: ">= 0.6x plainest" }
    )
    rate(
      `live stream, ${size} writes, thread-pool disk writes`,
      `live-${k}-threadpool`,
      `plain-${k}`,
      plainest
    )
    rate(`live stream, ${size} writes, filter alone (acking sink)`, `live-${k}-alone`, `plain-${k}`, plainest)
    if (k === "4k") {
      rate(
        "live stream, 4 KiB, guest queues of 32 (writeAll), end to end",
        "live-4k-e2e-queues",
        "plain-4k",
        plainest
      )
      rate(
        "live stream, 4 KiB, guest queues of 32, filter alone",
        "live-4k-alone-queues",
        "plain-4k",
        plainest
      )
      for (const extents of [1024, 16])
        rate(
          `live stream, 4 KiB, filter alone, activity log of ${extents} x 4 MiB extents (working set: 64)`,
          `live-4k-alone-activity${extents}`,
          "live-4k-alone",
          "filter alone without the log"
        )
    }
    add([`plain-${k}`, `raw-${k}`], () =>
      overRounds(
        {
          name: `plainest pipeline, ${size} writes: pwrite + TCP + append with fdatasync per 4 MiB`,
          unit: "MB/s",
          baselineName: "same bytes over raw loopback TCP",
          higherIsBetter: true
        },
        of(`plain-${k}`, "mbs"),
        of(`raw-${k}`, "mbs")
      )
    )
    add([`live-${k}-e2e`, `plain-${k}`], () =>
      overRounds(
        {
          name: `filter CPU per ${size} write, end to end (process CPU time / writes)`,
          unit: "µs",
          baselineName: "plainest pipeline's sender",
          higherIsBetter: false,
          ...(k === "4k" ? { target: { max: 12, text: "<= 12 µs" } } : {})
        },
        of(`live-${k}-e2e`, "cpuPerWriteUs"),
        of(`plain-${k}`, "cpuPerWriteUs")
      )
    )
    add([`live-${k}-alone`, `plain-${k}`], () =>
      overRounds(
        {
          name: `filter CPU per ${size} write, filter alone (acking sink)`,
          unit: "µs",
          baselineName: "plainest pipeline's sender",
          higherIsBetter: false
        },
        of(`live-${k}-alone`, "cpuPerWriteUs"),
        of(`plain-${k}`, "cpuPerWriteUs")
      )
    )
    add([`live-${k}-e2e`, `plain-${k}`], () =>
      overRounds(
        {
          name: `receiver CPU per ${size} record (receiver process CPU time / records)`,
          unit: "µs",
          baselineName: "plainLog.mjs per record",
          higherIsBetter: false,
          ...(k === "4k" ? { target: { max: 8, text: "<= 8 µs" } } : {})
        },
        of(`live-${k}-e2e`, "receiverCpuPerRecordUs"),
        of(`plain-${k}`, "receiverCpuPerRecordUs")
      )
    )
  }
  add(["live-4k-e2e"], () =>
    overRounds(
      {
        name: `p99 of a 4 KiB Replicator.write during the 4 KiB end-to-end stream (p50 ${Math.round(median(of("live-4k-e2e", "writeP50Us")))} µs; bare pwrite p50 ${Math.round(median(of("live-4k-e2e", "pwriteP50Us")))} µs)`,
        unit: "µs",
        baselineName: "bare 4 KiB pwrite, same process, meanwhile",
        higherIsBetter: false,
        target: { ratio: 1 / 3, text: "<= 3x bare pwrite" }
      },
      of("live-4k-e2e", "writeP99Us"),
      of("live-4k-e2e", "pwriteP99Us")
    )
  )
  add(["live-4k-e2e", "lonely-commit"], () =>
    overRounds(
      {
        name: "filter journal commit (append + fsync), mean during the 4 KiB end-to-end stream",
        unit: "ms",
        baselineName: "4 KiB append + fdatasync, idle disk",
        higherIsBetter: false
      },
      of("live-4k-e2e", "journalCommitMs"),
      of("lonely-commit", "ms")
    )
  )
  add(["live-64k-e2e", "plain-64k"], () =>
    overRounds(
      {
        name: "filter peak RSS, 64 KiB end-to-end stream",
        unit: "MiB",
        baselineName: "plainest pipeline's sender",
        higherIsBetter: false,
        target: { max: 256, text: "< 256 MiB" }
      },
      of("live-64k-e2e", "rssMiB"),
      of("plain-64k", "rssMiB")
    )
  )
  add(["durable-ceiling", "raw-64k"], () =>
    overRounds(
      {
        name: "durable ceiling: the same bytes appended to a file, fdatasync per 4 MiB",
        unit: "MB/s",
        baselineName: "64 KiB writes over raw loopback TCP",
        higherIsBetter: true
      },
      of("durable-ceiling", "mbs"),
      of("raw-64k", "mbs")
    )
  )
  const drainName = `resync drain (full sync of ${DRAIN_BYTES / MiB} MiB)`
  const plainDrain = "plainest drain: read blocks, TCP, append with fdatasync"
  add(["drain-e2e", "plain-drain"], () =>
    overRounds(
      {
        name: `${drainName}, end to end`,
        unit: "MB/s",
        baselineName: plainDrain,
        higherIsBetter: true,
        target: { ratio: 0.8, text: ">= 0.8x plainest" }
      },
      of("drain-e2e", "mbs"),
      of("plain-drain", "mbs")
    )
  )
  add(["drain-alone", "plain-drain"], () =>
    overRounds(
      {
        name: `${drainName}, filter alone (acking sink)`,
        unit: "MB/s",
        baselineName: plainDrain,
        higherIsBetter: true
      },
      of("drain-alone", "mbs"),
      of("plain-drain", "mbs")
    )
  )
  for (const load of [25, 50, 75])
    add([`converge-${load}`, "drain-e2e"], () =>
      overRounds(
        {
          name: `convergence at ${load}% of the drain rate (link up to sync)`,
          unit: "ms",
          baselineName: "no load",
          higherIsBetter: false,
          ...(load === 50 ? { target: { ratio: 1 / 3, text: "<= 3x no-load" } } : {})
        },
        of(`converge-${load}`, "ms"),
        of("drain-e2e", "ms")
      )
    )
  for (const disks of [8, 64])
    add([`many-${disks}`, "many-1"], () =>
      overRounds(
        {
          name: `many disks: one receiver, ${disks} filters at once, aggregate 64 KiB stream`,
          unit: "MB/s",
          baselineName: "one disk",
          higherIsBetter: true,
          ...(disks === 64 ? { target: { ratio: 0.8, text: ">= 0.8x one disk" } } : {})
        },
        of(`many-${disks}`, "mbs"),
        of("many-1", "mbs")
      )
    )
  add(["many-64"], () =>
    overRounds(
      {
        name: "many disks, 64 at once: the slowest disk's rate / the mean",
        unit: "x",
        higherIsBetter: true,
        target: { min: 0.5, text: ">= 0.5 (within 2x)" }
      },
      of("many-64", "slowest")
    )
  )
  add(["many-64"], () =>
    overRounds(
      {
        name: "many disks, 64 at once: the fastest disk's rate / the mean",
        unit: "x",
        higherIsBetter: false,
        target: { max: 2, text: "<= 2 (within 2x)" }
      },
      of("many-64", "fastest")
    )
  )
  for (const disks of [8, 64])
    add([`many-${disks}`, "many-1"], () =>
      overRounds(
        {
          name: `many disks: receiver CPU per 64 KiB record, ${disks} disks`,
          unit: "µs",
          baselineName: "one disk",
          higherIsBetter: false
        },
        of(`many-${disks}`, "receiverCpuPerRecordUs"),
        of("many-1", "receiverCpuPerRecordUs")
      )
    )
  add(["many-64"], () => {
    const runs = samples.get("many-64")!
    return overRounds(
      {
        name: `many disks: receiver RSS per idle connected disk (64 disks; ${Math.round(median(runs.map((f) => f.receiverRssBeforeMiB!)))} MiB before they connect, ${Math.round(median(runs.map((f) => f.receiverRssIdleMiB!)))} MiB once all are idle in sync)`,
        unit: "MiB",
        higherIsBetter: false,
        target: { max: 2, text: "<= 2 MiB" }
      },
      of("many-64", "idlePerDiskMiB")
    )
  })
  return rows
}

/** Runs the runs `inGroup` picks, `ROUNDS` rounds; the rows they make. */
const runGroup = async (
  group: string,
  inGroup: (name: string) => boolean
): Promise<ReadonlyArray<BenchRow>> => {
  samples.clear()
  const chosen = runs.filter(
    ([name, quick]) => inGroup(name) && (ONLY === undefined ? !QUICK || quick : ONLY.includes(name))
  )
  const began = os.loadavg()[0]!
  for (let round = 1; round <= ROUNDS; round++)
    for (const [name, , go] of chosen) {
      const t = performance.now()
      samples.set(name, [...(samples.get(name) ?? []), await go(`${name}-${round}`)])
      process.stderr.write(
        `${group}: ${name}, round ${round}/${ROUNDS}, ${((performance.now() - t) / 1000).toFixed(1)} s\n`
      )
    }
  const streams = group === "many-disks" ? Math.max(3, SECONDS) : SECONDS
  console.log(
    `\n${group}: ${ROUNDS} round${ROUNDS === 1 ? "" : "s"} of ${streams} s streams${QUICK ? " (quick: only the rows with targets)" : ""}; load average ${began.toFixed(2)} at the start, ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")} at the end`
  )
  return rowsOf()
}

/** The replicator group: every run but the many-disks ones. */
export const run = (): Promise<ReadonlyArray<BenchRow>> =>
  runGroup("replicator", (name) => !name.startsWith("many-"))

/** The many-disks group: one receiver process, 1, 8 and 64 replicators at once. */
export const runManyDisks = (): Promise<ReadonlyArray<BenchRow>> =>
  runGroup("many-disks", (name) => name.startsWith("many-"))

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((rows) => console.log(renderTable("replicator: end to end on loopback", rows)))
}

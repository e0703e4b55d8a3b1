/**
 * `npm run bench -- nbd`: a guest's writes through an NBD export, four servers side by
 * side in one run, each driven by fio's nbd engine (libnbd) on the same image size with
 * the same cache semantics (the served image in the page cache, no O_DIRECT; FLUSH and
 * FUA reach the disk):
 * (a) `qemu-nbd` serving the image, no replication: the ceiling;
 * (b) `cdp-sync serve` replicating live to the log receiver process (fsync before ack);
 * (c) `qemu-storage-daemon` with a `blockdev-mirror` job in `copy-mode: write-blocking` to
 *     a `qemu-nbd` target (QEMU's synchronous "active mirror");
 * (d) the same mirror job in background copy mode.
 * Every server listens on a unix socket (`CDP_SYNC_BENCH_NBD_TRANSPORT=tcp` puts (b) on
 * loopback TCP, as it was before session 11).
 * Workloads: 4 KiB random writes at iodepth 16 and 64 KiB sequential writes at iodepth 4,
 * `CDP_SYNC_BENCH_NBD_SECONDS` (default 15) each, `CDP_SYNC_BENCH_NBD_ROUNDS` (default 3)
 * rounds interleaved a, b, c, d, a, b, …; figures are medians over the rounds, with the
 * spread (min–max) when there is more than one. Replication lag: for (b) the records the
 * receiver took after fio's last write and how long it took to catch up; for (d) the
 * bytes the mirror job still had to copy, sampled during the run (QMP query-block-jobs).
 * The mirror's target is `qemu-nbd` with its default writeback cache: the active mirror
 * waits for the target's write, not for an fsync (the receiver fsyncs before it acks).
 * About 8 minutes by default; `CDP_SYNC_BENCH_NBD_SECONDS=3 CDP_SYNC_BENCH_NBD_ROUNDS=1`
 * checks that it runs. `CDP_SYNC_BENCH_NBD_ONLY=a,b` runs only those setups.
 * For (b) it also prints the CPU time `serve` and the receiver spent per write (process CPU
 * time over fio's writes, ramp included: from /proc, so Linux only), and with
 * `CDP_SYNC_BENCH_NBD_PROFILE=DIR` runs `serve` under `node --cpu-prof` into DIR
 * (serve-4k-N.cpuprofile, the Nth profiled run's: see bench/internal/profile.mjs).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { find, missing, type Tool } from "../test/support/tools.js"
import * as Nbd from "../test/support/nbdExport.js"
import { listDisks, openChain } from "../dist/receiver/internal/chain.js"
import * as QemuMirror from "./internal/qemuMirror.js"
import type { BenchRow } from "./table.js"

const MiB = 1024 * 1024
const IMAGE_BYTES = 256 * MiB
const SECONDS = Number(process.env.CDP_SYNC_BENCH_NBD_SECONDS ?? 15)
const ROUNDS = Math.max(1, Number(process.env.CDP_SYNC_BENCH_NBD_ROUNDS ?? 3))

type Setup = "a" | "b" | "c" | "d"
const ALL_SETUPS: ReadonlyArray<readonly [Setup, string]> = [
  ["a", "(a) qemu-nbd, no replication"],
  ["b", "(b) cdp-sync serve → receiver"],
  ["c", "(c) qsd active mirror (write-blocking)"],
  ["d", "(d) qsd mirror, background"]
]
/** `CDP_SYNC_BENCH_NBD_ONLY=a,c` runs only those setups (the ratios need all four). */
const ONLY = process.env.CDP_SYNC_BENCH_NBD_ONLY?.split(",")
const SETUPS = ALL_SETUPS.filter(([s]) => ONLY === undefined || ONLY.includes(s))
/** `CDP_SYNC_BENCH_NBD_PROFILE=DIR`: serve under `node --cpu-prof` into DIR. */
const PROFILE = process.env.CDP_SYNC_BENCH_NBD_PROFILE
/**
 * `CDP_SYNC_BENCH_NBD_TRANSPORT=tcp`: (b) on TCP at 127.0.0.1 instead of a unix socket. By
 * default every server is on a unix socket, so the four share a transport (before
 * session 11, (b) alone ran on loopback TCP).
 */
const TRANSPORT = process.env.CDP_SYNC_BENCH_NBD_TRANSPORT === "tcp" ? "tcp" : "unix"
/** The kernel's clock ticks per second (/proc/PID/stat counts CPU time in them). */
const CLK_TCK = 100

/** The pid of the node process whose command line holds every one of `words`. */
const pidOf = (words: ReadonlyArray<string>): number | undefined => {
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0")
      if (words.every((w) => argv.includes(w))) return Number(entry)
    } catch {
      // gone meanwhile
    }
  }
  return undefined
}

/** User and system CPU seconds of `pid` so far (fields 14 and 15 of /proc/PID/stat). */
const cpuSeconds = (pid: number | undefined): number => {
  if (pid === undefined) return Number.NaN
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
  } catch {
    return Number.NaN
  }
}

interface Workload {
  readonly name: string
  readonly fio: ReadonlyArray<string>
}
const ALL_WORKLOADS: ReadonlyArray<Workload> = [
  { name: "4 KiB random writes, iodepth 16", fio: ["--rw=randwrite", "--bs=4k", "--iodepth=16"] },
  { name: "64 KiB sequential writes, iodepth 4", fio: ["--rw=write", "--bs=64k", "--iodepth=4"] }
]
/** `CDP_SYNC_BENCH_NBD_WORKLOAD=4k` (or `64k`) runs only that workload. */
const WORKLOAD = process.env.CDP_SYNC_BENCH_NBD_WORKLOAD
const WORKLOADS = ALL_WORKLOADS.filter((w) => WORKLOAD === undefined || w.fio.includes(`--bs=${WORKLOAD}`))
/** `CDP_SYNC_BENCH_NBD_SERVE_ARGS="--congestion-limit 8MiB"`: more options for (b)'s `serve`. */
const SERVE_ARGS = process.env.CDP_SYNC_BENCH_NBD_SERVE_ARGS?.split(" ").filter((a) => a !== "") ?? []

/**
 * What serve's log says the stream did during a run: its resync activations (by reason),
 * link losses and returns to sync, counted from its stderr (the decision loop logs each).
 */
export const streamEvents = (stderr: string): string => {
  const counts = new Map<string, number>()
  for (const m of stderr.matchAll(
    /resync activated: epoch \d+, reason ([\w-]+)|link lost: ([\w-]+)|(sync resumed)/g
  )) {
    const key =
      m[1] !== undefined ? `resync(${m[1]})` : m[2] !== undefined ? `link-lost(${m[2]})` : "sync-resumed"
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  // A pull-ahead's line says where the unacked bytes were (the first one is enough).
  const why = /reason congestion \(([^)]*)\)/.exec(stderr)?.[1]
  return counts.size === 0
    ? "stayed in sync"
    : [...counts].map(([k, n]) => `${k} ×${n}`).join(", ") +
        (why === undefined ? "" : `; first pull-ahead: ${why}`)
}

interface Figures {
  readonly iops: number
  readonly mbps: number
  readonly meanUs: number
  readonly p99Us: number
  /** Replication lag: (b) records unacked at the receiver; (d) bytes the mirror has yet to copy. */
  readonly lag?: string
  /** (b): what the stream did (`streamEvents`). */
  readonly stream?: string
  /** (b): CPU µs per write of `serve` and of the receiver. */
  readonly serveCpuUs?: number
  readonly receiverCpuUs?: number
}

interface FioLatency {
  readonly mean: number
  readonly percentile?: Record<string, number>
}
interface FioJson {
  readonly jobs: ReadonlyArray<{
    readonly error: number
    readonly write: { readonly iops: number; readonly bw_bytes: number; readonly clat_ns: FioLatency }
  }>
}

const fio = async (uri: string, workload: Workload): Promise<Figures> => {
  const r = await Nbd.mustRun(
    find("fio")!,
    [
      "--name=bench",
      "--ioengine=nbd",
      `--uri=${uri}`,
      ...workload.fio,
      `--size=${IMAGE_BYTES}`,
      "--time_based",
      `--runtime=${SECONDS}`,
      "--ramp_time=1",
      "--randrepeat=0",
      "--norandommap",
      "--output-format=json"
    ],
    { timeoutMs: (SECONDS + 60) * 1000 }
  )
  const job = Nbd.fioJson<FioJson>(r.stdout).jobs[0]!
  if (job.error !== 0) throw new Error(`fio error ${job.error}`)
  const w = job.write
  return {
    iops: w.iops,
    mbps: w.bw_bytes / 1e6,
    meanUs: w.clat_ns.mean / 1000,
    p99Us: (w.clat_ns.percentile?.["99.000000"] ?? Number.NaN) / 1000
  }
}

/** Samples `probe` every 250 ms while `body` runs; returns body's result and the samples. */
const sampling = async <A>(probe: () => Promise<number | undefined>, body: () => Promise<A>) => {
  const samples: Array<number> = []
  let on = true
  const loop = (async () => {
    while (on) {
      await new Promise((r) => setTimeout(r, 250))
      const v = await probe().catch(() => undefined)
      if (v !== undefined && on) samples.push(v)
    }
  })()
  try {
    return { result: await body(), samples }
  } finally {
    on = false
    await loop
  }
}

const summary = (samples: ReadonlyArray<number>, unit: (n: number) => string) => {
  if (samples.length === 0) return "n/a"
  const sorted = [...samples].sort((x, y) => x - y)
  return `median ${unit(sorted[Math.floor(sorted.length / 2)]!)}, max ${unit(sorted.at(-1)!)}`
}

/** The last seq the receiver holds (durable or about to be: the log as `points` reads it). */
const receiverLastSeq = async (receiverDir: string): Promise<number> => {
  const [disk] = await listDisks(receiverDir)
  if (disk === undefined) return 0
  return (await openChain(disk.diskDir, disk.meta, "read")).lastSeq
}

const runSetup = async (setup: Setup, workload: Workload): Promise<Figures> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-bench-nbd-"))
  try {
    if (setup === "a") {
      const exp = await Nbd.serve({ size: IMAGE_BYTES, dir }, "qemu-nbd")
      try {
        return await fio(exp.uri, workload)
      } finally {
        await exp.dispose()
      }
    }
    if (setup === "b") {
      const exp = await Nbd.serve(
        {
          size: IMAGE_BYTES,
          dir,
          unixSocket: TRANSPORT === "unix",
          serveArgs: SERVE_ARGS,
          ...(PROFILE === undefined
            ? {}
            : {
                nodeArgs: [
                  "--cpu-prof",
                  `--cpu-prof-dir=${path.resolve(PROFILE)}`,
                  `--cpu-prof-name=${profileName(workload)}`
                ]
              })
        },
        "cdp-sync"
      )
      const servePid = pidOf(["serve", exp.image])
      const receiverPid = pidOf([exp.receiverDir])
      try {
        const cpu0 = [cpuSeconds(servePid), cpuSeconds(receiverPid)]
        const result = await fio(exp.uri, workload)
        const cpu1 = [cpuSeconds(servePid), cpuSeconds(receiverPid)]
        // fio's IOPS leave out the ramp second; the CPU time has it.
        const writes = result.iops * (SECONDS + 1)
        const perWrite = (i: number) => ((cpu1[i]! - cpu0[i]!) / writes) * 1e6
        // The lag at the end of the run: what the receiver took after fio's last write,
        // and how long it took (its last seq stops moving). Not sampled during the run:
        // reading the log's active segment would take CPU from the servers.
        const t = performance.now()
        const atEnd = await receiverLastSeq(exp.receiverDir)
        let last = atEnd
        let lastChange = t
        while (performance.now() - lastChange < 1000) {
          await new Promise((r) => setTimeout(r, 100))
          const seq = await receiverLastSeq(exp.receiverDir)
          if (seq !== last) {
            last = seq
            lastChange = performance.now()
          }
        }
        return {
          ...result,
          lag: `${last - atEnd} records behind at the end, caught up ${((lastChange - t) / 1000).toFixed(1)} s after`,
          stream: streamEvents(exp.stderr()),
          serveCpuUs: perWrite(0),
          receiverCpuUs: perWrite(1)
        }
      } finally {
        // A profile is written at a clean exit only (dispose SIGKILLs).
        if (PROFILE !== undefined) await exp.stop()
        await exp.dispose()
      }
    }
    const image = path.join(dir, "disk.img")
    const target = path.join(dir, "target.img")
    for (const f of [image, target]) {
      fs.writeFileSync(f, "")
      fs.truncateSync(f, IMAGE_BYTES)
    }
    const mirror = await QemuMirror.start({
      dir,
      image,
      target,
      mode: setup === "c" ? "write-blocking" : "background",
      qemuNbd: find("qemu-nbd")!,
      qsd: find("qemu-storage-daemon")!
    })
    try {
      const behind = async () => {
        const p = await mirror.jobProgress()
        return p === undefined ? undefined : p.len - p.offset
      }
      const { result, samples } = await sampling(behind, () => fio(mirror.uri, workload))
      return { ...result, lag: `${summary(samples, (n) => `${(n / MiB).toFixed(1)} MiB`)} to copy` }
    } finally {
      await mirror.close()
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

let profiled = 0
/** serve-4k-N.cpuprofile: the Nth profiled run's. */
const profileName = (workload: Workload) =>
  `serve-${workload.fio.includes("--bs=4k") ? "4k" : "64k"}-${++profiled}.cpuprofile`

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((x, y) => x - y)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

const cell = (xs: ReadonlyArray<number>, digits: number) =>
  xs.length === 1
    ? median(xs).toFixed(digits)
    : `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`

const cpuLine = (rs: ReadonlyArray<Figures>) => {
  const serve = rs.map((r) => r.serveCpuUs ?? Number.NaN).filter((x) => !Number.isNaN(x))
  const receiver = rs.map((r) => r.receiverCpuUs ?? Number.NaN).filter((x) => !Number.isNaN(x))
  if (serve.length === 0) return []
  return [
    `(b) CPU per write: serve ${cell(serve, 0)} µs, receiver ${receiver.length === 0 ? "n/a" : cell(receiver, 0)} µs`
  ]
}

const renderFourWay = (workload: string, results: Map<Setup, Array<Figures>>) => {
  const header = ["server", "IOPS", "MB/s", "mean µs", "p99 µs", "replication lag"]
  const body = SETUPS.map(([s, name]) => {
    const rs = results.get(s) ?? []
    return [
      name,
      cell(
        rs.map((r) => r.iops),
        0
      ),
      cell(
        rs.map((r) => r.mbps),
        1
      ),
      cell(
        rs.map((r) => r.meanUs),
        0
      ),
      cell(
        rs.map((r) => r.p99Us),
        0
      ),
      s === "a" ? "none (no replica)" : s === "c" ? "0 (synchronous)" : (rs.at(-1)?.lag ?? "")
    ]
  })
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")
  return [
    `\nNBD, fio ${workload}, ${SECONDS} s, ${IMAGE_BYTES / MiB} MiB image, ${ROUNDS} round(s) (median, min–max), (b) on ${TRANSPORT === "unix" ? "a unix socket" : "TCP"}`,
    line(header),
    widths.map((w) => "-".repeat(w)).join("-|-"),
    ...body.map(line),
    ...cpuLine(results.get("b") ?? [])
  ].join("\n")
}

const TOOLS: ReadonlyArray<Tool> = ["fio", "qemu-nbd", "qemu-storage-daemon"]

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const why = missing(TOOLS)
  if (why !== undefined) {
    console.log(`\nNBD bench not run: ${why}`)
    return []
  }
  const rows: Array<BenchRow> = []
  for (const workload of WORKLOADS) {
    const results = new Map<Setup, Array<Figures>>()
    for (let round = 0; round < ROUNDS; round++)
      for (const [setup, name] of SETUPS) {
        process.stderr.write(`nbd: ${workload.name}, ${name}, round ${round + 1}/${ROUNDS}\n`)
        const figures = await runSetup(setup, workload)
        results.set(setup, [...(results.get(setup) ?? []), figures])
        if (figures.stream !== undefined)
          process.stderr.write(
            `nbd: (b) ${figures.iops.toFixed(0)} IOPS, p99 ${(figures.p99Us / 1000).toFixed(1)} ms, serve ${figures.serveCpuUs?.toFixed(0)} µs/write, receiver ${figures.receiverCpuUs?.toFixed(0)} µs/write; ${figures.lag}; stream: ${figures.stream}\n`
          )
      }
    console.log(renderFourWay(workload.name, results))
    if (SETUPS.length < ALL_SETUPS.length) continue
    const iops = (s: Setup) => median(results.get(s)!.map((r) => r.iops))
    const p99 = (s: Setup) => median(results.get(s)!.map((r) => r.p99Us))
    const small = workload.fio.includes("--bs=4k")
    const label = small ? "4 KiB randwrite" : "64 KiB seq write"
    const ratioRow = (s: Setup, baselineName: string, target?: BenchRow["target"]): BenchRow => ({
      name: `${label} IOPS: (b) / (${s})`,
      value: iops("b"),
      unit: "IOPS",
      baseline: iops(s),
      baselineName,
      higherIsBetter: true,
      ...(target === undefined ? {} : { target })
    })
    rows.push(
      ratioRow("a", "(a) qemu-nbd", small ? { ratio: 0.6, text: "b ≥ 0.6 × a" } : undefined),
      ratioRow("c", "(c) active mirror", small ? { ratio: 2, text: "b ≥ 2 × c" } : undefined),
      ratioRow("d", "(d) background mirror"),
      {
        name: `${label} p99 latency: (b) vs (a)`,
        value: p99("b"),
        unit: "µs",
        baseline: p99("a"),
        baselineName: "(a) qemu-nbd",
        higherIsBetter: false,
        ...(small ? { target: { ratio: 0.5, text: "p99 b ≤ 2 × a" } } : {})
      }
    )
  }
  return rows
}

/**
 * `npm run bench -- mount`: using a recovery point without materialising it first, and
 * materialising it through the block index, on a disk of `CDP_SYNC_BENCH_MOUNT_DISK`
 * (default 1 GiB) with `CDP_SYNC_BENCH_MOUNT_LOG` (default 4 GiB) of log: random 4–64 KiB
 * writes sent over TCP to a `cdp-sync receiver` process by a client speaking as the filter,
 * the receiver killed and restarted three times so the log holds resync passes
 * (bench/internal/mountDataset.ts; built once into a cache directory, reused by later runs). In `CDP_SYNC_BENCH_MOUNT_ROUNDS`
 * (default 3) interleaved rounds:
 * 1. time from spawning `cdp-sync mount --at latest --listen 127.0.0.1:0` to the first
 *    4 KiB read at a random offset (the library's NBD client), beside `qemu-nbd --read-only`
 *    on the restored image; also with `--at` a relative time (a point in the middle of the
 *    log) and while a receiver process ingests into a copy of the directory (`ingest.mjs`,
 *    `CDP_SYNC_BENCH_MOUNT_INGEST_RATE` bytes/s, default 32 MiB) and the mount reads the
 *    disk it ingests. Target: ≤ 1 s.
 * 2. `cdp-sync restore --at latest` (through the block index) beside `cp --sparse=always` of
 *    the restored image followed by an fsync of the copy (restore fsyncs too), target ≥ 0.5×,
 *    and beside the record-by-record restore (the replay oracle, `replayRestore.mjs`).
 * 3. fio's random 4 KiB reads (nbd engine, iodepth 16, `CDP_SYNC_BENCH_MOUNT_SECONDS`,
 *    default 15) through the mount beside `qemu-nbd --read-only` on the restored image:
 *    IOPS (target ≥ 0.5×) and p99.
 * Every row starts cold: the files it reads (the receiver directory, the image) are dropped
 * from the page cache before it (`evict`: POSIX_FADV_DONTNEED per file, no root needed).
 * Quick pass: `CDP_SYNC_BENCH_MOUNT_DISK=256MiB CDP_SYNC_BENCH_MOUNT_LOG=1GiB
 * CDP_SYNC_BENCH_MOUNT_ROUNDS=1 CDP_SYNC_BENCH_MOUNT_SECONDS=5`; one section only:
 * `CDP_SYNC_BENCH_MOUNT_SECTIONS=restore` (or `first-byte`, `fio`, comma-separated); some rows
 * only: `CDP_SYNC_BENCH_MOUNT_ROWS=latest,busy` (first byte: `qemu`, `latest`, `time`, `busy`);
 * `CDP_SYNC_BENCH_MOUNT_RESTORE_ROWS=index,cp` (restore: `index`, `cp`, `replay`).
 * `CDP_SYNC_RESTORE_THREADS=N` (passed on to `cdp-sync restore`): the threads making the log's
 * part of the restore (default 3, 0: the main thread; docs/performance.md, "Session 13: restore").
 * `CDP_SYNC_BENCH_MOUNT_PROFILE=DIR`: every `cdp-sync mount` (first byte and fio) runs under `node --cpu-prof`,
 * its profile written into DIR (named by row and round) for bench/internal/profile.mjs.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import * as Nbd from "../dist/nbd/Nbd.js"
import { find, missing, type Tool } from "../test/support/tools.js"
import { CLI, evict, runChild, spawnReady } from "./internal/children.js"
import {
  type Dataset,
  DISK_ID,
  dataset,
  fingerprint,
  formatSize,
  parseSize,
  scratchCopy
} from "./internal/mountDataset.js"
import type { BenchRow } from "./table.js"

const MB = 1e6
const DISK = parseSize(process.env.CDP_SYNC_BENCH_MOUNT_DISK ?? "1GiB")
const LOG = parseSize(process.env.CDP_SYNC_BENCH_MOUNT_LOG ?? "4GiB")
const ROUNDS = Math.max(1, Number(process.env.CDP_SYNC_BENCH_MOUNT_ROUNDS ?? 3))
const SECONDS = Number(process.env.CDP_SYNC_BENCH_MOUNT_SECONDS ?? 15)
const INGEST_RATE = parseSize(process.env.CDP_SYNC_BENCH_MOUNT_INGEST_RATE ?? "32MiB")
/** The sections run (`first-byte`, `restore`, `fio`, comma-separated; default all). */
const SECTIONS = new Set((process.env.CDP_SYNC_BENCH_MOUNT_SECTIONS ?? "first-byte,restore,fio").split(","))
const INTERNAL = path.join(import.meta.dirname, "internal")
/** The first-byte rows run (`qemu`, `latest`, `time`, `busy`; default all). */
const ROWS = new Set((process.env.CDP_SYNC_BENCH_MOUNT_ROWS ?? "qemu,latest,time,busy").split(","))
/** Where `cdp-sync mount`'s CPU profiles go, when set. */
/** The restore section's rows (`index`, `cp`, `replay`, comma-separated; default all). */
const RESTORE_ROWS = new Set((process.env.CDP_SYNC_BENCH_MOUNT_RESTORE_ROWS ?? "index,cp,replay").split(","))
const PROFILE = process.env.CDP_SYNC_BENCH_MOUNT_PROFILE

const say = (text: string) => process.stderr.write(`mount bench: ${text}\n`)

// ---------------------------------------------------------------------------------------------
// NBD servers: `cdp-sync mount` and `qemu-nbd`, each started, read once, stopped.

interface Server {
  readonly host: string
  readonly port: number
  readonly exportName: string
  stop(): Promise<void>
  /** CPU time the server's process has used so far (user + system), where the system says (Linux's /proc). */
  cpuMs?(): number | undefined
}

/** Clock ticks a second, for /proc/PID/stat's times (`getconf CLK_TCK`; 100 almost everywhere). */
let ticksPerSecond: number | undefined
const cpuMsOf = (pid: number | undefined): number | undefined => {
  if (pid === undefined || !fs.existsSync(`/proc/${pid}/stat`)) return undefined
  ticksPerSecond ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100
  // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond
}

/** `cdp-sync mount` of the dataset's disk at `at`; ready when it prints its `listening` line. */
const startMount = async (receiverDir: string, at: string, profileName?: string): Promise<Server> => {
  const profiling =
    PROFILE === undefined || profileName === undefined
      ? []
      : ["--cpu-prof", `--cpu-prof-dir=${path.resolve(PROFILE)}`, `--cpu-prof-name=${profileName}.cpuprofile`]
  const child = await spawnReady(
    process.execPath,
    [
      ...profiling,
      CLI,
      "mount",
      "--dir",
      receiverDir,
      "--disk",
      DISK_ID,
      "--at",
      at,
      "--listen",
      "127.0.0.1:0"
    ],
    /^listening nbd:\/\/([^:/\s]+):(\d+)\/(\S*)$/m,
    { what: "cdp-sync mount", timeoutMs: 120_000 }
  )
  return {
    host: child.ready[1]!,
    port: Number(child.ready[2]),
    exportName: decodeURIComponent(child.ready[3]!),
    stop: async () => {
      await child.stop("SIGTERM")
    },
    cpuMs: () => cpuMsOf(child.child.pid)
  }
}

/** `qemu-nbd --read-only` on `image`; `--fork` returns once it serves. */
const startQemuNbd = async (image: string, scratch: string): Promise<Server> => {
  const port = await freePort()
  const pidFile = path.join(scratch, "qemu-nbd.pid")
  fs.rmSync(pidFile, { force: true })
  await runChild(find("qemu-nbd")!, [
    "--read-only",
    "--format=raw",
    "--persistent",
    "--shared=4",
    "--fork",
    `--pid-file=${pidFile}`,
    "--bind=127.0.0.1",
    `--port=${port}`,
    `--export-name=${DISK_ID}`,
    image
  ])
  const pid = Number(fs.readFileSync(pidFile, "utf8").trim())
  return {
    host: "127.0.0.1",
    port,
    exportName: DISK_ID,
    stop: async () => {
      try {
        process.kill(pid, "SIGTERM")
      } catch {
        return
      }
      for (let i = 0; i < 200; i++) {
        try {
          process.kill(pid, 0)
        } catch {
          return
        }
        await new Promise((r) => setTimeout(r, 50))
      }
      process.kill(pid, "SIGKILL")
    }
  }
}

const freePort = async (): Promise<number> => {
  const net = await import("node:net")
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

const readOnce = (server: Server, offset: number): Promise<Uint8Array> =>
  Effect.runPromise(
    Nbd.withClient(
      { connect: { host: server.host, port: server.port }, exportName: server.exportName },
      (c) => c.read(offset, 4096)
    )
  )

interface FirstByte {
  /** Spawn → the server's ready line (or qemu-nbd's parent exit). */
  readonly readyMs: number
  /** Spawn → the 4 KiB read answered. */
  readonly dataMs: number
  /**
   * CPU the server used until then (`cdp-sync mount` only): what the wall time would be on an
   * idle machine, less its reads and waits. The bench shares two cores with other jobs; this
   * moves less with their load than the wall time does.
   */
  readonly cpuMs: number | undefined
}

/** Times spawn → ready → first 4 KiB read at a random offset; `check` sees the bytes. */
const firstByte = async (
  start: () => Promise<Server>,
  check?: (offset: number, bytes: Uint8Array) => void
): Promise<FirstByte> => {
  const offset = 4096 * Math.floor(Math.random() * (DISK / 4096))
  const t0 = performance.now()
  const server = await start()
  const t1 = performance.now()
  try {
    const bytes = await readOnce(server, offset)
    const t2 = performance.now()
    const cpuMs = server.cpuMs?.()
    check?.(offset, bytes)
    return { readyMs: t1 - t0, dataMs: t2 - t0, cpuMs }
  } finally {
    await server.stop()
  }
}

/** The restored image's bytes must be what the mount returned at `--at latest`. */
const sameAsImage = (image: string) => (offset: number, bytes: Uint8Array) => {
  const fd = fs.openSync(image, "r")
  const expected = Buffer.alloc(4096)
  fs.readSync(fd, expected, 0, 4096, offset)
  fs.closeSync(fd)
  if (!expected.equals(Buffer.from(bytes)))
    throw new Error(`the mount's 4 KiB at ${offset} differ from the restored image's`)
}

// ---------------------------------------------------------------------------------------------
// fio: random 4 KiB reads

interface FioFigures {
  readonly iops: number
  readonly p99Us: number
  readonly meanUs: number
}

const fioRandRead = async (server: Server): Promise<FioFigures> => {
  const uri = `nbd://${server.host}:${server.port}/${encodeURIComponent(server.exportName)}`
  const r = await runChild(
    find("fio")!,
    [
      "--name=bench",
      "--ioengine=nbd",
      `--uri=${uri}`,
      "--rw=randread",
      "--bs=4k",
      "--iodepth=16",
      `--size=${DISK}`,
      "--time_based",
      `--runtime=${SECONDS}`,
      "--ramp_time=1",
      "--randrepeat=0",
      "--norandommap",
      "--output-format=json"
    ],
    { timeoutMs: (SECONDS + 120) * 1000 }
  )
  const job = JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))).jobs[0] as {
    error: number
    read: { iops: number; clat_ns: { mean: number; percentile?: Record<string, number> } }
  }
  if (job.error !== 0) throw new Error(`fio error ${job.error}`)
  return {
    iops: job.read.iops,
    meanUs: job.read.clat_ns.mean / 1000,
    p99Us: (job.read.clat_ns.percentile?.["99.000000"] ?? Number.NaN) / 1000
  }
}

// ---------------------------------------------------------------------------------------------
// Restore rows: each writes a 1 GiB image (fsynced) into the scratch directory, timed.

const timed = async (f: () => Promise<unknown>): Promise<number> => {
  const t = performance.now()
  await f()
  return performance.now() - t
}

const TICKS = 100
/**
 * CPU seconds (user + system) of this process's children waited for so far: the fields
 * cutime and cstime of /proc/self/stat (Linux; 0 elsewhere). The difference around a row is
 * what its processes spent, steadier than its time on a machine other work shares.
 */
const childCpu = (): number => {
  try {
    const stat = fs.readFileSync("/proc/self/stat", "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    // After the name: state is field 3, so cutime (16) and cstime (17) are at 13 and 14.
    return (Number(fields[13]) + Number(fields[14])) / TICKS
  } catch {
    return 0
  }
}

const mbps = (ms: number) => DISK / MB / (ms / 1000)

/** `cdp-sync restore --at latest` through the block index, as an operator runs it. */
const restoreIndexed = (data: Dataset, out: string) =>
  runChild(process.execPath, [
    CLI,
    "restore",
    "--dir",
    data.receiverDir,
    "--disk",
    DISK_ID,
    "--at",
    "latest",
    "--out",
    out
  ])

/** `cp --sparse=always` of the restored image, then an fsync of the copy (`sync FILE`). */
const copyImage = async (data: Dataset, out: string) => {
  await runChild("cp", ["--sparse=always", data.image, out])
  await runChild("sync", [out])
}

/** The record-by-record restore (the replay oracle) at the same point. */
const restoreByRecord = (data: Dataset, out: string) =>
  runChild(process.execPath, [
    path.join(INTERNAL, "replayRestore.mjs"),
    data.receiverDir,
    DISK_ID,
    String(data.latestSeq),
    out
  ])

// ---------------------------------------------------------------------------------------------
// A busy receiver: the receiver process on a copy of the directory, a client ingesting.

interface Busy {
  readonly receiverDir: string
  stop(): Promise<string>
}

const startBusy = async (data: Dataset, scratch: string): Promise<Busy> => {
  const dir = path.join(scratch, "busy")
  fs.rmSync(dir, { recursive: true, force: true })
  const receiverDir = scratchCopy(data, dir)
  const receiver = await spawnReady(
    process.execPath,
    [CLI, "receiver", "--dir", receiverDir, "--port", "0"],
    /^listening (\S+):(\d+)$/m,
    { what: "cdp-sync receiver" }
  )
  const blockSize = 64 * 1024
  const ingest = await spawnReady(
    process.execPath,
    [
      path.join(INTERNAL, "ingest.mjs"),
      receiver.ready[1]!,
      receiver.ready[2]!,
      DISK_ID,
      String(blockSize),
      String(DISK / blockSize),
      String(INGEST_RATE)
    ],
    /^ingesting from seq (\d+)$/m,
    { what: "ingest" }
  ).catch(async (e: unknown) => {
    await receiver.stop("SIGKILL")
    throw e
  })
  // Let the receiver take records for a moment: the mount starts amid its group commits.
  await new Promise((r) => setTimeout(r, 1000))
  return {
    receiverDir,
    stop: async () => {
      let said = ""
      ingest.child.stdout!.on("data", (s: string) => {
        said += s
      })
      await ingest.stop("SIGTERM")
      await receiver.stop("SIGTERM")
      fs.rmSync(dir, { recursive: true, force: true })
      const m = /ingested (\d+) bytes in (\d+) ms/.exec(said)
      return m === null ? "" : `${(Number(m[1]) / MB / (Number(m[2]) / 1000)).toFixed(0)} MB/s`
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Figures: medians over the rounds, with the spread.

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((x, y) => x - y)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

const cell = (xs: ReadonlyArray<number>, digits: number) =>
  xs.length === 0
    ? "n/a"
    : xs.length === 1
      ? median(xs).toFixed(digits)
      : `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`

const renderDetail = (
  title: string,
  header: ReadonlyArray<string>,
  body: ReadonlyArray<ReadonlyArray<string>>
) => {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")
  return [`\n${title}`, line(header), widths.map((w) => "-".repeat(w)).join("-|-"), ...body.map(line)].join(
    "\n"
  )
}

/** Collects a figure per row name over the rounds. */
class Samples<A> {
  private readonly byName = new Map<string, Array<A>>()
  add(name: string, value: A) {
    this.byName.set(name, [...(this.byName.get(name) ?? []), value])
  }
  get(name: string): ReadonlyArray<A> {
    return this.byName.get(name) ?? []
  }
}

const TOOLS: ReadonlyArray<Tool> = ["fio", "qemu-nbd"]

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const why = missing(TOOLS)
  if (why !== undefined) {
    console.log(`\nmount bench not run: ${why}`)
    return []
  }
  const data = await dataset(DISK, LOG)
  const before = fingerprint(data)
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-bench-mount-"))
  const cold = () => evict([data.receiverDir, data.image])
  try {
    console.log(
      `\nmount bench dataset: ${formatSize(DISK)} disk, ${formatSize(data.logBytes)} of log in ${data.segments} segments, ${data.points} recovery points, ${data.resyncs} resyncs; ${ROUNDS} round(s), every row cold (its files dropped from the page cache first)`
    )
    const rows: Array<BenchRow> = []
    if (SECTIONS.has("first-byte")) rows.push(...(await firstByteSection(data, scratch, cold)))
    if (SECTIONS.has("restore")) rows.push(...(await restoreSection(data, scratch, cold)))
    if (SECTIONS.has("fio")) rows.push(...(await fioSection(data, scratch, cold)))
    return rows
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true })
    if (fingerprint(data) !== before) {
      say("warning: the cached dataset changed during the run; it will be built again next time")
      fs.rmSync(path.join(data.dir, "dataset.json"), { force: true })
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The three sections, each its rows interleaved round by round.

const QEMU = "qemu-nbd --read-only (the restored image)"

const firstByteSection = async (
  data: Dataset,
  scratch: string,
  cold: () => Promise<void>
): Promise<ReadonlyArray<BenchRow>> => {
  // A relative time landing on a point in the middle of the log (after it, before the next).
  const ago = () => `-${Math.ceil((Date.now() - data.middleTime) / 1000)}s`
  const byTime = data.middleTime - data.firstTime > 1000
  const LATEST = "cdp-sync mount --at latest"
  const TIME = "cdp-sync mount --at -Ns (a point mid-log)"
  const BUSY = "cdp-sync mount --at latest, receiver ingesting"
  const ingested: Array<string> = []
  let round = 0
  const setups: ReadonlyArray<readonly [string, () => Promise<FirstByte>]> = (
    [
      ["qemu", QEMU, () => firstByte(() => startQemuNbd(data.image, scratch), sameAsImage(data.image))],
      [
        "latest",
        LATEST,
        () =>
          firstByte(() => startMount(data.receiverDir, "latest", `latest-${round}`), sameAsImage(data.image))
      ],
      ...(byTime
        ? [
            [
              "time",
              TIME,
              () => firstByte(() => startMount(data.receiverDir, ago(), `time-${round}`))
            ] as const
          ]
        : []),
      [
        "busy",
        BUSY,
        async () => {
          const busy = await startBusy(data, scratch)
          try {
            await evict([busy.receiverDir])
            return await firstByte(() => startMount(busy.receiverDir, "latest", `busy-${round}`))
          } finally {
            ingested.push(await busy.stop())
          }
        }
      ]
    ] as ReadonlyArray<readonly [string, string, () => Promise<FirstByte>]>
  ).flatMap(([key, name, measure]) => (ROWS.has(key) ? [[name, measure] as const] : []))
  if (!byTime) say("the log spans too short a time for a mount by time: that row is left out")
  const samples = new Samples<FirstByte>()
  for (round = 0; round < ROUNDS; round++)
    for (const [name, measure] of setups) {
      say(`first byte: ${name}, round ${round + 1}/${ROUNDS}`)
      await cold()
      samples.add(name, await measure())
    }
  const ms = (name: string) => median(samples.get(name).map((s) => s.dataMs))
  console.log(
    renderDetail(
      `spawn → listening → first 4 KiB read at a random offset, ms (median, min–max over ${ROUNDS} round(s)); the mount's CPU until that read; load average ${os.loadavg()[0]!.toFixed(1)} at the end`,
      ["server", "ready (listening)", "first 4 KiB read", "CPU until then"],
      setups.map(([name]) => [
        name === BUSY ? `${name} (${ingested.filter((s) => s !== "").join(", ") || "?"})` : name,
        cell(
          samples.get(name).map((s) => s.readyMs),
          0
        ),
        cell(
          samples.get(name).map((s) => s.dataMs),
          0
        ),
        cell(
          samples.get(name).flatMap((s) => (s.cpuMs === undefined ? [] : [s.cpuMs])),
          0
        )
      ])
    )
  )
  return setups
    .filter(([name]) => name !== QEMU)
    .map(
      ([name]): BenchRow => ({
        name: `${name}: spawn → first 4 KiB read`,
        value: ms(name),
        unit: "ms",
        ...(samples.get(QEMU).length > 0 ? { baseline: ms(QEMU) } : {}),
        baselineName: "qemu-nbd on the restored image",
        higherIsBetter: false,
        target: { max: 1000, text: "≤ 1 s" }
      })
    )
}

const restoreSection = async (
  data: Dataset,
  scratch: string,
  cold: () => Promise<void>
): Promise<ReadonlyArray<BenchRow>> => {
  const INDEX = "cdp-sync restore --at latest (block index)"
  const CP = "cp --sparse=always + fsync of the copy"
  const REPLAY = "record-by-record restore (replay)"
  const setups: ReadonlyArray<readonly [string, (out: string) => Promise<unknown>, boolean]> = (
    [
      ["index", INDEX, (out: string) => restoreIndexed(data, out), true],
      ["cp", CP, (out: string) => copyImage(data, out), false],
      ["replay", REPLAY, (out: string) => restoreByRecord(data, out), true]
    ] as const
  )
    .filter(([key]) => RESTORE_ROWS.has(key))
    .map(([, name, write, check]) => [name, write, check] as const)
  const samples = new Samples<number>()
  const cpu = new Samples<number>()
  const loads = new Samples<number>()
  for (let round = 0; round < ROUNDS; round++)
    for (const [name, write, check] of setups) {
      say(`restore: ${name}, round ${round + 1}/${ROUNDS}`)
      const out = path.join(scratch, "out.img")
      fs.rmSync(out, { force: true })
      await cold()
      loads.add(name, os.loadavg()[0]!)
      const before = childCpu()
      samples.add(name, await timed(() => write(out)))
      cpu.add(name, childCpu() - before)
      // Once: the restored image is the one the other rows read.
      if (check && round === 0) await runChild("cmp", ["-s", out, data.image])
      fs.rmSync(out, { force: true })
    }
  const rate = (name: string) => median(samples.get(name).map(mbps))
  console.log(
    renderDetail(
      `writing the ${formatSize(DISK)} image at the latest point, fsynced (median, min–max over ${ROUNDS} round(s); CPU: user + system of its processes; load: the 1-minute load average as it started, on ${os.cpus().length} CPUs)`,
      ["how", "seconds", "MB/s", "CPU s", "load"],
      setups.map(([name]) => [
        name,
        cell(
          samples.get(name).map((ms) => ms / 1000),
          2
        ),
        cell(samples.get(name).map(mbps), 0),
        cell(cpu.get(name), 2),
        cell(loads.get(name), 1)
      ])
    )
  )
  const ran = (...names: ReadonlyArray<string>) => names.every((n) => samples.get(n).length > 0)
  const rows: Array<BenchRow & { readonly needs: ReadonlyArray<string> }> = [
    {
      needs: [INDEX, CP],
      name: "restore --at latest through the block index",
      value: rate(INDEX),
      unit: "MB/s",
      baseline: rate(CP),
      baselineName: "cp --sparse=always of the image + fsync",
      higherIsBetter: true,
      target: { ratio: 0.5, text: "≥ 0.5 × cp" }
    },
    {
      needs: [REPLAY, CP],
      name: "record-by-record restore",
      value: rate(REPLAY),
      unit: "MB/s",
      baseline: rate(CP),
      baselineName: "cp --sparse=always of the image + fsync",
      higherIsBetter: true
    },
    {
      needs: [INDEX, REPLAY],
      name: "restore through the block index over record-by-record",
      value: rate(INDEX),
      unit: "MB/s",
      baseline: rate(REPLAY),
      baselineName: "record-by-record restore",
      higherIsBetter: true
    }
  ]
  // Rows whose two sides ran (CDP_SYNC_BENCH_MOUNT_RESTORE_ROWS may leave some out).
  return rows.filter((row) => ran(...row.needs)).map(({ needs: _, ...row }) => row)
}

const fioSection = async (
  data: Dataset,
  scratch: string,
  cold: () => Promise<void>
): Promise<ReadonlyArray<BenchRow>> => {
  const MOUNT = "cdp-sync mount --at latest"
  let round = 0
  const setups: ReadonlyArray<readonly [string, () => Promise<Server>]> = [
    [QEMU, () => startQemuNbd(data.image, scratch)],
    [MOUNT, () => startMount(data.receiverDir, "latest", `fio-${round}`)]
  ]
  const samples = new Samples<FioFigures>()
  for (round = 0; round < ROUNDS; round++)
    for (const [name, start] of setups) {
      say(`fio random 4 KiB reads: ${name}, round ${round + 1}/${ROUNDS}`)
      await cold()
      const server = await start()
      try {
        samples.add(name, await fioRandRead(server))
      } finally {
        await server.stop()
      }
    }
  const iops = (name: string) => median(samples.get(name).map((s) => s.iops))
  const p99 = (name: string) => median(samples.get(name).map((s) => s.p99Us))
  console.log(
    renderDetail(
      `fio random 4 KiB reads, nbd engine, iodepth 16, ${SECONDS} s (median, min–max over ${ROUNDS} round(s))`,
      ["server", "IOPS", "mean µs", "p99 µs"],
      setups.map(([name]) => {
        const rs = samples.get(name)
        return [
          name,
          cell(
            rs.map((r) => r.iops),
            0
          ),
          cell(
            rs.map((r) => r.meanUs),
            0
          ),
          cell(
            rs.map((r) => r.p99Us),
            0
          )
        ]
      })
    )
  )
  return [
    {
      name: "random 4 KiB reads through the mount",
      value: iops(MOUNT),
      unit: "IOPS",
      baseline: iops(QEMU),
      baselineName: "qemu-nbd on the restored image",
      higherIsBetter: true,
      target: { ratio: 0.5, text: "≥ 0.5 × qemu-nbd" }
    },
    {
      name: "p99 latency of random 4 KiB reads through the mount",
      value: p99(MOUNT),
      unit: "µs",
      baseline: p99(QEMU),
      baselineName: "qemu-nbd on the restored image",
      higherIsBetter: false
    }
  ]
}

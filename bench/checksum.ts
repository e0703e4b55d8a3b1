/**
 * Checksum-based resync and online verify (issue 18), with the real programs: the log
 * receiver and `cdp-sync replicate` as child processes on loopback, a 1 GiB disk image
 * in 64 KiB tracking blocks.
 *
 * Setup (once): the image is filled with random bytes and replicated whole (a full sync:
 * a fresh journal on an image that holds data). Each round then makes every block owed
 * the way it happens to users: `serve` (idle) takes a guest write and is SIGKILLed — an
 * unclean stop, so the next start resyncs what the activity log holds, here one extent
 * the size of the disk — and 1 % of the blocks change on the disk meanwhile (writes the
 * filter never saw). The next start (`replicate --quiesce`, which exits once the replica
 * is whole) is timed from spawn to exit:
 * - a full resync (no `--compare-from`): every block is read and sent;
 * - a checksum resync (`--compare-from 1`): every block is compared, only those that
 *   differ are sent, with the default digest (BLAKE3);
 * - the same with `--digest sha256`, for the record (session 13: the digest's algorithm).
 * Bytes sent are what the receiver's log grew by. Rows: bytes and time of the checksum
 * resync against the full resync's (targets ≤ 5 % of the bytes, ≤ 0.3× the time), the
 * rounds interleaved (full, checksum, checksum-sha256, full, …) and the medians compared. Both run with a
 * window of 1024 blocks (the replicator bench's), so requests of 1024 blocks hide the
 * round trips.
 *
 * Online verify of the identical replica (`cdp-sync verify` against the running filter),
 * once with each digest (`serve --digest`), beside hashing the image alone with THE SAME
 * algorithm (`crypto.hash` SHA-256 or `blake3` of every block, the verify's own unavoidable
 * work on one side), alternated round by round: target ≥ 0.5× its rate.
 *
 * `CDP_SYNC_BENCH_PROFILE=DIR` runs the receiver, each timed `replicate` and the verifying
 * `serve` with `--cpu-prof` into DIR (receiver.cpuprofile, full-N / checksum-N, verify),
 * for bench/internal/profile.mjs. Each run also says on stderr the CPU seconds (user +
 * system, every thread) of the filter (`/usr/bin/time`) and of the receiver (/proc/PID/stat),
 * and verify the filter's own seconds beside the command's; a checksum resync that sends more
 * than 5 % of the disk has its `replicate`'s stderr printed (docs/performance.md, "The
 * checksum group").
 */
import type { ChildProcess } from "node:child_process"
import { hash, randomBytes } from "node:crypto"
import { blake3 } from "@napi-rs/blake-hash"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { CLI, runChild, spawnReady } from "./internal/children.js"
import { Effect } from "effect"
import * as Control from "../dist/internal/control.js"
import type { FilterDisk } from "../dist/internal/controlProtocol.js"
import { type BenchRow, overRounds } from "./table.js"

const MiB = 1024 * 1024
const DISK_BYTES = Number(process.env.CDP_SYNC_BENCH_CHECKSUM_DISK ?? 1024 * MiB)
const BLOCK = 64 * 1024
const ROUNDS = Number(process.env.CDP_SYNC_BENCH_CHECKSUM_ROUNDS ?? 3)
const DIFFER = 0.01
const PROFILE = process.env.CDP_SYNC_BENCH_PROFILE
/**
 * `CDP_SYNC_BENCH_CHECKSUM_SECTIONS`: `resync`, `verify` or both (comma-separated; default
 * both): `verify` alone skips the timed resyncs (the setup's first full sync still runs).
 */
const SECTIONS = (process.env.CDP_SYNC_BENCH_CHECKSUM_SECTIONS ?? "resync,verify").split(",")
/**
 * `CDP_SYNC_BENCH_CHECKSUM_DIGESTS`: the digests measured, `blake3`, `sha256` or both
 * (comma-separated; default both): the checksum resyncs' (`--digest`) and verify's rows.
 */
const DIGESTS = (process.env.CDP_SYNC_BENCH_CHECKSUM_DIGESTS ?? "blake3,sha256").split(",")
for (const name of SECTIONS)
  if (name !== "resync" && name !== "verify") throw new Error(`CDP_SYNC_BENCH_CHECKSUM_SECTIONS: ${name}?`)
for (const name of DIGESTS)
  if (name !== "blake3" && name !== "sha256") throw new Error(`CDP_SYNC_BENCH_CHECKSUM_DIGESTS: ${name}?`)
/** Node's options for a child: `--cpu-prof` into PROFILE as `name` when profiling. */
const profiled = (name: string): Array<string> =>
  PROFILE === undefined
    ? []
    : ["--cpu-prof", "--cpu-prof-dir", PROFILE, "--cpu-prof-name", `${name}.cpuprofile`]

const say = (line: string) => process.stderr.write(`  checksum: ${line}\n`)
const spread = (xs: ReadonlyArray<number>, digits = 2) =>
  `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`

const bytesUnder = (dir: string): number =>
  fs
    .readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((d) => d.isFile())
    .reduce((n, d) => n + fs.statSync(path.join(d.parentPath, d.name)).size, 0)

interface Setup {
  readonly image: string
  readonly journal: string
  readonly receiverDir: string
  readonly receiver: Awaited<ReturnType<typeof spawnReady>>
  readonly address: string
}

/** The filter's settings, the same on every start (the journal records them). */
const filterArgs = (s: Setup) => [
  "--disk",
  s.image,
  "--block-size",
  String(BLOCK),
  "--receiver",
  s.address,
  "--journal",
  s.journal,
  "--window",
  "1024",
  "--activity-extents",
  "1",
  "--activity-extent-size",
  String(DISK_BYTES)
]

/** CPU seconds (user + system, every thread) a live process has used so far: /proc/PID/stat. */
const cpuOf = (pid: number | undefined): number => {
  if (pid === undefined || !fs.existsSync(`/proc/${pid}/stat`)) return Number.NaN
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (USER_HZ 100)
}
const TIME = fs.existsSync("/usr/bin/time") ? "/usr/bin/time" : undefined

/** `replicate … --quiesce` to its exit: the CPU seconds it used (user + system; NaN without /usr/bin/time). */
/** The end of the last `replicate`'s stderr (said when a checksum resync sends more than it should). */
let lastStderr = ""

const replicate = async (s: Setup, extra: ReadonlyArray<string>, profile?: string): Promise<number> => {
  const args = [
    ...(profile === undefined ? [] : profiled(profile)),
    CLI,
    "replicate",
    ...filterArgs(s),
    "--quiesce",
    ...extra
  ]
  if (TIME === undefined) {
    lastStderr = (await runChild(process.execPath, args, { timeoutMs: 1_200_000 })).stderr
    return Number.NaN
  }
  const out = `${s.journal}.cpu`
  lastStderr = (
    await runChild(TIME, ["-f", "%U %S", "-o", out, process.execPath, ...args], { timeoutMs: 1_200_000 })
  ).stderr
  const [user, system] = fs.readFileSync(out, "utf8").trim().split(/\s+/).slice(-2).map(Number)
  return user! + system!
}

/** Rewrites 1 % of the image's blocks, spread over the disk, with fresh random bytes. */
const changeBlocks = (image: string, round: number): number => {
  const fd = fs.openSync(image, "r+")
  const blocks = DISK_BYTES / BLOCK
  const every = Math.round(1 / DIFFER)
  let changed = 0
  for (let b = round % every; b < blocks; b += every) {
    fs.writeSync(fd, randomBytes(BLOCK), 0, BLOCK, b * BLOCK)
    changed++
  }
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  return changed
}

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-sync-bench-checksum-"))
  try {
    return await measure(dir)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const measure = async (dir: string): Promise<ReadonlyArray<BenchRow>> => {
  const image = path.join(dir, "disk.img")
  const receiverDir = path.join(dir, "receiver")
  fs.mkdirSync(receiverDir)
  say(`filling a ${DISK_BYTES / MiB} MiB image with random bytes`)
  const fd = fs.openSync(image, "w")
  for (let at = 0; at < DISK_BYTES; at += 16 * MiB) fs.writeSync(fd, randomBytes(16 * MiB), 0, 16 * MiB, at)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  const receiver = await spawnReady(
    process.execPath,
    [...profiled("receiver"), CLI, "receiver", "--dir", receiverDir, "--port", "0"],
    /^listening (\S+):(\d+)$/m,
    { what: "cdp-sync receiver" }
  )
  const s: Setup = {
    image,
    journal: path.join(dir, "journal"),
    receiverDir,
    receiver,
    address: `${receiver.ready[1]}:${receiver.ready[2]}`
  }
  try {
    say("replicating the image whole (the first full sync)")
    await replicate(s, [])
    const control = path.join(dir, "filter.sock")
    const KINDS = SECTIONS.includes("resync")
      ? (["full", "checksum", "checksum-sha256"] as const).filter(
          (kind) => kind === "full" || DIGESTS.includes(kind === "checksum" ? "blake3" : "sha256")
        )
      : []
    const times = {
      full: [] as Array<number>,
      checksum: [] as Array<number>,
      "checksum-sha256": [] as Array<number>
    }
    // CPU seconds of the filter (`replicate`) and of the receiver during each timed run.
    const cpu = {
      full: [] as Array<string>,
      checksum: [] as Array<string>,
      "checksum-sha256": [] as Array<string>
    }
    const sent = {
      full: [] as Array<number>,
      checksum: [] as Array<number>,
      "checksum-sha256": [] as Array<number>
    }
    for (let round = 0; round < ROUNDS; round++)
      for (const [k, kind] of KINDS.entries()) {
        await killedInSync(s, control)
        changeBlocks(image, round * KINDS.length + k)
        const before = bytesUnder(receiverDir)
        say(`${kind} resync, round ${round + 1}/${ROUNDS}`)
        const receiverBefore = cpuOf(receiver.child.pid)
        const start = performance.now()
        const filterCpu = await replicate(
          s,
          kind === "checksum"
            ? ["--compare-from", "1"]
            : kind === "checksum-sha256"
              ? ["--compare-from", "1", "--digest", "sha256"]
              : [],
          `${kind}-${round + 1}`
        )
        times[kind].push((performance.now() - start) / 1000)
        cpu[kind].push(
          `filter ${filterCpu.toFixed(2)} s + receiver ${(cpuOf(receiver.child.pid) - receiverBefore).toFixed(2)} s CPU in ${times[kind].at(-1)!.toFixed(2)} s`
        )
        sent[kind].push(bytesUnder(receiverDir) - before)
        if (kind !== "full" && sent[kind].at(-1)! > DISK_BYTES / 20)
          say(
            `the ${kind} resync sent ${(sent[kind].at(-1)! / MiB).toFixed(0)} MiB; its stderr ends:\n${lastStderr}`
          )
      }
    if (KINDS.length > 0)
      say(
        `full: ${spread(times.full)} s, ${spread(
          sent.full.map((b) => b / MiB),
          0
        )} MiB; checksum: ${spread(times.checksum)} s, ${spread(
          sent.checksum.map((b) => b / MiB),
          1
        )} MiB; checksum-sha256: ${spread(times["checksum-sha256"])} s`
      )
    for (const kind of KINDS) for (const line of cpu[kind]) say(`${kind}: ${line}`)
    const mib = (bytes: ReadonlyArray<number>) => bytes.map((b) => b / MiB)
    const resyncRows = (): Array<BenchRow> => [
      ...(sent.checksum.length === 0
        ? []
        : [
            overRounds(
              {
                name: `checksum resync (BLAKE3): bytes sent (1 % of the blocks differ; ${ROUNDS} rounds)`,
                unit: "MiB",
                baselineName: "full resync",
                higherIsBetter: false,
                target: { ratio: 20, text: "≤ 5 % of the full resync's bytes" }
              },
              mib(sent.checksum),
              mib(sent.full)
            )
          ]),
      ...(times.checksum.length === 0
        ? []
        : [
            overRounds(
              {
                name: "checksum resync (BLAKE3): time to the replica whole",
                unit: "s",
                baselineName: "full resync",
                higherIsBetter: false,
                target: { ratio: 1 / 0.3, text: "≤ 0.3× the full resync's time" }
              },
              times.checksum,
              times.full
            )
          ]),
      ...(times["checksum-sha256"].length === 0
        ? []
        : [
            overRounds(
              {
                name: "checksum resync (--digest sha256, for the record): time to the replica whole",
                unit: "s",
                baselineName: "full resync",
                higherIsBetter: false,
                target: { ratio: 1 / 0.3, text: "≤ 0.3× the full resync's time" }
              },
              times["checksum-sha256"],
              times.full
            )
          ])
    ]
    return [
      ...(KINDS.length === 0 ? [] : resyncRows()),
      ...(SECTIONS.includes("verify") ? await verifyRows(s, control) : [])
    ]
  } finally {
    await receiver.stop()
  }
}

/** `serve` with its control socket takes one guest write, reports the replica whole, and is SIGKILLed. */
const killedInSync = async (s: Setup, control: string): Promise<void> => {
  const serve = await spawnIdle(s, control)
  await runChild("qemu-io", ["-f", "raw", "-c", "write -P 9 0 4k", serve.nbd])
  await whole(control, serve.child)
  serve.child.kill("SIGKILL")
  await new Promise((resolve) => serve.child.once("exit", resolve))
}

/** `serve` (the filter, idle, with an NBD export and its control socket) once the replica is whole. */
const spawnIdle = async (
  s: Setup,
  control: string,
  profile?: string,
  extra: ReadonlyArray<string> = []
): Promise<{ child: ChildProcess; nbd: string }> => {
  fs.rmSync(control, { force: true })
  const served = await spawnReady(
    process.execPath,
    [
      ...(profile === undefined ? [] : profiled(profile)),
      CLI,
      "serve",
      ...filterArgs(s),
      "--control",
      control,
      "--listen",
      "127.0.0.1:0",
      "--export-name",
      "bench",
      ...extra
    ],
    /^listening (nbd:\/\/\S+)$/m,
    { what: "cdp-sync serve", timeoutMs: 600_000 }
  )
  await whole(control, served.child)
  return { child: served.child, nbd: served.ready[1]! }
}

/** Until the filter's status says sync, link up, nothing dirty or in flight. */
const whole = async (control: string, child: ChildProcess): Promise<void> => {
  const deadline = performance.now() + 1_200_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the filter exited ${child.exitCode}`)
    const disk = await filterStatus(control).catch(() => undefined)
    if (disk?.mode === "sync" && disk.link === "up" && disk.dirtyBlocks === 0 && disk.inFlight === 0) return
    if (performance.now() > deadline) throw new Error("the filter did not reach sync")
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The filter's status over its control socket (docs/operations.md, "Status"). */
const filterStatus = async (control: string) => {
  const reply = await Effect.runPromise(Control.request(control))
  if (!("status" in reply)) throw new Error(reply.error.message)
  return reply.status.disks[0] as FilterDisk | undefined
}

type Digest = "blake3" | "sha256"

/** Online verify of the identical replica (the filter running, idle) beside hashing the image alone, per digest. */
const verifyRows = async (s: Setup, control: string): Promise<ReadonlyArray<BenchRow>> => {
  const rows: Array<BenchRow> = []
  for (const digest of ["blake3", "sha256"] as const)
    if (DIGESTS.includes(digest)) rows.push(await verifyRow(s, control, digest))
  return rows
}

/** Verify with `serve --digest digest`, round by round beside hashing the image with the same algorithm. */
const verifyRow = async (s: Setup, control: string, digest: Digest): Promise<BenchRow> => {
  const receiverPid = s.receiver.child.pid
  const filter = (await spawnIdle(s, control, `verify-${digest}`, ["--digest", digest])).child
  try {
    const hashSeconds: Array<number> = []
    const verifySeconds: Array<number> = []
    for (let round = 0; round < ROUNDS; round++) {
      say(`verify (${digest}), round ${round + 1}/${ROUNDS}`)
      hashSeconds.push(hashImage(s.image, digest) / 1000)
      const before = { filter: cpuOf(filter.pid), receiver: cpuOf(receiverPid) }
      const start = performance.now()
      const { stdout } = await runChild(process.execPath, [CLI, "verify", "--control", control, "--json"], {
        timeoutMs: 1_200_000
      })
      verifySeconds.push((performance.now() - start) / 1000)
      const report = JSON.parse(stdout)
      say(
        `verify (${report.verify?.algorithm}): ${verifySeconds.at(-1)!.toFixed(2)} s (the filter's own ${Number(report.verify?.seconds).toFixed(2)} s), CPU filter ${(cpuOf(filter.pid) - before.filter).toFixed(2)} s + receiver ${(cpuOf(receiverPid) - before.receiver).toFixed(2)} s; hashing the image (${digest}) ${hashSeconds.at(-1)!.toFixed(2)} s`
      )
      if (report.verify?.differing !== 0)
        throw new Error(`verify of an identical replica found differences: ${stdout}`)
      if (report.verify?.algorithm !== digest)
        throw new Error(`verify asked ${report.verify?.algorithm}, not ${digest}: ${stdout}`)
    }
    const rate = (seconds: number) => DISK_BYTES / MiB / seconds
    return overRounds(
      {
        name: `online verify of an identical replica (${digest === "blake3" ? "BLAKE3, the default" : "--digest sha256"})`,
        unit: "MiB/s",
        baselineName: `${digest === "blake3" ? "BLAKE3" : "SHA-256"} of every block of the image`,
        higherIsBetter: true,
        target: { ratio: 0.5, text: "≥ 0.5× hashing the image with the same algorithm" }
      },
      verifySeconds.map(rate),
      hashSeconds.map(rate)
    )
  } finally {
    filter.kill("SIGTERM")
    await new Promise((resolve) => filter.once("exit", resolve))
  }
}

/** `digest` (one-shot `crypto.hash` SHA-256, or `blake3`) of every block of the image, read in 4 MiB chunks: milliseconds. */
const hashImage = (image: string, digest: Digest): number => {
  const fd = fs.openSync(image, "r")
  const chunk = Buffer.allocUnsafe(4 * MiB)
  const start = performance.now()
  for (let at = 0; at < DISK_BYTES; at += chunk.length) {
    const n = fs.readSync(fd, chunk, 0, chunk.length, at)
    for (let o = 0; o < n; o += BLOCK)
      if (digest === "blake3") blake3(chunk.subarray(o, o + BLOCK))
      else hash("sha256", chunk.subarray(o, o + BLOCK), "buffer")
  }
  fs.closeSync(fd)
  return performance.now() - start
}

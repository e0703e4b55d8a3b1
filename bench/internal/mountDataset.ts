/**
 * The mount bench's dataset: a receiver directory holding one disk ("bench") with a log of
 * random 4–64 KiB writes several times the disk's size, resync passes among them, and the
 * image restored at its latest point. Written over TCP into a `cdp-sync receiver` process by
 * a client speaking as the filter does (`logClient.ts`); three times the receiver is
 * SIGKILLed and restarted, and the client resyncs what it missed. Built once into a cache directory keyed by the format version and the sizes
 * (`CDP_SYNC_BENCH_MOUNT_CACHE`, default under the temp directory) and reused by later runs.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import * as Restore from "../../dist/receiver/Restore.js"
import { listDisks, openChain } from "../../dist/receiver/internal/chain.js"
import { Kind } from "../../dist/receiver/internal/format.js"
import { CLI, type Child, filesUnder, runChild, spawnReady } from "./children.js"
import { writeLog } from "./logClient.js"

const MiB = 1024 * 1024
/** Bump when the way the dataset is built changes: a new key, a new build. */
const FORMAT = 3
/** The filter's block size (the receiver's default geometry unit). */
export const BLOCK_SIZE = 64 * 1024
export const DISK_ID = "bench"

export interface Dataset {
  readonly dir: string
  /** The receiver directory (`cdp-sync --dir`). */
  readonly receiverDir: string
  /** The image restored at the latest point (dense; the baseline rows read it). */
  readonly image: string
  readonly diskBytes: number
  readonly logBytes: number
  readonly segments: number
  readonly points: number
  readonly resyncs: number
  /** Write records (the guest's writes) and block records (resync passes) in the log. */
  readonly writes: number
  readonly blocks: number
  readonly latestSeq: number
  /** Receive times of the first and last recovery points after the base (ms since the epoch). */
  readonly firstTime: number
  readonly lastTime: number
  /** The receive time of a recovery point in the middle of the log (for `--at` by time). */
  readonly middleTime: number
  readonly middleSeq: number
}

/** `256MiB`, `1GiB`, `4G`, a plain byte count. */
export const parseSize = (text: string): number => {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i.exec(text.trim())
  if (m === null) throw new Error(`not a size: ${text}`)
  const unit = { "": 1, k: 1024, m: MiB, g: 1024 * MiB, t: 1024 * 1024 * MiB }[m[2]!.toLowerCase()]!
  return Math.round(Number(m[1]) * unit)
}

export const formatSize = (n: number): string =>
  n % (1024 * MiB) === 0 ? `${n / (1024 * MiB)}GiB` : `${Math.round(n / MiB)}MiB`

const say = (text: string) => process.stderr.write(`mount bench: ${text}\n`)

/** Bytes of log (segment files) under a receiver directory. */
export const logBytesOf = (receiverDir: string): number => {
  let n = 0
  for (const f of filesUnder(receiverDir))
    if (f.endsWith(".seg"))
      try {
        n += fs.statSync(f).size
      } catch {}
  return n
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })

const startReceiver = (dir: string, port: number) =>
  spawnReady(
    process.execPath,
    [CLI, "receiver", "--dir", dir, "--port", String(port)],
    /^listening \S+:\d+$/m,
    {
      what: "cdp-sync receiver"
    }
  )

/**
 * Builds the dataset into `dir` (empty): a receiver process and the filter's side of the
 * protocol (`logClient.ts`) writing until `logTarget` bytes of records are acked, the
 * receiver killed and restarted at 1/4, 1/2 and 3/4 of the way.
 */
const build = async (dir: string, diskBytes: number, logTarget: number): Promise<void> => {
  const receiverDir = path.join(dir, "receiver")
  fs.mkdirSync(receiverDir, { recursive: true })
  const port = await freePort()
  let receiver: Child = await startReceiver(receiverDir, port)
  const started = performance.now()
  let outages = 0
  let lastReport = 0
  let disk: Buffer
  try {
    disk = await writeLog({
      diskId: DISK_ID,
      blockSize: BLOCK_SIZE,
      blockCount: diskBytes / BLOCK_SIZE,
      bytes: logTarget,
      link: () => ({ host: "127.0.0.1", port }),
      breakAt: [0.25, 0.5, 0.75].map((f) => f * logTarget),
      breakLink: async (whileDown) => {
        outages++
        await receiver.stop("SIGKILL")
        whileDown()
        receiver = await startReceiver(receiverDir, port)
      },
      progress: (acked) => {
        if (performance.now() - lastReport < 5000) return
        lastReport = performance.now()
        say(
          `building: ${formatSize(acked)} of ${formatSize(logTarget)} of log, ${outages} receiver restarts, ${((performance.now() - started) / 1000).toFixed(0)} s`
        )
      }
    })
  } finally {
    await receiver.stop("SIGTERM")
  }
  const diskFile = path.join(dir, "disk.img")
  fs.writeFileSync(diskFile, disk)
  say(`restoring the latest point to ${path.join(dir, "image.img")} …`)
  const image = path.join(dir, "image.img")
  await runChild(process.execPath, [
    CLI,
    "restore",
    "--dir",
    receiverDir,
    "--disk",
    DISK_ID,
    "--at",
    "latest",
    "--out",
    image
  ])
  // A check of the dataset itself: the replica at its latest point is the disk.
  try {
    await runChild("cmp", ["-s", image, diskFile])
    say("the restored image equals the disk the log was written from")
  } catch {
    throw new Error(`the restored latest point differs from the disk the log was written from (${diskFile})`)
  }
  fs.rmSync(diskFile)
}

/** The recovery points of the dataset's disk, summed up. */
const describe = async (dir: string, diskBytes: number): Promise<Omit<Dataset, "dir">> => {
  const receiverDir = path.join(dir, "receiver")
  const [d] = await Effect.runPromise(Restore.points(receiverDir, DISK_ID))
  const points = d!.points.filter((p) => p.kind !== "base")
  // The newest point at or before the log's middle seq.
  const half = points.at(-1)!.seq / 2
  const middle = points.filter((p) => p.seq <= half).at(-1) ?? points[0]!
  const [disk] = await listDisks(receiverDir)
  const chain = await openChain(disk!.diskDir, disk!.meta, "read")
  let writes = 0
  let blocks = 0
  for (const segment of chain.segments)
    for (const e of segment.entries ?? []) {
      if (e.kind === Kind.Write) writes++
      if (e.kind === Kind.Block) blocks++
    }
  return {
    receiverDir,
    image: path.join(dir, "image.img"),
    diskBytes,
    logBytes: d!.logBytes,
    segments: d!.segments,
    points: points.length,
    resyncs: points.filter((p) => p.kind === "resync-end").length,
    writes,
    blocks,
    latestSeq: points.at(-1)!.seq,
    firstTime: points[0]!.time,
    lastTime: points.at(-1)!.time,
    middleTime: middle.time,
    middleSeq: middle.seq
  }
}

/** The dataset for these sizes: from the cache, or built (minutes) and cached. */
export const dataset = async (diskBytes: number, logBytes: number): Promise<Dataset> => {
  const root = process.env.CDP_SYNC_BENCH_MOUNT_CACHE ?? path.join(os.tmpdir(), "cdp-sync-bench-mount")
  const dir = path.join(root, `v${FORMAT}-disk${formatSize(diskBytes)}-log${formatSize(logBytes)}`)
  const manifest = path.join(dir, "dataset.json")
  if (fs.existsSync(manifest)) {
    const cached = JSON.parse(fs.readFileSync(manifest, "utf8")) as Omit<Dataset, "dir">
    if (fs.existsSync(cached.image) && fs.existsSync(cached.receiverDir)) {
      say(`reusing the dataset in ${dir} (delete it to build it again)`)
      return { dir, ...cached }
    }
  }
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  say(
    `building the dataset in ${dir}: a ${formatSize(diskBytes)} disk, ${formatSize(logBytes)} of log (once; later runs reuse it)`
  )
  const t = performance.now()
  await build(dir, diskBytes, logBytes)
  const described = await describe(dir, diskBytes)
  fs.writeFileSync(manifest, `${JSON.stringify(described, null, 2)}\n`)
  say(
    `dataset built in ${((performance.now() - t) / 1000).toFixed(0)} s: ${formatSize(described.logBytes)} of log in ${described.segments} segments, ${described.writes} writes, ${described.blocks} resync blocks, ${described.points} recovery points, ${described.resyncs} resyncs`
  )
  return { dir, ...described }
}

/**
 * A copy of the dataset's receiver directory a receiver may write into (the busy rows):
 * sealed segments, their indexes and the base are hard links (the receiver never writes
 * into them in place: new files are written aside and renamed), everything it may append
 * to or rewrite in place — the last segment and its files, disk.json — is copied.
 */
export const scratchCopy = (data: Dataset, to: string): string => {
  const out = path.join(to, "receiver")
  const files = filesUnder(data.receiverDir)
  const segments = files.filter((f) => f.endsWith(".seg")).sort()
  const lastStem = segments.at(-1)?.replace(/\.seg$/, "")
  for (const f of files) {
    const rel = path.relative(data.receiverDir, f)
    if (rel === ".lock") continue
    const target = path.join(out, rel)
    fs.mkdirSync(path.dirname(target), { recursive: true })
    const immutable = /\.(seg|idx|bix)$/.test(f) && (lastStem === undefined || !f.startsWith(`${lastStem}.`))
    if (immutable || path.basename(f) === "base.img") fs.linkSync(f, target)
    else fs.copyFileSync(f, target)
  }
  return out
}

/** Size and modification time of every file of the dataset: it must not change. */
export const fingerprint = (data: Dataset): string =>
  filesUnder(data.dir)
    .filter((f) => !f.endsWith(".lock"))
    .sort()
    .map((f) => {
      const s = fs.statSync(f)
      return `${path.relative(data.dir, f)} ${s.size} ${s.mtimeMs}`
    })
    .join("\n")

/**
 * `--metrics` as a Prometheus server scrapes it (issue 16): the built CLI's `serve` and
 * `receiver` as child processes, a fault proxy between them, guest writes through our
 * NBD client. Read during the run, the filter's endpoint shows the bytes sent rising with
 * the writes; with the link cut (the proxy points at a closed port) it shows the resync
 * and the dirty blocks; once the link is back, the dirty blocks fall to 0 and the mode is
 * sync again. The receiver's endpoint shows what it made durable. Both say `# TYPE`
 * counter, gauge and histogram, and label every series with the disk.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit, Scope } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Nbd from "../../src/nbd/Nbd.js"
import * as FaultProxy from "../../src/simulator/internal/FaultProxy.js"
import { pattern } from "../support/nbdHarness.js"
import * as ReceiverProcess from "../support/receiverProcess.js"

const CLI = path.resolve(import.meta.dirname, "../../dist/cli/main.js")
const DISK_BYTES = 8 * 1024 * 1024
const BLOCK = 64 * 1024
const DISK = "vm1"

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

/** Waits until `output()` matches `re` (or the process exits first). */
const lineOf = async (output: () => string, re: RegExp, exited: Promise<unknown>, what: string) => {
  let gone = false
  void exited.then(() => {
    gone = true
  })
  for (let i = 0; i < 600; i++) {
    const m = re.exec(output())
    if (m !== null) return m[1]!
    if (gone) break
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`no ${what}; output:\n${output()}`)
}

interface Scrape {
  readonly types: Map<string, string>
  readonly samples: Map<string, number>
  readonly lines: ReadonlyArray<string>
}

const scrape = async (url: string): Promise<Scrape> => {
  const text = await (await fetch(url)).text()
  const types = new Map<string, string>()
  const samples = new Map<string, number>()
  const lines = text.split("\n").filter((l) => l !== "")
  for (const line of lines) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (t !== null) types.set(t[1]!, t[2]!)
    const s = /^(\S+) (\S+)$/.exec(line)
    if (s !== null && !line.startsWith("#")) samples.set(s[1]!, Number(s[2]))
  }
  return { types, samples, lines }
}

/** The value of `name{disk="vm1"}` (NaN when absent). */
const value = (s: Scrape, name: string) => s.samples.get(`${name}{disk="${DISK}"}`) ?? Number.NaN

/** Scrapes until `ok` holds (the figures lag the events by a batch): generous, for a loaded machine. */
const scrapeUntil = async (url: string, ok: (s: Scrape) => boolean, what: string): Promise<Scrape> => {
  let last: Scrape | undefined
  for (let i = 0; i < 600; i++) {
    last = await scrape(url)
    if (ok(last)) return last
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`never ${what}; last scrape:\n${last?.lines.filter((l) => !l.startsWith("#")).join("\n")}`)
}

/** `count` 64 KiB writes from block `first` on, through our NBD client, then a FLUSH. */
const write = (port: number, first: number, count: number) =>
  Effect.runPromise(
    Nbd.withClient({ connect: { host: "127.0.0.1", port }, exportName: "vm" }, (client) =>
      Effect.gen(function* () {
        yield* Effect.forEach(
          Array.from({ length: count }, (_, i) => (first + i) * BLOCK),
          (offset) => client.write(offset, pattern(first, offset, BLOCK)),
          { concurrency: 8, discard: true }
        )
        yield* client.flush
      })
    )
  )

/** A port nothing listens on (bound, then closed). */
const closedPort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

const spawnServe = (args: ReadonlyArray<string>) => {
  const child: ChildProcess = spawn(process.execPath, [CLI, "serve", ...args], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  const out = { stdout: "", stderr: "" }
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (out.stdout += s))
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (out.stderr += s))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    await exited
  })
  return { child, out, exited }
}

describe("--metrics, scraped during a run", () => {
  it("serve's and the receiver's endpoints move with the writes, the cut link and the resync", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-metrics-"))
    cleanup.push(() => fs.rm(dir, { recursive: true, force: true }))
    await fs.mkdir(path.join(dir, "receiver"))
    const receiver = await ReceiverProcess.start(path.join(dir, "receiver"), ["--metrics", "127.0.0.1:0"])
    cleanup.push(() => receiver.kill())
    const receiverMetrics = await lineOf(
      receiver.stderr,
      /^metrics (http:\S+)$/m,
      receiver.exited,
      "receiver metrics line"
    )

    const scope = Effect.runSync(Scope.make())
    cleanup.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    const proxy = await Effect.runPromise(Scope.extend(FaultProxy.make(receiver.port), scope))

    const serve = spawnServe([
      "--disk",
      path.join(dir, "disk.img"),
      "--disk-size",
      String(DISK_BYTES),
      "--receiver",
      `127.0.0.1:${proxy.port}`,
      "--journal",
      path.join(dir, "journal"),
      "--disk-id",
      DISK,
      "--listen",
      "127.0.0.1:0",
      "--export-name",
      "vm",
      "--ack-timeout-ms",
      "500",
      "--metrics",
      "127.0.0.1:0"
    ])
    const uri = await lineOf(() => serve.out.stdout, /^listening (\S+)$/m, serve.exited, "NBD ready line")
    const nbdPort = Number(/:(\d+)\//.exec(uri)![1])
    const url = await lineOf(() => serve.out.stderr, /^metrics (http:\S+)$/m, serve.exited, "metrics line")
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/)

    // Bytes sent rise with the guest's writes (in sync: streamed as they are written).
    await write(nbdPort, 0, 16)
    const first = await scrapeUntil(
      url,
      (s) => value(s, "cdp_sync_sent_bytes_total") >= 16 * BLOCK && value(s, "cdp_sync_lag_records") === 0,
      "16 blocks sent and acked"
    )
    expect(value(first, "cdp_sync_guest_written_bytes_total")).toBe(16 * BLOCK)
    expect(value(first, "cdp_sync_mode")).toBe(0)
    const sentBefore = value(first, "cdp_sync_sent_bytes_total")
    await write(nbdPort, 16, 8)
    const second = await scrapeUntil(
      url,
      (s) => value(s, "cdp_sync_sent_bytes_total") >= sentBefore + 8 * BLOCK,
      "8 more blocks sent"
    )
    expect(value(second, "cdp_sync_guest_written_bytes_total")).toBe(24 * BLOCK)

    // The link cut and kept down: the writes are owed, in resync.
    await Effect.runPromise(Effect.zipRight(proxy.retarget(await closedPort()), proxy.cut))
    await write(nbdPort, 40, 12)
    const down = await scrapeUntil(
      url,
      (s) => value(s, "cdp_sync_mode") === 1 && value(s, "cdp_sync_dirty_blocks") >= 12,
      "in resync with the 12 blocks dirty"
    )
    expect(value(down, "cdp_sync_dirty_bytes")).toBe(value(down, "cdp_sync_dirty_blocks") * BLOCK)
    const drainedBefore = value(down, "cdp_sync_drain_blocks_sent_total") || 0

    // The link back: the drain sends the dirty blocks, the dirty count falls to 0, sync again.
    await Effect.runPromise(proxy.retarget(receiver.port))
    const after = await scrapeUntil(
      url,
      (s) =>
        value(s, "cdp_sync_dirty_blocks") === 0 &&
        value(s, "cdp_sync_mode") === 0 &&
        value(s, "cdp_sync_lag_records") === 0,
      "dirty blocks back to 0 in sync"
    )
    expect(value(after, "cdp_sync_drain_blocks_sent_total")).toBeGreaterThanOrEqual(drainedBefore + 12)
    expect(value(after, "cdp_sync_sent_bytes_total")).toBeGreaterThanOrEqual(
      value(down, "cdp_sync_sent_bytes_total") + 12 * BLOCK
    )
    expect(value(after, "cdp_sync_epoch")).toBeGreaterThanOrEqual(1)

    // Prometheus types, and the disk label on every series of the filter.
    expect(after.types.get("cdp_sync_sent_bytes_total")).toBe("counter")
    expect(after.types.get("cdp_sync_guest_written_bytes_total")).toBe("counter")
    expect(after.types.get("cdp_sync_drain_blocks_sent_total")).toBe("counter")
    expect(after.types.get("cdp_sync_dirty_blocks")).toBe("gauge")
    expect(after.types.get("cdp_sync_lag_seconds")).toBe("gauge")
    expect(after.types.get("cdp_sync_journal_commit_seconds")).toBe("histogram")
    expect(after.types.get("cdp_sync_activity_commit_seconds")).toBe("histogram")
    const series = after.lines.filter((l) => l.startsWith("cdp_sync_"))
    expect(series.length).toBeGreaterThan(20)
    for (const line of series) expect(line).toContain(`disk="${DISK}"`)
    expect(value(after, "cdp_sync_journal_commit_seconds_count")).toBeGreaterThan(0)

    // The receiver's endpoint: what it made durable, per disk.
    const logged = await scrapeUntil(
      receiverMetrics,
      (s) => value(s, "cdp_sync_receiver_records_total") > 0,
      "receiver records"
    )
    expect(logged.types.get("cdp_sync_receiver_records_total")).toBe("counter")
    expect(logged.types.get("cdp_sync_receiver_logged_bytes_total")).toBe("counter")
    expect(logged.types.get("cdp_sync_receiver_durable_seq")).toBe("gauge")
    expect(logged.types.get("cdp_sync_receiver_commit_seconds")).toBe("histogram")
    expect(value(logged, "cdp_sync_receiver_logged_bytes_total")).toBeGreaterThanOrEqual(36 * BLOCK)
    expect(value(logged, "cdp_sync_receiver_durable_seq")).toBeGreaterThan(0)
    for (const line of logged.lines.filter((l) => l.startsWith("cdp_sync_")))
      expect(line).toContain(`disk="${DISK}"`)

    serve.child.kill("SIGTERM")
    expect((await serve.exited).code).toBe(0)
  }, 120_000)

  it("refuses a bad --metrics as a usage error (exit 2), naming the option", async () => {
    // One command suffices: the option is one (serve's and the receiver's are scraped above).
    const args = ["--disk", "d.img", "--receiver", "127.0.0.1:1", "--journal", "j", "--metrics", "nowhere"]
    const r = await ReceiverProcess.run(["replicate", ...args])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toContain('--metrics: expected HOST:PORT (port 0 … 65535), not "nowhere"')
  })
})

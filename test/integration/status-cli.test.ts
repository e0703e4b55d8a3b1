/**
 * `cdp-sync status` as an operator runs it (issue 16): the built CLI as child
 * processes — a real receiver, `serve` replicating to it (guest writes through our NBD
 * client), and `status` asking each of them on its control socket. Both report the
 * disk sanely (mode, link, lag, the same last recovery point); `--watch` off a terminal
 * prints a line per update; with nothing answering it exits 1 with one stderr line and
 * `{"error": …}` under `--json`; usage errors exit 2.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Control from "../../src/internal/control.js"
import type { FilterDisk, ReceiverDisk, Report } from "../../src/internal/controlProtocol.js"
import * as Nbd from "../../src/nbd/Nbd.js"
import { pattern } from "../support/nbdHarness.js"
import * as ReceiverProcess from "../support/receiverProcess.js"
import { startServe } from "../support/serveProcess.js"

const CLI = path.resolve(import.meta.dirname, "../../dist/cli/main.js")
const DISK_BYTES = 4 * 1024 * 1024

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

const status = async (args: ReadonlyArray<string>) => {
  const r = await ReceiverProcess.run(["status", ...args])
  const json =
    args.includes("--json") && r.stdout.trim() !== "" ? (JSON.parse(r.stdout) as unknown) : undefined
  return { ...r, json }
}

/**
 * Asks the socket in process (cheap) until `ok` holds for the one disk, then once more
 * through the CLI (`status --json`), whose answer is returned.
 */
const until = async <D>(args: ReadonlyArray<string> | undefined, socket: string, ok: (d: D) => boolean) => {
  const deadline = Date.now() + 60_000
  for (;;) {
    const reply = await Effect.runPromise(Effect.either(Control.request(socket)))
    const disk =
      reply._tag === "Right" && "status" in reply.right ? (reply.right.status.disks[0] as D) : undefined
    if (disk !== undefined && ok(disk)) {
      if (args === undefined) return disk
      break
    }
    if (Date.now() > deadline) throw new Error(`status never held: ${JSON.stringify(reply)}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const r = await status([...args, "--json"])
  expect(r.code, r.stderr).toBe(0)
  expect(r.stderr).toBe("")
  const disk = (r.json as { status: Report }).status.disks[0] as D
  expect(ok(disk)).toBe(true)
  return disk
}

const writeSome = (port: number, seed: number) =>
  Effect.runPromise(
    Nbd.withClient({ connect: { host: "127.0.0.1", port }, exportName: "vm" }, (client) =>
      Effect.gen(function* () {
        for (let i = 0; i < 8; i++) yield* client.write(((i * 5) % 64) * 65536, pattern(seed, i, 8192))
        yield* client.flush
      })
    )
  )

describe("cdp-sync status", () => {
  it("reports a running serve and its receiver, per disk, and says when nothing answers", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-status-"))
    cleanup.push(() => fs.rm(dir, { recursive: true, force: true }))
    const receiverDir = path.join(dir, "receiver")
    const journal = path.join(dir, "journal")
    const receiver = await ReceiverProcess.start(receiverDir)
    cleanup.push(() => receiver.kill())
    const serve = await startServe(
      [
        "--disk",
        path.join(dir, "disk.img"),
        "--disk-size",
        String(DISK_BYTES),
        "--receiver",
        `127.0.0.1:${receiver.port}`,
        "--journal",
        journal,
        "--disk-id",
        "vm",
        "--export-name",
        "vm",
        "--listen",
        "127.0.0.1:0"
      ],
      cleanup
    )
    await writeSome(serve.port, 1)

    // The filter: caught up, in sync, link up, the newest record a recovery point.
    const filterSocket = path.join(journal, "control.sock")
    const receiverSocket = path.join(receiverDir, "control.sock")
    const filter = await until<FilterDisk>(
      ["--journal", journal],
      filterSocket,
      (d) => d.mode === "sync" && d.link === "up" && d.lagRecords === 0 && d.lastRecoveryPoint !== null
    )
    expect(filter).toMatchObject({
      role: "filter",
      disk: "vm",
      receiver: `127.0.0.1:${receiver.port}`,
      dirtyBlocks: 0,
      dirtyBytes: 0,
      inFlight: 0,
      lagSeconds: 0,
      drain: null,
      stopped: null,
      blockSize: 65536
    })
    expect(filter.epoch).toBeGreaterThanOrEqual(1)
    expect(filter.lastRecoveryPoint!.seq).toBe(filter.watermark)
    expect(filter.lastRecoveryPoint!.ageSeconds).toBeGreaterThanOrEqual(0)
    expect(Number.isNaN(Date.parse(filter.lastRecoveryPoint!.at))).toBe(false)

    // The receiver: the filter connected, everything durable, the same last point.
    const disk = await until<ReceiverDisk>(
      ["--dir", receiverDir],
      receiverSocket,
      (d) => d.durableSeq >= filter.watermark
    )
    expect(disk).toMatchObject({
      role: "receiver",
      disk: "vm",
      connected: true,
      inResync: false,
      lastError: null
    })
    expect(disk.peer).toMatch(/^127\.0\.0\.1:\d+$/)
    expect(disk.durableSeq).toBe(filter.watermark)
    expect(disk.lastRecoveryPoint?.seq).toBe(filter.lastRecoveryPoint!.seq)
    expect(disk.logBytes).toBeGreaterThan(8 * 8192)

    // More guest writes move the point on both sides.
    await writeSome(serve.port, 2)
    const later = await until<FilterDisk>(
      undefined,
      filterSocket,
      (d) => d.lagRecords === 0 && d.lastRecoveryPoint!.seq > filter.lastRecoveryPoint!.seq
    )
    expect(later.lastRecoveryPoint!.seq).toBe(later.watermark)

    // Human output: one compact block per disk; --control names the socket directly.
    const human = await status(["--journal", journal])
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout).toMatch(/^vm role:filter mode:sync link:up epoch:\d+ receiver:127\.0\.0\.1:\d+$/m)
    expect(human.stdout).toMatch(/^ {2}last-point:seq \d+ \(.+ ago\)$/m)
    expect(human.stderr).toBe("")

    // --watch off a terminal: a JSON line per update, until interrupted.
    const watch = spawn(process.execPath, [CLI, "status", "--dir", receiverDir, "--watch", "--json"], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    cleanup.push(async () => watch.kill("SIGKILL"))
    const lines = await new Promise<Array<string>>((resolve) => {
      let text = ""
      watch.stdout.setEncoding("utf8").on("data", (s: string) => {
        text += s
        const got = text.split("\n").filter((l) => l !== "")
        if (got.length >= 2) resolve(got)
      })
    })
    for (const line of lines.slice(0, 2))
      expect((JSON.parse(line) as { status: Report }).status.disks[0]!.disk).toBe("vm")
    watch.kill("SIGINT")

    // Usage errors: exit 2, one line on stderr, nothing on stdout.
    const bad = await status(["--journal", journal, "--dir", receiverDir])
    expect(bad.code).toBe(2)
    expect(bad.stdout).toBe("")
    expect(bad.stderr.trim()).toBe("cdp-sync status: give one of --control PATH, --journal DIR or --dir DIR")

    // The filter stops (SIGTERM): its socket is gone, and status says nothing answers.
    serve.child.kill("SIGTERM")
    expect((await serve.exited).code).toBe(0)
    await expect(fs.lstat(path.join(journal, "control.sock"))).rejects.toThrow(/ENOENT/)
    const gone = await status(["--journal", journal, "--json"])
    expect(gone.code).toBe(1)
    expect(gone.json).toMatchObject({ error: { _tag: "ControlUnreachable" } })
    expect(gone.stderr.trim()).toMatch(/^cdp-sync status: nothing answers on .*control\.sock: ENOENT$/)
    expect(gone.stdout.trim().split("\n")).toHaveLength(1)

    // The receiver sees its filter gone.
    await until<ReceiverDisk>(undefined, receiverSocket, (d) => !d.connected && d.peer === null)
  }, 180_000)
})

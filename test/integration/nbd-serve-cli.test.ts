/**
 * `cdp-sync serve` as operators run it: the built CLI as a child process, the real log
 * receiver as another, a disk image file, our NBD client on loopback. It prints one
 * ready line; SIGTERM answers, journals and exits 0 (the journal records a clean close); SIGKILL
 * leaves the next start unclean. Either way, once the filter catches up (`replicate
 * --quiesce` on the same journal), the latest recovery point restores equal to the image.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Nbd from "../../src/nbd/Nbd.js"
import { pattern } from "../support/nbdHarness.js"
import * as ReceiverProcess from "../support/receiverProcess.js"

const CLI = path.resolve(import.meta.dirname, "../../dist/cli/main.js")
const DISK_BYTES = 8 * 1024 * 1024

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

interface Served {
  readonly child: ChildProcess
  readonly uri: string
  readonly port: number
  readonly out: { stdout: string; stderr: string }
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const startServe = async (args: ReadonlyArray<string>): Promise<Served> => {
  const child = spawn(process.execPath, [CLI, "serve", ...args], { stdio: ["ignore", "pipe", "pipe"] })
  const out = { stdout: "", stderr: "" }
  child.stdout.setEncoding("utf8").on("data", (s: string) => (out.stdout += s))
  child.stderr.setEncoding("utf8").on("data", (s: string) => (out.stderr += s))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    await exited
  })
  const uri = await new Promise<string>((resolve, reject) => {
    const check = () => {
      const m = /^listening (\S+)\n/.exec(out.stdout)
      if (m !== null) resolve(m[1]!)
    }
    child.stdout.on("data", check)
    void exited.then((e) =>
      reject(new Error(`serve exited (${e.code ?? e.signal}) before ready:\n${out.stderr}`))
    )
  })
  const port = Number(/:(\d+)\//.exec(uri)?.[1])
  return { child, uri, port, out, exited }
}

/** Pipelined patterned writes, a trim, zeroes, FUA and a FLUSH through our client. */
const writeThrough = (port: number, seed: number) =>
  Effect.runPromise(
    Nbd.withClient({ connect: { host: "127.0.0.1", port }, exportName: "vm" }, (client) =>
      Effect.gen(function* () {
        expect(client.size).toBe(DISK_BYTES)
        yield* Effect.forEach(
          Array.from({ length: 64 }, (_, i) => ((i * 37) % 128) * 65536),
          (offset) => client.write(offset, pattern(seed, offset, 16384)),
          { concurrency: 16, discard: true }
        )
        yield* client.trim(65536, 65536)
        yield* client.writeZeroes(3 * 65536, 8192, { noHole: true })
        yield* client.write(5 * 65536 + 512, pattern(seed, 1, 1024), { fua: true })
        yield* client.flush
      })
    )
  )

/** `replicate --quiesce` on the same image and journal: it catches the receiver up and exits. */
const catchUp = async (dir: string, port: number) => {
  const result = await ReceiverProcess.run([
    "replicate",
    "--disk",
    path.join(dir, "disk.img"),
    "--receiver",
    `127.0.0.1:${port}`,
    "--journal",
    path.join(dir, "journal"),
    "--disk-id",
    "vm",
    "--quiesce"
  ])
  expect(result.code, result.stderr).toBe(0)
  return result.stderr
}

describe("cdp-sync serve", () => {
  it("serves, answers, stops cleanly on SIGTERM, and leaves an unclean start after SIGKILL; the replica restores equal to the image", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-serve-"))
    cleanup.push(() => fs.rm(dir, { recursive: true, force: true }))
    await fs.mkdir(path.join(dir, "receiver"))
    const receiver = await ReceiverProcess.start(path.join(dir, "receiver"))
    cleanup.push(() => receiver.kill())
    const args = [
      "--disk",
      path.join(dir, "disk.img"),
      "--disk-size",
      String(DISK_BYTES),
      "--receiver",
      `127.0.0.1:${receiver.port}`,
      "--journal",
      path.join(dir, "journal"),
      "--disk-id",
      "vm",
      "--export-name",
      "vm",
      "--listen",
      "127.0.0.1:0"
    ]

    // A clean stop: every answered write journaled, exit 0, one line on stdout.
    const first = await startServe(args)
    expect(first.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/vm$/)
    await writeThrough(first.port, 1)
    first.child.kill("SIGTERM")
    expect(await first.exited).toEqual({ code: 0, signal: null })
    expect(first.out.stdout).toBe(`listening ${first.uri}\n`)
    // The journal recorded the clean close: the next start owes no resync.
    const run = JSON.parse(await fs.readFile(path.join(dir, "journal", "journal.json"), "utf8"))
    expect(run).toMatchObject({ run: "closed" })

    // A kill: the next start is unclean, and still nothing answered is lost.
    const second = await startServe(args)
    await writeThrough(second.port, 2)
    second.child.kill("SIGKILL")
    await second.exited
    const afterKill = await catchUp(dir, receiver.port)
    expect(afterKill).toMatch(/unclean start/)
    expect(await ReceiverProcess.restoredEqualsDisk(dir, path.join(dir, "receiver"))).toBe(true)
    // The data the client wrote (and flushed) is in the image.
    const image = await fs.readFile(path.join(dir, "disk.img"))
    expect(Buffer.from(image.subarray(5 * 65536 + 512, 5 * 65536 + 1536))).toEqual(
      Buffer.from(pattern(2, 1, 1024))
    )
  })

  it("refuses --listen with --socket and a bad --listen (usage errors: exit 2), one line on stderr", async () => {
    const both = await ReceiverProcess.run([
      "serve",
      "--disk",
      "x.img",
      "--receiver",
      "127.0.0.1:1",
      "--journal",
      "j",
      "--listen",
      "127.0.0.1:0",
      "--socket",
      "/tmp/x.sock"
    ])
    expect(both.code).toBe(2)
    expect(both.stderr).toMatch(/--listen or --socket/)
    const bad = await ReceiverProcess.run([
      "serve",
      "--disk",
      "x.img",
      "--receiver",
      "127.0.0.1:1",
      "--journal",
      "j",
      "--listen",
      "nope"
    ])
    expect(bad.code).toBe(2)
    expect(bad.stderr.trim().split("\n")).toEqual([
      '--listen "nope": expected HOST:PORT with a port from 0 to 65535'
    ])
  })
})

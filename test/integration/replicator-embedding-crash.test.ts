/**
 * Crash detection is the library's job (issue 14): an application that embeds
 * `Replicator.layer` with default options — file disk, file journal, file activity
 * log, TCP to the real receiver (a child process) — is SIGKILLed at random moments
 * while its guest writes run, and started again with the same default options. Every
 * start after a kill must find the journal's run open (an unclean start) and resync
 * what the journal may lack, so after it quiesces the latest recovery point, restored
 * by the receiver's restore, equals the disk byte for byte.
 *
 * The kept mutant (`assumeCleanStart` of `ReplicatorMutants`, an internal test variant the child provides:
 * the caller's word that a start is clean is trusted, as `uncleanStart: false` was)
 * must fail the same check: writes that reached the disk but not the journal are
 * never resent.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Restore from "../../src/receiver/Restore.js"
import * as Receiver from "../support/receiverProcess.js"
import { prng } from "../support/receiverProcess.js"

const CHILD = path.resolve(import.meta.dirname, "../support/embeddedReplicator.mjs")
const BLOCK = 65536
const BLOCKS = 64
const DISK_ID = "embedded"

const dirs: Array<string> = []
afterEach(async () => {
  for (const dir of dirs.splice(0)) await fs.rm(dir, { recursive: true, force: true })
})

interface Child {
  readonly process: ChildProcess
  /** Resolves once the child printed `line` on a line of its own; rejects if it exits first. */
  readonly saw: (line: string) => Promise<void>
  readonly send: (line: string) => void
  readonly exited: Promise<{ code: number | null; signal: string | null }>
  readonly output: () => string
}

const start = (options: object): Child => {
  const child = spawn(process.execPath, [CHILD, JSON.stringify(options)], { stdio: ["pipe", "pipe", "pipe"] })
  let stdout = ""
  let stderr = ""
  const waiting = new Map<string, () => void>()
  child.stdout!.setEncoding("utf8").on("data", (s: string) => {
    stdout += s
    for (const [line, resolve] of waiting)
      if (stdout.split("\n").includes(line)) {
        waiting.delete(line)
        resolve()
      }
  })
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    stderr += s
  })
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  return {
    process: child,
    saw: (line) =>
      new Promise<void>((resolve, reject) => {
        if (stdout.split("\n").includes(line)) return resolve()
        waiting.set(line, resolve)
        void exited.then((e) =>
          reject(
            new Error(`the child exited (${e.code ?? e.signal}) before "${line}": ${stderr.slice(-2000)}`)
          )
        )
      }),
    send: (line) => child.stdin!.write(`${line}\n`),
    exited,
    output: () => stdout + stderr
  }
}

const kill = async (child: Child) => {
  child.process.kill("SIGKILL")
  const e = await child.exited
  expect(e.signal).toBe("SIGKILL")
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface Outcome {
  /** The starts (0 = the first) after which the restored point differed from the disk. */
  readonly mismatches: ReadonlyArray<number>
  /** Kills while the guest wrote. */
  readonly kills: number
  /** Starts that said they were unclean. */
  readonly uncleanStarts: number
}

/**
 * Start, quiesce, compare, write, SIGKILL — `kills` times — then a last start that
 * quiesces, is compared, and exits cleanly. Now and then a start is also killed before
 * it quiesced (during its resync). With `stopAtMismatch`, ends at the first mismatch.
 */
const crashRun = async (seed: number, kills: number, mutant: string | undefined, stopAtMismatch: boolean) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-embedding-"))
  dirs.push(dir)
  const receiverDir = path.join(dir, "receiver")
  await fs.mkdir(receiverDir)
  const receiver = await Receiver.start(receiverDir)
  const disk = path.join(dir, "disk.img")
  const random = prng(seed)
  const options = (n: number) => ({
    disk,
    journal: path.join(dir, "journal"),
    host: "127.0.0.1",
    port: receiver.port,
    diskId: DISK_ID,
    blockSize: BLOCK,
    blockCount: BLOCKS,
    extentBytes: 256 * 1024,
    seed: seed * 1000 + n,
    mutant
  })
  const restoredEqualsDisk = async () => {
    const out = path.join(dir, "restored.img")
    await Effect.runPromise(Restore.restore({ dir: receiverDir, diskId: DISK_ID, at: "latest", out }))
    return Buffer.compare(await fs.readFile(out), await fs.readFile(disk)) === 0
  }
  const mismatches: Array<number> = []
  let uncleanStarts = 0
  let done = 0
  try {
    for (let n = 0; ; n++) {
      // Every fifth start is first killed during its start-up (a resync after the last kill).
      if (n > 0 && n % 5 === 0) {
        const early = start(options(n))
        await sleep(random() * 800)
        await kill(early)
        uncleanStarts += early.output().split("unclean start:").length - 1
      }
      const child = start(options(n))
      await child.saw("quiesced")
      uncleanStarts += child.output().split("unclean start:").length - 1
      if (!(await restoredEqualsDisk())) {
        mismatches.push(n)
        if (stopAtMismatch) {
          await kill(child)
          break
        }
      }
      if (done === kills) {
        child.send("exit")
        expect(await child.exited).toEqual({ code: 0, signal: null })
        break
      }
      child.send("go")
      await child.saw("writing")
      // A random moment of a continuous stream of guest writes.
      await sleep(random() * 400)
      await kill(child)
      done++
    }
  } finally {
    await receiver.kill()
  }
  const outcome: Outcome = { mismatches, kills: done, uncleanStarts }
  return outcome
}

describe("an embedding application killed while writing", () => {
  // Random kill moments; the seed is in the failure message.
  const seed = Number(process.env.CDP_SYNC_SEED ?? Date.now() % 100_000)

  it("restarts with default options, resyncs what the journal may lack: every restored point equals the disk", async () => {
    const outcome = await crashRun(seed, 20, undefined, false)
    expect(outcome.kills).toBe(20)
    expect(outcome.mismatches, `seed ${seed}`).toEqual([])
    // Each start after a kill knew it from the journal alone (the early kills may add more).
    expect(outcome.uncleanStarts).toBeGreaterThanOrEqual(20)
  }, 240_000)

  it("mutant: a start taken as clean (the caller trusted) loses writes the disk has", async () => {
    const outcome = await crashRun(seed, 20, "assume-clean", true)
    expect(outcome.mismatches.length, `seed ${seed}`).toBeGreaterThan(0)
  }, 240_000)
})

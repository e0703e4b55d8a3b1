/**
 * A disk image served over NBD for the interop tests and the NBD bench: `cdp-sync serve`
 * (the built CLI) replicating to a real receiver process, or — with
 * `CDP_SYNC_INTEROP_SERVER=qemu-nbd`, to check the tests and the tool invocations
 * themselves — QEMU's own `qemu-nbd` with no replication.
 *
 * After `stop()` (SIGTERM: every answered write journaled, the export closed),
 * `replica()` restores the latest recovery point from the receiver (`cdp-sync restore`)
 * and returns it beside the image, to be compared byte for byte.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import * as Restore from "../../src/receiver/Restore.js"
import * as Proc from "./receiverProcess.js"
import { find } from "./tools.js"

export const MiB = 1024 * 1024

export type Server = "cdp-sync" | "qemu-nbd"

/** Which server the interop tests run against (default: `cdp-sync serve`). */
export const serverUnderTest = (): Server =>
  process.env.CDP_SYNC_INTEROP_SERVER === "qemu-nbd" ? "qemu-nbd" : "cdp-sync"

export interface ToolResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a tool to completion (killed after `timeoutMs`), never throwing. */
export const runTool = (
  file: string,
  args: ReadonlyArray<string>,
  options: { readonly timeoutMs?: number; readonly cwd?: string } = {}
): Promise<ToolResult> =>
  new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        timeout: options.timeoutMs ?? 60_000,
        killSignal: "SIGKILL",
        maxBuffer: 64 * MiB,
        encoding: "utf8",
        ...(options.cwd === undefined ? {} : { cwd: options.cwd })
      },
      (error, stdout, stderr) => {
        const e = error as (Error & { code?: unknown; signal?: NodeJS.Signals | null }) | null
        resolve({
          code: e === null ? 0 : typeof e.code === "number" ? e.code : null,
          signal: e?.signal ?? null,
          stdout,
          stderr
        })
      }
    )
  })

/** `runTool` that throws (with the tool's output) unless it exits 0. */
export const mustRun = async (
  file: string,
  args: ReadonlyArray<string>,
  options: { readonly timeoutMs?: number; readonly cwd?: string } = {}
): Promise<ToolResult> => {
  const r = await runTool(file, args, options)
  if (r.code !== 0)
    throw new Error(
      `${path.basename(file)} ${args.join(" ")} exited ${r.code ?? r.signal}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`
    )
  return r
}

/** fio's `--output-format=json` report (the nbd engine prints a line before it). */
export const fioJson = <A>(stdout: string): A => JSON.parse(stdout.slice(stdout.indexOf("{"))) as A

export interface ServeOptions {
  /** The export's size in bytes (a multiple of 64 KiB). */
  readonly size: number
  readonly readOnly?: boolean
  readonly exportName?: string
  /** The disk's identity at the receiver (default "disk"). */
  readonly diskId?: string
  /** Where the image, the journal, the receiver's directory and the socket go (default: a new temp dir). */
  readonly dir?: string
  /** The receiver's address serve replicates to (default: a receiver process this export starts and owns). */
  readonly receiver?: { readonly host: string; readonly port: number }
  /** More arguments for `cdp-sync serve` (the replicator's tuning). */
  readonly serveArgs?: ReadonlyArray<string>
  /** Node's own options for `cdp-sync serve` (the NBD bench's `--cpu-prof`). */
  readonly nodeArgs?: ReadonlyArray<string>
  /** `cdp-sync serve` on a unix socket in `dir` (as qemu-nbd is) instead of TCP on 127.0.0.1. */
  readonly unixSocket?: boolean
}

export interface NbdExport {
  readonly server: Server
  /** The NBD URI clients connect to. */
  readonly uri: string
  readonly image: string
  readonly size: number
  readonly dir: string
  readonly receiverDir: string
  /** The receiver process (undefined when given an address, or under qemu-nbd). */
  readonly receiver: Proc.ReceiverProcess | undefined
  /** What the server said on stderr so far. */
  stderr(): string
  /** SIGTERM and wait for the exit; throws unless the server exits cleanly. */
  stop(): Promise<void>
  /**
   * After `stop()`: the latest recovery point restored from the receiver and the disk
   * image, both read whole (`undefined` under qemu-nbd: nothing replicates).
   */
  replica(): Promise<{ readonly restored: Buffer; readonly image: Buffer } | undefined>
  /** Stops whatever still runs and removes the directory (if this export made it). */
  dispose(): Promise<void>
}

const CLI = path.resolve(import.meta.dirname, "../../dist/cli/main.js")

const waitForSocket = async (connect: () => net.Socket, child: ChildProcess, what: string) => {
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${what} exited before it listened`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect()
      s.once("connect", () => {
        s.destroy()
        resolve(true)
      })
      s.once("error", () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`${what} did not listen within 30 s`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

const exitOf = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode })
    else child.once("exit", (code, signal) => resolve({ code, signal }))
  })

/** Starts the server under test on a fresh (zeroed) image of `options.size` bytes. */
export const serve = async (
  options: ServeOptions,
  server: Server = serverUnderTest()
): Promise<NbdExport> => {
  const ownDir = options.dir === undefined
  const dir = options.dir ?? (await fs.promises.mkdtemp(path.join(os.tmpdir(), "cdp-sync-nbd-")))
  const image = path.join(dir, "disk.img")
  const receiverDir = path.join(dir, "receiver")
  const name = options.exportName ?? "disk"
  const diskId = options.diskId ?? "disk"
  let err = ""
  let receiver: Proc.ReceiverProcess | undefined
  let child: ChildProcess
  let uri: string
  try {
    if (server === "qemu-nbd") {
      const socket = path.join(dir, "nbd.sock")
      await fs.promises.writeFile(image, "")
      await fs.promises.truncate(image, options.size)
      const qemuNbd = find("qemu-nbd")
      if (qemuNbd === undefined) throw new Error("qemu-nbd not installed (Debian: qemu-utils)")
      child = spawn(
        qemuNbd,
        [
          "--format=raw",
          "--persistent",
          "--shared=16",
          "--discard=unmap",
          `--socket=${socket}`,
          `--export-name=${name}`,
          ...(options.readOnly === true ? ["--read-only"] : []),
          image
        ],
        { stdio: ["ignore", "ignore", "pipe"] }
      )
      child.stderr!.setEncoding("utf8").on("data", (s: string) => {
        err += s
      })
      await waitForSocket(() => net.connect(socket), child, "qemu-nbd")
      uri = `nbd+unix:///${name}?socket=${socket}`
    } else {
      await fs.promises.mkdir(receiverDir, { recursive: true })
      const target =
        options.receiver ?? (receiver = await Proc.start(receiverDir, ["--idle-timeout", "60000"]))
      child = spawn(
        process.execPath,
        [
          ...(options.nodeArgs ?? []),
          CLI,
          "serve",
          "--disk",
          image,
          "--disk-size",
          String(options.size),
          "--receiver",
          `${target.host}:${target.port}`,
          "--journal",
          path.join(dir, "journal"),
          ...(options.unixSocket === true
            ? ["--socket", path.join(dir, "nbd.sock")]
            : ["--listen", "127.0.0.1:0"]),
          "--export-name",
          name,
          "--disk-id",
          diskId,
          ...(options.readOnly === true ? ["--read-only"] : []),
          ...(options.serveArgs ?? [])
        ],
        { stdio: ["ignore", "pipe", "pipe"] }
      )
      child.stderr!.setEncoding("utf8").on("data", (s: string) => {
        err += s
      })
      let out = ""
      uri = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`serve not ready in 30 s; stderr:\n${err}`)), 30_000)
        child.stdout!.setEncoding("utf8").on("data", (s: string) => {
          out += s
          const m = /^listening (nbd\S*)$/m.exec(out)
          if (m !== null) {
            clearTimeout(timer)
            resolve(m[1]!)
          }
        })
        child.once("exit", (code, signal) => {
          clearTimeout(timer)
          reject(new Error(`serve exited (${code ?? signal}) before it was ready; stderr:\n${err}`))
        })
      })
    }
  } catch (e) {
    await receiver?.kill()
    if (ownDir) await fs.promises.rm(dir, { recursive: true, force: true })
    throw e
  }
  const exited = exitOf(child)
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    child.kill("SIGTERM")
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    const e = await exited
    clearTimeout(killer)
    // qemu-nbd may report the signal; cdp-sync serve must close cleanly.
    if (server === "cdp-sync" && e.code !== 0)
      throw new Error(`serve exited ${e.code ?? e.signal} on SIGTERM; stderr:\n${err.slice(-4000)}`)
  }
  return {
    server,
    uri,
    image,
    size: options.size,
    dir,
    receiverDir,
    receiver,
    stderr: () => err,
    stop,
    replica: async () => {
      if (server === "qemu-nbd") return undefined
      // `cdp-sync restore`'s own function, in-process: a CLI start costs seconds on a loaded machine.
      const out = path.join(dir, "restored.img")
      await Effect.runPromise(Restore.restore({ dir: receiverDir, diskId, at: "latest", out }))
      return { restored: await fs.promises.readFile(out), image: await fs.promises.readFile(image) }
    },
    dispose: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      await exited
      await receiver?.kill()
      if (ownDir) await fs.promises.rm(dir, { recursive: true, force: true })
    }
  }
}

/** The first offset where two buffers differ, or -1 (a readable failure beside `equals`). */
export const firstDifference = (a: Buffer, b: Buffer): number => {
  if (a.length !== b.length) return Math.min(a.length, b.length)
  if (a.equals(b)) return -1
  const step = 4096
  for (let at = 0; at < a.length; at += step)
    if (!a.subarray(at, at + step).equals(b.subarray(at, at + step)))
      for (let i = at; ; i++) if (a[i] !== b[i]) return i
  return -1
}

/**
 * Under `cdp-sync serve`: waits (the export idle) until the latest recovery point restored
 * from the receiver equals the image byte for byte — the filter replicates behind the
 * guest, so the receiver catches up after the last write — then stops the export
 * (SIGTERM) and checks it once more. Fails with the first differing byte if the replica
 * does not converge within `timeoutMs`. Returns the image.
 */
export const stopAndCompareReplica = async (exp: NbdExport, timeoutMs = 60_000): Promise<Buffer> => {
  if (exp.server === "cdp-sync") {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const replica = await exp.replica()
      const at = replica === undefined ? -1 : firstDifference(replica.restored, replica.image)
      if (at === -1) break
      if (Date.now() > deadline)
        throw new Error(
          `the restored latest point still differs from the image at byte ${at} after ${timeoutMs} ms`
        )
      await new Promise((r) => setTimeout(r, 250))
    }
  }
  await exp.stop()
  const replica = await exp.replica()
  if (replica === undefined) return fs.promises.readFile(exp.image)
  const at = firstDifference(replica.restored, replica.image)
  if (at !== -1)
    throw new Error(
      `after the stop the restored latest point differs from the image at byte ${at} (restored ${replica.restored.length} bytes, image ${replica.image.length})`
    )
  return replica.image
}

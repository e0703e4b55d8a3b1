/**
 * Child processes for the mount bench: start one and wait for its ready line on stdout
 * (`listening …`), stop it, drop files from the page cache.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
/** The built CLI (`npm run bench` builds it first). */
export const CLI = path.join(ROOT, "dist/cli/main.js")

export interface Child {
  readonly child: ChildProcess
  /** The ready line's match. */
  readonly ready: RegExpExecArray
  /** The end of what it wrote on stderr. */
  stderr(): string
  /** SIGTERM (then SIGKILL after `graceMs`) and wait for the exit. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<{ code: number | null; signal: string | null }>
}

const exitOf = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode })
    else child.once("exit", (code, signal) => resolve({ code, signal }))
  })

/**
 * Spawns `file args` and resolves once a line of its stdout matches `ready`; rejects with
 * the end of its stderr if it exits first or takes longer than `timeoutMs`.
 */
export const spawnReady = (
  file: string,
  args: ReadonlyArray<string>,
  ready: RegExp,
  options: { readonly timeoutMs?: number; readonly what?: string } = {}
): Promise<Child> =>
  new Promise((resolve, reject) => {
    const what = options.what ?? path.basename(file)
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT })
    let err = ""
    let out = ""
    let isReady = false
    child.stderr!.setEncoding("utf8").on("data", (s: string) => {
      err = (err + s).slice(-8000)
    })
    const exited = exitOf(child)
    const stop: Child["stop"] = async (signal = "SIGTERM", graceMs = 30_000) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      const killer = setTimeout(() => child.kill("SIGKILL"), graceMs)
      const e = await exited
      clearTimeout(killer)
      return e
    }
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`${what} not ready in ${options.timeoutMs ?? 30_000} ms; stderr:\n${err}`))
    }, options.timeoutMs ?? 30_000)
    child.stdout!.setEncoding("utf8").on("data", (s: string) => {
      if (isReady) return
      out += s
      const m = ready.exec(out)
      if (m !== null) {
        clearTimeout(timer)
        isReady = true
        resolve({ child, ready: m, stderr: () => err, stop })
      }
    })
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      if (!isReady)
        reject(new Error(`${what} exited (${code ?? signal}) before it was ready; stderr:\n${err}`))
    })
  })

/** Runs `file args` to completion; rejects with its stderr unless it exits 0. */
export const runChild = (
  file: string,
  args: ReadonlyArray<string>,
  options: { readonly timeoutMs?: number } = {}
): Promise<{ readonly stdout: string; readonly stderr: string }> =>
  new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT })
    let out = ""
    let err = ""
    child.stdout!.setEncoding("utf8").on("data", (s: string) => {
      out += s
    })
    child.stderr!.setEncoding("utf8").on("data", (s: string) => {
      err = (err + s).slice(-8000)
    })
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 600_000)
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      if (code === 0) resolve({ stdout: out, stderr: err })
      else
        reject(
          new Error(
            `${path.basename(file)} ${args.join(" ")} exited ${code ?? signal}\nstderr: ${err.slice(-3000)}`
          )
        )
    })
  })

/** Every regular file under `dir` (recursively). */
export const filesUnder = (dir: string): Array<string> =>
  fs
    .readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((d) => d.isFile())
    .map((d) => path.join(d.parentPath, d.name))

/**
 * Drops `files` (and every file under the directories among them) from the page cache:
 * `dd iflag=nocache count=0` asks the kernel to forget the file's clean pages
 * (POSIX_FADV_DONTNEED), without root and without touching anyone else's cache. A file
 * must be fsynced first (its dirty pages stay), which every writer here does.
 */
export const evict = async (paths: ReadonlyArray<string>): Promise<void> => {
  for (const p of paths) {
    if (!fs.existsSync(p)) continue
    const files = fs.statSync(p).isDirectory() ? filesUnder(p) : [p]
    for (const f of files) await runChild("dd", [`if=${f}`, "iflag=nocache", "count=0", "status=none"])
  }
}

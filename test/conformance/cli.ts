/**
 * Runs `cdp-sync` commands: the real binary as a child process (`cdpSync`), or the
 * same command line in-process (`cdpSyncInProcess`: the `cli` of
 * src/cli/cli.ts with its console captured; no process start-up, so most
 * cases can run there and a representative few through the binary).
 *
 * The binary runs the build output (`dist/`); `ensureBuilt` compiles it first when
 * it is missing or older than the sources (CI's `npm ci` builds it already). Test
 * files run in parallel forks, so the build is guarded by a lock directory.
 */
import { execFile, execFileSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { NodeContext } from "@effect/platform-node"
import { Effect } from "effect"
import { vi } from "vitest"
import { cli } from "../../src/cli/cli.js"

export const root = fileURLToPath(new URL("../..", import.meta.url))
const main = join(root, "dist/cli/main.js")
const lock = join(root, "dist/.check-trace-tests.lock")

const newestSource = (dir: string): number => {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path))
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, statSync(path).mtimeMs)
  }
  return newest
}

const mtime = (path: string): number | undefined => {
  try {
    return statSync(path).mtimeMs
  } catch {
    return undefined
  }
}

const fresh = (): boolean => {
  const built = mtime(main)
  return built !== undefined && built >= newestSource(join(root, "src"))
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Builds `dist/` with tsc unless it is up to date; waits if another test file is building it. */
export const ensureBuilt = async (): Promise<void> => {
  for (let waited = 0; !fresh(); waited += 250) {
    mkdirSync(join(root, "dist"), { recursive: true })
    let owner = false
    try {
      mkdirSync(lock)
      owner = true
    } catch {
      // Someone else is building; a lock older than two minutes was left by a dead process.
      const since = mtime(lock)
      if (since !== undefined && Date.now() - since > 120_000) rmSync(lock, { recursive: true, force: true })
    }
    if (owner) {
      try {
        // tsc exits non-zero on type errors elsewhere in the tree but still emits.
        execFileSync(
          process.execPath,
          [join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"],
          {
            cwd: root,
            stdio: "ignore"
          }
        )
      } catch {
        // judged below by the output's presence
      } finally {
        rmSync(lock, { recursive: true, force: true })
      }
      if (mtime(main) === undefined) throw new Error("npx tsc -p tsconfig.build.json did not produce dist/")
      return
    }
    if (waited > 110_000) throw new Error(`timed out waiting for another build (${lock})`)
    await sleep(250)
  }
}

export interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** `node bin/cdp-sync.js ...args`, with `input` on standard input. */
export const cdpSync = (args: ReadonlyArray<string>, input?: string): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child = execFile(
      process.execPath,
      [join(root, "bin/cdp-sync.js"), ...args],
      { cwd: root, timeout: 30_000, maxBuffer: 16 << 20 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : undefined
        if (code === undefined) reject(error)
        else resolve({ code, stdout, stderr })
      }
    )
    // A command may stop reading early (check-trace at a line over its cap): not an error here.
    child.stdin?.on("error", () => undefined)
    child.stdin?.end(input ?? "")
  })

let queue: Promise<unknown> = Promise.resolve()

/**
 * The command line in-process: the console and `process.exitCode` are global, so
 * runs are queued one at a time. Exit code 1 also when the command itself fails.
 */
export const cdpSyncInProcess = (args: ReadonlyArray<string>): Promise<Run> => {
  const run = async (): Promise<Run> => {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const log = vi.spyOn(console, "log").mockImplementation((...a: Array<unknown>) => {
      stdout.push(`${a.join(" ")}\n`)
    })
    const error = vi.spyOn(console, "error").mockImplementation((...a: Array<unknown>) => {
      stderr.push(`${a.join(" ")}\n`)
    })
    const saved = process.exitCode
    process.exitCode = undefined
    let code: number
    try {
      await Effect.runPromise(cli(["node", "cdp-sync", ...args]).pipe(Effect.provide(NodeContext.layer)))
      code = Number(process.exitCode ?? 0)
    } catch (e) {
      stderr.push(String(e))
      code = 1
    } finally {
      process.exitCode = saved
      log.mockRestore()
      error.mockRestore()
    }
    return { code, stdout: stdout.join(""), stderr: stderr.join("") }
  }
  const next = queue.then(run, run)
  queue = next.catch(() => undefined)
  return next
}

/** A temporary directory for trace files, removed by the returned cleanup. */
export const tempDir = (): {
  readonly dir: string
  readonly write: (name: string, text: string) => string
  readonly remove: () => void
} => {
  const dir = mkdtempSync(join(tmpdir(), "cdp-sync-conformance-"))
  return {
    dir,
    write: (name, text) => {
      const path = join(dir, name)
      writeFileSync(path, text)
      return path
    },
    remove: () => rmSync(dir, { recursive: true, force: true })
  }
}

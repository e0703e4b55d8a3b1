/**
 * A recovery point mounted over NBD for the tests: in-process (`Mount.serve` on a unix
 * socket, for the cases where many points are mounted) or as the built CLI (`cdp-sync
 * mount`, waiting for its `listening` line or its `--json` object).
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { Effect, Logger } from "effect"
import * as Mount from "../../src/receiver/Mount.js"

const CLI = path.resolve(import.meta.dirname, "../../dist/cli/main.js")

/** Log lines written while a mount ran in-process, as `LEVEL message annotations`. */
export const logged: Array<string> = []
const capture = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ logLevel, message, annotations }) => {
    const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
    const extra = [...annotations].map(([k, v]) => `${k}=${String(v)}`).join(" ")
    logged.push(`${logLevel.label} ${text} ${extra}`)
  })
)

/**
 * Mounts `at` of `dir` in-process on a unix socket in `socketDir` and runs `use` with the
 * export's URI and the mount; the mount closes after.
 */
export const withMount = <A>(
  options: {
    readonly dir: string
    readonly diskId?: string
    readonly at: Mount.At
    readonly socketDir: string
  },
  use: (uri: string, mounted: Mount.Mounted) => Promise<A>
): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const { mounted, server } = yield* Mount.serve({
          dir: options.dir,
          diskId: options.diskId,
          at: options.at,
          listen: { path: path.join(options.socketDir, `mount-${process.pid}.sock`) }
        })
        return yield* Effect.promise(() => use(server.uri, mounted))
      })
    ).pipe(Effect.provide(capture))
  )

export interface MountProcess {
  readonly child: ChildProcess
  /** The first line on stdout: `listening nbd…` or the `--json` object. */
  readonly line: string
  /** The URI clients connect to. */
  readonly uri: string
  stderr(): string
  /** SIGTERM and the exit. */
  stop(): Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

/** Starts `cdp-sync mount …args` and waits for its first line on stdout (30 s). */
export const mountCli = async (args: ReadonlyArray<string>): Promise<MountProcess> => {
  const child = spawn(process.execPath, [CLI, "mount", ...args], { stdio: ["ignore", "pipe", "pipe"] })
  let err = ""
  let out = ""
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    err += s
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mount not ready in 30 s; stderr:\n${err}`)), 30_000)
    child.stdout!.setEncoding("utf8").on("data", (s: string) => {
      out += s
      const end = out.indexOf("\n")
      if (end >= 0) {
        clearTimeout(timer)
        resolve(out.slice(0, end))
      }
    })
    void exited.then((e) => {
      clearTimeout(timer)
      reject(new Error(`mount exited (${e.code ?? e.signal}) before it was ready; stderr:\n${err}`))
    })
  })
  const uri = line.startsWith("{")
    ? (JSON.parse(line) as { uri: string }).uri
    : line.replace(/^listening /, "")
  return {
    child,
    line,
    uri,
    stderr: () => err,
    stop: async () => {
      child.kill("SIGTERM")
      const killer = setTimeout(() => child.kill("SIGKILL"), 30_000)
      const e = await exited
      clearTimeout(killer)
      return e
    }
  }
}

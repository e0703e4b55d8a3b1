/**
 * A recovery point mounted over NBD for the tests: in-process (`Nbd.serveMount` on a unix
 * socket, for the cases where many points are mounted) or as the built CLI (`cdp-sync
 * mount`, waiting for its `listening` line or its `--json` object).
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { Effect, Either, Logger } from "effect"
import { Nbd } from "../../src/nbd/index.js"
import type * as Mount from "../../src/receiver/Mount.js"

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
  use: (uri: string, mounted: Mount.Mounted, client: Reader) => Promise<A>
): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const socket = path.join(options.socketDir, `mount-${process.pid}.sock`)
        const { mounted, server } = yield* Nbd.serveMount({
          dir: options.dir,
          diskId: options.diskId,
          at: options.at,
          listen: { path: socket }
        })
        const connect = { connect: { path: socket }, exportName: server.exportName }
        const read = (offset: number, length: number) =>
          Effect.runPromise(Effect.either(Nbd.withClient(connect, (c) => c.read(offset, length))))
        const readAll = async () => {
          const image = Buffer.alloc(mounted.bytes)
          for (let at = 0; at < mounted.bytes; at += PIECE) {
            const piece = await read(at, Math.min(PIECE, mounted.bytes - at))
            if (Either.isLeft(piece)) throw piece.left
            image.set(piece.right, at)
          }
          return image
        }
        return yield* Effect.promise(() => use(server.uri, mounted, { read, readAll }))
      })
    ).pipe(Effect.provide(capture))
  )

const PIECE = 256 * 1024

/** A client of the mount: one connection per call. */
export interface Reader {
  /** A READ: its bytes, or how it failed (`NbdCommandFailed` with the NBD error). */
  read(offset: number, length: number): Promise<Either.Either<Uint8Array, Nbd.ClientError>>
  /** The whole disk, read in pieces. */
  readAll(): Promise<Buffer>
}

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

/** Runs `cdp-sync mount …args` to its exit (a refusal exits before it listens; 30 s at most). */
export const mountCliToExit = (
  args: ReadonlyArray<string>
): Promise<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }> =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, "mount", ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout!.setEncoding("utf8").on("data", (s: string) => {
      stdout += s
    })
    child.stderr!.setEncoding("utf8").on("data", (s: string) => {
      stderr += s
    })
    const killer = setTimeout(() => child.kill("SIGKILL"), 30_000)
    child.once("close", (code) => {
      clearTimeout(killer)
      resolve({ code, stdout, stderr })
    })
  })

/**
 * The log receiver as a child process, for the simulator and the tests: start it,
 * wait for its ready line, SIGKILL it, start it again on the same port.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Data, Effect, type Scope } from "effect"

export class ReceiverProcessError extends Data.TaggedError("ReceiverProcessError")<{
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message() {
    return `log receiver process: ${this.detail}`
  }
}

/** The built CLI entry (dist/cli/main.js), next to this module once compiled. */
export const cliEntry = (): string => {
  // From dist/simulator/internal/ as a library module; from dist/cli/ inside the bundled
  // command line (scripts/bundle-cli.mjs), where this code runs from main.js itself.
  const here = fileURLToPath(import.meta.url)
  return path.basename(path.dirname(here)) === "cli"
    ? here
    : fileURLToPath(new URL("../../cli/main.js", import.meta.url))
}

export interface ReceiverProcess {
  readonly port: number
  readonly pid: () => number | undefined
  /**
   * SIGKILL, then start again on the same port and wait until it listens: one
   * uninterruptible step, so a run that ends meanwhile never finds the receiver dead.
   */
  readonly killAndRestart: Effect.Effect<void, ReceiverProcessError>
  readonly kill: Effect.Effect<void>
  readonly start: Effect.Effect<void, ReceiverProcessError>
}

export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** A receiver that printed its ready line. */
export interface Launched {
  readonly child: ChildProcess
  readonly host: string
  readonly port: number
  /** Resolves when the process has exited. */
  readonly exited: Promise<Exited>
  /** What it wrote so far (with `keepOutput`; else only the last 4000 characters of stderr). */
  readonly stdout: () => string
  readonly stderr: () => string
}

const READY = /^listening (\S+):(\d+)$/m
const TAIL = 4000

/**
 * Spawns `node ENTRY …args` (the CLI's `receiver` command) and waits for its ready line,
 * `listening HOST:PORT`. Fails (with the end of its stderr) if it exits first or takes
 * longer than `timeoutMs`; interrupted before the ready line, it kills the child.
 */
export const launch = (
  entry: string | ReadonlyArray<string>,
  args: ReadonlyArray<string>,
  options: { readonly timeoutMs?: number; readonly keepOutput?: boolean; readonly cwd?: string } = {}
) =>
  Effect.async<Launched, ReceiverProcessError>((resume) => {
    const child = spawn(process.execPath, [...(typeof entry === "string" ? [entry] : entry), ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      ...(options.cwd === undefined ? {} : { cwd: options.cwd })
    })
    const out = { stdout: "", stderr: "" }
    const keep = options.keepOutput === true
    const exited = new Promise<Exited>((done) => child.once("exit", (code, signal) => done({ code, signal })))
    const timeoutMs = options.timeoutMs ?? 20_000
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      resume(
        Effect.fail(
          new ReceiverProcessError({
            detail: `no ready line within ${timeoutMs / 1000} s; stderr: ${out.stderr.slice(-500)}`
          })
        )
      )
    }, timeoutMs)
    child.stderr!.setEncoding("utf8")
    child.stderr!.on("data", (chunk: string) => {
      out.stderr = keep ? out.stderr + chunk : (out.stderr + chunk).slice(-TAIL)
    })
    child.stdout!.setEncoding("utf8")
    const ready = (chunk: string) => {
      out.stdout += chunk
      const m = READY.exec(out.stdout)
      if (m === null) return
      clearTimeout(timer)
      child.stdout!.off("data", ready)
      if (keep)
        child.stdout!.on("data", (more: string) => {
          out.stdout += more
        })
      else child.stdout!.resume()
      resume(
        Effect.succeed({
          child,
          host: m[1]!,
          port: Number(m[2]),
          exited,
          stdout: () => out.stdout,
          stderr: () => out.stderr
        })
      )
    }
    child.stdout!.on("data", ready)
    void exited.then((e) => {
      clearTimeout(timer)
      resume(
        Effect.fail(
          new ReceiverProcessError({
            detail: `exited (${e.code ?? e.signal}) before listening; stderr: ${out.stderr.slice(-500)}`
          })
        )
      )
    })
    // Interrupted before the ready line (e.g. the run ends during a restart): no orphan.
    return Effect.sync(() => {
      clearTimeout(timer)
      child.kill("SIGKILL")
    })
  })

export const make = (options: {
  readonly dir: string
  readonly port?: number
  readonly entry?: string
}): Effect.Effect<ReceiverProcess, ReceiverProcessError, Scope.Scope> =>
  Effect.gen(function* () {
    const entry = options.entry ?? cliEntry()
    let child: ChildProcess | undefined
    let port = options.port ?? 0
    const start = Effect.gen(function* () {
      const launched = yield* launch(entry, ["receiver", "--dir", options.dir, "--port", String(port)])
      child = launched.child
      port = launched.port
    })
    const kill = Effect.async<void>((resume) => {
      const c = child
      child = undefined
      if (c === undefined || c.exitCode !== null || c.signalCode !== null) return resume(Effect.void)
      c.once("exit", () => resume(Effect.void))
      c.kill("SIGKILL")
    })
    yield* start
    yield* Effect.addFinalizer(() => kill)
    // If this process dies without running finalizers (an uncaught error, a broken pipe),
    // do not leave the receiver behind.
    const orphanGuard = () => child?.kill("SIGKILL")
    process.once("exit", orphanGuard)
    yield* Effect.addFinalizer(() => Effect.sync(() => process.removeListener("exit", orphanGuard)))
    return {
      get port() {
        return port
      },
      pid: () => child?.pid,
      kill,
      start,
      // An interruption waits for the restart: between the kill and the ready line it would
      // leave no receiver (and one during the launch would kill the new one).
      killAndRestart: Effect.uninterruptible(Effect.zipRight(kill, Effect.retry(start, { times: 20 })))
    } satisfies ReceiverProcess
  })

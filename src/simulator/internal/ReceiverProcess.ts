/**
 * The log receiver as a child process, for the simulator and the tests: start it,
 * wait for its ready line, SIGKILL it, start it again on the same port.
 */
import { type ChildProcess, spawn } from "node:child_process"
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
export const cliEntry = (): string => fileURLToPath(new URL("../../cli/main.js", import.meta.url))

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

const launch = (entry: string, args: ReadonlyArray<string>) =>
  Effect.async<{ child: ChildProcess; port: number }, ReceiverProcessError>((resume) => {
    const child = spawn(process.execPath, [entry, ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      resume(
        Effect.fail(
          new ReceiverProcessError({ detail: `no ready line within 20 s; stderr: ${err.slice(-500)}` })
        )
      )
    }, 20_000)
    child.stdout!.setEncoding("utf8")
    child.stdout!.on("data", (chunk: string) => {
      out += chunk
      const m = /listening\s+[\d.:[\]a-f]*?:(\d+)/i.exec(out)
      if (m !== null) {
        clearTimeout(timer)
        child.stdout!.removeAllListeners("data")
        child.stdout!.resume()
        resume(Effect.succeed({ child, port: Number(m[1]) }))
      }
    })
    child.stderr!.setEncoding("utf8")
    child.stderr!.on("data", (chunk: string) => {
      err = (err + chunk).slice(-4000)
    })
    child.once("exit", (code) => {
      clearTimeout(timer)
      resume(
        Effect.fail(
          new ReceiverProcessError({
            detail: `exited with ${code} before listening; stderr: ${err.slice(-500)}`
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

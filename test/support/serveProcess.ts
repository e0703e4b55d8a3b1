/**
 * `cdp-sync serve` (the built CLI) as a child process for the command-line tests: spawn it,
 * collect what it writes, wait for its ready line (`listening nbd://HOST:PORT/NAME`), and
 * register its SIGKILL with the test's cleanup list.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"

const CLI = path.resolve(import.meta.dirname, "../../dist/cli/main.js")

export interface Served {
  readonly child: ChildProcess
  /** The NBD port of its ready line. */
  readonly port: number
  readonly exited: Promise<{ readonly code: number | null }>
  readonly out: { stdout: string; stderr: string }
}

/** Starts `serve …args` (give `--listen 127.0.0.1:0`); rejects with its stderr if it exits before it is ready. */
export const startServe = async (
  args: ReadonlyArray<string>,
  cleanup: Array<() => Promise<unknown>>
): Promise<Served> => {
  const child: ChildProcess = spawn(process.execPath, [CLI, "serve", ...args], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  const out = { stdout: "", stderr: "" }
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (out.stdout += s))
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (out.stderr += s))
  const exited = new Promise<{ code: number | null }>((resolve) =>
    child.once("exit", (code) => resolve({ code }))
  )
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    await exited
  })
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.on("data", () => {
      const m = /^listening nbd:\/\/[^:]+:(\d+)\//m.exec(out.stdout)
      if (m !== null) resolve(Number(m[1]))
    })
    void exited.then((e) => reject(new Error(`serve exited (${e.code}) before ready:\n${out.stderr}`)))
  })
  return { child, port, exited, out }
}

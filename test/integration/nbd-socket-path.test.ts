/**
 * `--socket PATH` when PATH already exists, as qemu-nbd and nbdkit treat it: a socket a
 * killed run left (a real process, SIGKILLed while listening) is removed and served on;
 * a socket something listens on is refused (`ListenFailed`, `in-use`) and keeps
 * answering; a path that is not a socket is refused (`not-a-socket`) and left byte for
 * byte. A clean close removes the server's own socket. The CLI says so on stderr, exit 1.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as Net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Either, type Scope } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { VirtualDisk } from "../../src/adapters/VirtualDisk.js"
import * as Nbd from "../../src/nbd/Nbd.js"
import { Replicator } from "../../src/replicator/Replicator.js"
import { make, pattern } from "../support/nbdHarness.js"

const CLI = path.resolve(import.meta.dirname, "../../dist/cli/main.js")
const dirs: Array<string> = []
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})
const socketPath = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-sync-nbd-path-"))
  dirs.push(dir)
  return path.join(dir, "nbd.sock")
}

const run = <A>(use: Effect.Effect<A, unknown, Scope.Scope>): Promise<A> =>
  Effect.runPromise(Effect.scoped(use))

/** A process that listens on `at` and is SIGKILLed: its socket file stays behind. */
const staleSocket = async (at: string) => {
  const child = spawn(
    process.execPath,
    ["-e", `require("node:net").createServer().listen(${JSON.stringify(at)}, () => console.log("up"))`],
    { stdio: ["ignore", "pipe", "inherit"] }
  )
  await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()))
  const exited = new Promise((resolve) => child.once("exit", resolve))
  child.kill("SIGKILL")
  await exited
  expect(fs.lstatSync(at).isSocket()).toBe(true)
}

/** Serves on `at` through the harness's replicator; the outcome of listening. */
const serveOn = (at: string) =>
  Effect.gen(function* () {
    const h = yield* make()
    return yield* Effect.either(
      Effect.scoped(
        Effect.gen(function* () {
          const server = yield* Nbd.serve({ listen: { path: at }, exportName: "x" }).pipe(
            Effect.provideService(Replicator, h.replicator),
            Effect.provideService(VirtualDisk, h.disk)
          )
          // It serves: a write through it reads back.
          const back = yield* Nbd.withClient({ connect: { path: at }, exportName: "x" }, (c) =>
            Effect.zipRight(c.write(4096, pattern(1, 4096, 4096), { fua: true }), c.read(4096, 4096))
          )
          expect(Buffer.compare(Buffer.from(back), Buffer.from(pattern(1, 4096, 4096)))).toBe(0)
          return server.uri
        })
      )
    )
  })

describe("serving on a unix socket path that exists", () => {
  it("a killed run's socket (nothing listens) is removed and served on; a clean close removes it", async () => {
    const at = socketPath()
    await staleSocket(at)
    const outcome = await run(serveOn(at))
    expect(Either.isRight(outcome) ? outcome.right : outcome.left).toBe(`nbd+unix:///x?socket=${at}`)
    expect(fs.existsSync(at)).toBe(false)
  })

  it("a socket something listens on is refused (in-use), and the other server keeps it", async () => {
    const at = socketPath()
    const other = Net.createServer((s) => {
      s.on("error", () => {}) // our probe hangs up at once
      s.end("other\n")
    })
    await new Promise<void>((resolve) => other.listen(at, resolve))
    try {
      const outcome = await run(serveOn(at))
      expect(Either.isLeft(outcome) && outcome.left._tag === "ListenFailed" && outcome.left.reason).toBe(
        "in-use"
      )
      expect(Either.isLeft(outcome) && outcome.left.message).toContain(at)
      const said = await new Promise<string>((resolve) => {
        const s = Net.createConnection({ path: at })
        let text = ""
        s.on("data", (d) => (text += d.toString()))
        s.on("close", () => resolve(text))
      })
      expect(said).toBe("other\n")
    } finally {
      await new Promise((resolve) => other.close(resolve))
    }
  })

  it("a path that is not a socket is refused (not-a-socket) and left alone", async () => {
    const at = socketPath()
    fs.writeFileSync(at, "precious")
    const outcome = await run(serveOn(at))
    expect(Either.isLeft(outcome) && outcome.left._tag === "ListenFailed" && outcome.left.reason).toBe(
      "not-a-socket"
    )
    expect(fs.readFileSync(at, "utf8")).toBe("precious")
  })

  it("the CLI: exit 1 with one line naming the path; the file is left alone", async () => {
    const at = socketPath()
    fs.writeFileSync(at, "precious")
    const dir = path.dirname(at)
    const child = spawn(
      process.execPath,
      [
        CLI,
        "serve",
        "--disk",
        path.join(dir, "disk.img"),
        "--disk-size",
        "1MiB",
        "--journal",
        path.join(dir, "journal"),
        "--receiver",
        "127.0.0.1:9",
        "--socket",
        at
      ],
      { stdio: ["ignore", "pipe", "pipe"] }
    )
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s))
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s))
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve))
    expect({ code, stdout }).toEqual({ code: 1, stdout: "" })
    expect(stderr).toContain(`cannot listen on ${at}: it exists and is not a socket`)
    expect(fs.readFileSync(at, "utf8")).toBe("precious")
  })
})

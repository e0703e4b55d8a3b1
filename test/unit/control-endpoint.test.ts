/**
 * The control endpoint (src/internal/control.ts) over a real unix socket: line-delimited
 * JSON requests decoded with Schema; a bad request gets an error reply and the
 * connection keeps working; an oversize one gets `RequestTooLarge` and its connection
 * closes while other clients keep working; clients beyond the bound get `Busy`; the
 * socket file is removed when the scope closes; a stale socket (its process killed) is
 * replaced, a live endpoint or a file that is not a socket is never touched.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs/promises"
import * as Net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit, Scope } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Control from "../../src/internal/control.js"
import {
  MAX_REQUEST_BYTES,
  type Report,
  type VerifyReport,
  type VerifyRequest
} from "../../src/internal/controlProtocol.js"

const report: Report = { role: "receiver", pid: 1, at: new Date(0).toISOString(), disks: [] }

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

const tempDir = async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "ctl-"))
  cleanup.push(() => fs.rm(dir, { recursive: true, force: true }))
  return dir
}

/** Starts an endpoint in a scope the test closes (or `afterEach` does). */
const start = async (socket: string, options: Partial<Control.EndpointOptions> = {}) => {
  const scope = Effect.runSync(Scope.make())
  const close = () => Effect.runPromise(Scope.close(scope, Exit.void))
  cleanup.push(close)
  const exit = await Effect.runPromise(
    Effect.exit(
      Scope.extend(Control.serve({ path: socket, status: Effect.succeed(report), ...options }), scope)
    )
  )
  return { exit, close }
}

/** A raw client: send text, read reply lines, see the close. */
const client = (socket: string) =>
  new Promise<{
    send: (text: string) => void
    next: () => Promise<unknown>
    closed: Promise<void>
    destroy: () => void
  }>((resolve, reject) => {
    const s = Net.createConnection({ path: socket })
    let buffered = ""
    const lines: Array<string> = []
    const waiting: Array<(line: string) => void> = []
    const closed = new Promise<void>((r) => s.once("close", () => r()))
    s.setEncoding("utf8")
    s.on("error", () => {})
    s.on("data", (chunk: string) => {
      buffered += chunk
      for (let i = buffered.indexOf("\n"); i >= 0; i = buffered.indexOf("\n")) {
        const line = buffered.slice(0, i)
        buffered = buffered.slice(i + 1)
        const w = waiting.shift()
        if (w === undefined) lines.push(line)
        else w(line)
      }
    })
    cleanup.push(async () => s.destroy())
    s.once("connect", () =>
      resolve({
        send: (text) => s.write(text),
        next: () =>
          new Promise<unknown>((r) => {
            const line = lines.shift()
            if (line !== undefined) r(JSON.parse(line))
            else waiting.push((l) => r(JSON.parse(l)))
          }),
        closed,
        destroy: () => s.destroy()
      })
    )
    s.once("error", reject)
  })

describe("the control endpoint", () => {
  it("answers status requests; bad ones get an error reply and the connection keeps working", async () => {
    const socket = path.join(await tempDir(), "control.sock")
    expect((await start(socket)).exit._tag).toBe("Success")
    const c = await client(socket)
    c.send('{"op":"status"}\n')
    expect(await c.next()).toEqual({ status: report })
    for (const bad of ["not json", '{"op":"reboot"}', "[1,2]", '{"op":"status","x":', "null"]) {
      c.send(`${bad}\n`)
      const reply = (await c.next()) as { error: { _tag: string; message: string } }
      expect(reply.error._tag, bad).toBe("BadRequest")
      expect(reply.error.message.length).toBeGreaterThan(0)
    }
    // Pipelined requests, some split across writes, each answered in order.
    c.send('{"op":"status"}\n\n{"op":')
    c.send('"status"}\n')
    expect(await c.next()).toEqual({ status: report })
    expect(await c.next()).toEqual({ status: report })
    // The library's client decodes the reply with the same schema.
    expect(await Effect.runPromise(Control.request(socket))).toEqual({ status: report })
  })

  it("an oversize request gets RequestTooLarge and its connection closes; other clients keep working", async () => {
    const socket = path.join(await tempDir(), "control.sock")
    await start(socket)
    const other = await client(socket)
    const big = await client(socket)
    // A request of exactly the bound is still answered.
    big.send(`${" ".repeat(MAX_REQUEST_BYTES - 15)}{"op":"status"}\n`)
    expect(await big.next()).toEqual({ status: report })
    big.send("x".repeat(MAX_REQUEST_BYTES + 1))
    expect(((await big.next()) as { error: { _tag: string } }).error._tag).toBe("RequestTooLarge")
    await big.closed
    // Without a line end at all: refused as soon as the bound is passed.
    const endless = await client(socket)
    endless.send("y".repeat(64 * 1024))
    expect(((await endless.next()) as { error: { _tag: string } }).error._tag).toBe("RequestTooLarge")
    await endless.closed
    other.send('{"op":"status"}\n')
    expect(await other.next()).toEqual({ status: report })
  })

  it("beyond maxClients a client gets Busy; a slot frees when a client leaves", async () => {
    const socket = path.join(await tempDir(), "control.sock")
    await start(socket, { maxClients: 2 })
    const a = await client(socket)
    await client(socket)
    const third = await client(socket)
    expect(((await third.next()) as { error: { _tag: string } }).error._tag).toBe("Busy")
    await third.closed
    a.destroy()
    await a.closed
    // The server sees the close a moment later: ask until a slot is free.
    for (let i = 0; ; i++) {
      const reply = await Effect.runPromise(Control.request(socket))
      if ("status" in reply) break
      expect(i).toBeLessThan(100)
      await new Promise((r) => setTimeout(r, 20))
    }
  })

  it("removes its socket file when the scope closes, and closes its clients", async () => {
    const socket = path.join(await tempDir(), "control.sock")
    const { close } = await start(socket)
    const c = await client(socket)
    expect((await fs.lstat(socket)).isSocket()).toBe(true)
    await close()
    await c.closed
    await expect(fs.lstat(socket)).rejects.toThrow(/ENOENT/)
    const unreachable = await Effect.runPromise(Effect.flip(Control.request(socket)))
    expect(unreachable._tag).toBe("ControlUnreachable")
    expect(unreachable.message).toContain("ENOENT")
  })

  it("replaces the socket a killed process left; never a live endpoint nor a file that is not a socket", async () => {
    const dir = await tempDir()
    const stale = path.join(dir, "stale.sock")
    // A process that listens, then is killed: its socket file stays, nobody answers.
    const child = spawn(
      process.execPath,
      ["-e", `require("net").createServer().listen(${JSON.stringify(stale)}, () => console.log("up"))`],
      { stdio: ["ignore", "pipe", "inherit"] }
    )
    await new Promise<void>((r) => child.stdout.once("data", () => r()))
    child.kill("SIGKILL")
    await new Promise((r) => child.once("exit", r))
    expect((await fs.lstat(stale)).isSocket()).toBe(true)
    expect((await start(stale)).exit._tag).toBe("Success")
    expect(await Effect.runPromise(Control.request(stale))).toEqual({ status: report })

    // A second endpoint on the live one's socket is refused; the first keeps answering.
    const second = await start(stale)
    expect(second.exit._tag).toBe("Failure")
    expect(String(Exit.isFailure(second.exit) && second.exit.cause)).toContain("another process answers")
    expect(await Effect.runPromise(Control.request(stale))).toEqual({ status: report })

    const plain = path.join(dir, "plain.sock")
    await fs.writeFile(plain, "operator's notes\n")
    const onFile = await start(plain)
    expect(onFile.exit._tag).toBe("Failure")
    expect(String(Exit.isFailure(onFile.exit) && onFile.exit.cause)).toContain("not a socket")
    expect(await fs.readFile(plain, "utf8")).toBe("operator's notes\n")

    const long = path.join(dir, "x".repeat(120), "control.sock")
    const tooLong = await start(long)
    expect(String(Exit.isFailure(tooLong.exit) && tooLong.exit.cause)).toContain("--control")
  })
})

describe("online verify over the control endpoint", () => {
  const verifyReport = (resync: boolean): VerifyReport => ({
    disk: "d",
    blockSize: 65536,
    blocks: 16,
    verified: 16,
    differing: 1,
    ranges: [{ first: 3, count: 1 }],
    rangesOmitted: 0,
    rechecked: 0,
    unverified: 0,
    resync,
    seconds: 0.01,
    bytesPerSecond: 1e8
  })

  it("streams progress lines, then the report; the request's options reach the handler", async () => {
    const socket = path.join(await tempDir(), "control.sock")
    const asked: Array<VerifyRequest> = []
    await start(socket, {
      verify: (request, progress) =>
        Effect.gen(function* () {
          asked.push(request)
          for (let verified = 4; verified <= 16; verified += 4)
            yield* progress({ blocks: 16, verified, differing: verified >= 4 ? 1 : 0, bytesPerSecond: 1e8 })
          return verifyReport(request.resync === true)
        })
    })
    const seen: Array<number> = []
    const result = await Effect.runPromise(
      Control.verify(socket, { resync: true, bytesPerSecond: 1e6 }, (p) => seen.push(p.verified))
    )
    expect(result).toEqual(verifyReport(true))
    expect(seen).toEqual([4, 8, 12, 16])
    expect(asked).toEqual([{ op: "verify", resync: true, bytesPerSecond: 1e6 }])
    // A status request on the same endpoint still answers.
    expect(await Effect.runPromise(Control.request(socket))).toEqual({ status: report })
  })

  it("an endpoint that does not verify refuses; a failed verify is VerifyFailed with its reason; a bad rate is BadRequest", async () => {
    const plain = path.join(await tempDir(), "plain.sock")
    await start(plain)
    const refused = await Effect.runPromise(Effect.flip(Control.verify(plain, {}, () => {})))
    expect(refused).toMatchObject({ _tag: "VerifyFailed" })
    expect(refused.message).toMatch(/does not verify/)
    const failing = path.join(await tempDir(), "failing.sock")
    await start(failing, {
      verify: () => Effect.fail(new Control.VerifyFailed({ detail: "the link is down" }))
    })
    const failed = await Effect.runPromise(Effect.flip(Control.verify(failing, {}, () => {})))
    expect(failed).toMatchObject({ _tag: "VerifyFailed", detail: "the link is down" })
    const c = await client(failing)
    c.send('{"op":"verify","bytesPerSecond":-5}\n')
    expect(await c.next()).toMatchObject({ error: { _tag: "BadRequest" } })
  })

  it("a client that goes away interrupts the verify it asked for", async () => {
    const socket = path.join(await tempDir(), "control.sock")
    let interrupted = false
    let started = false
    await start(socket, {
      verify: () =>
        Effect.gen(function* () {
          started = true
          return yield* Effect.never
        }).pipe(
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              interrupted = true
            })
          )
        )
    })
    const c = await client(socket)
    c.send('{"op":"verify"}\n')
    while (!started) await new Promise((r) => setTimeout(r, 5))
    c.destroy()
    for (let i = 0; i < 400 && !interrupted; i++) await new Promise((r) => setTimeout(r, 5))
    expect(interrupted).toBe(true)
  })
})

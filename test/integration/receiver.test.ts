/**
 * The log receiver service as a child process on loopback: the handshake and acks,
 * duplicates, gaps and resync markers, corrupt and oversized frames, refusals, and the
 * `points` / `restore` commands.
 */
import * as fs from "node:fs"
import * as Net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, Effect, Exit, Option, Stream } from "effect"
import { afterAll, afterEach, describe, expect, it } from "vitest"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as Wire from "../../src/protocol/Wire.js"
import * as Restore from "../../src/receiver/Restore.js"
import * as Proc from "../support/receiverProcess.js"

const dirs: Array<string> = []
const running: Array<Proc.ReceiverProcess> = []
const tempDir = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-receiver-"))
  dirs.push(dir)
  return dir
}
const start = async (dir: string, extra: ReadonlyArray<string> = []) => {
  const receiver = await Proc.start(dir, extra)
  running.push(receiver)
  return receiver
}
afterEach(async () => {
  for (const r of running.splice(0)) await r.kill()
})
afterAll(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})

const geometry = { blockSize: 4096, blockCount: 64 }
const hello = (diskId: string, watermark = 0): LogReceiver.Hello => ({ diskId, ...geometry, watermark })
const write = (seq: number, offset: number, fill: number, length = 1000): Wire.Write => ({
  _tag: "Write",
  seq,
  epoch: 0,
  offset,
  data: new Uint8Array(length).fill(fill)
})

/** A raw TCP client: writes bytes, collects the decoded frames, tells when the receiver closed. */
const raw = (receiver: Proc.ReceiverProcess) =>
  new Promise<{
    readonly socket: Net.Socket
    readonly frames: Array<Wire.Frame>
    readonly closed: Promise<void>
    readonly next: (count: number) => Promise<Array<Wire.Frame>>
  }>((resolve, reject) => {
    const socket = Net.connect({ host: receiver.host, port: receiver.port }, () => {
      const frames: Array<Wire.Frame> = []
      const decoder = Wire.makeDecoder()
      const waiters: Array<() => void> = []
      socket.on("data", (chunk) => {
        decoder.pushInto(chunk, frames)
        for (const w of waiters.splice(0)) w()
      })
      const closed = new Promise<void>((done) => socket.on("close", () => done()))
      socket.on("error", () => {})
      const next = (count: number) =>
        new Promise<Array<Wire.Frame>>((done, fail) => {
          const timer = setTimeout(
            () => fail(new Error(`only ${frames.length} frames: ${JSON.stringify(frames)}`)),
            10_000
          )
          const check = () => {
            if (frames.length >= count) {
              clearTimeout(timer)
              done(frames.slice(0, count))
            } else waiters.push(check)
          }
          check()
        })
      resolve({ socket, frames, closed, next })
    })
    socket.on("error", reject)
  })

/** Runs `f` with a connection through `LogReceiver.layerTcp`, collecting its messages. */
const withConnection = <A>(
  receiver: Proc.ReceiverProcess,
  h: LogReceiver.Hello,
  f: (connection: LogReceiver.Connection, messages: Array<LogReceiver.Message>) => Effect.Effect<A, unknown>
) =>
  Effect.runPromiseExit(
    Effect.scoped(
      Effect.gen(function* () {
        const connection = yield* (yield* LogReceiver.LogReceiver).connect(h)
        const messages: Array<LogReceiver.Message> = []
        yield* connection.messages.pipe(
          Stream.runForEach((m) => Effect.sync(() => messages.push(m))),
          Effect.ignore,
          Effect.forkScoped
        )
        return yield* f(connection, messages)
      })
    ).pipe(Effect.provide(LogReceiver.layerTcp({ host: receiver.host, port: receiver.port })))
  )

const until = (condition: () => boolean, what: string) =>
  Effect.gen(function* () {
    for (let i = 0; i < 1000; i++) {
      if (condition()) return
      yield* Effect.sleep("10 millis")
    }
    return yield* Effect.fail(new Error(`timed out waiting for ${what}`))
  })

const refusalOf = (cause: Cause.Cause<unknown>) => {
  const error = Option.getOrUndefined(Cause.failureOption(cause))
  return error instanceof LogReceiver.ReceiverRefused ? error.reason : String(error)
}

const expectLog = async (dir: string, diskId: string, plan: ReadonlyArray<Proc.Planned>) => {
  const { records } = await Proc.readLog(dir, diskId)
  expect(records.map((r) => r.seq)).toEqual(plan.map((p) => p.record.seq))
  for (let i = 0; i < plan.length; i++) expect(Proc.compare(records[i]!, plan[i]!)).toBeUndefined()
}

describe("receiver service", () => {
  it("acks what is durable; a reconnect learns the durable seq; duplicates are acked and not applied twice", async () => {
    const dir = tempDir()
    const receiver = await start(dir)
    const plan = Proc.makePlan({ seed: 7, records: 400, ...geometry, resyncChance: 0.04 })
    const first = await Proc.streamPlan({
      host: receiver.host,
      port: receiver.port,
      hello: hello("vm1"),
      plan
    })
    expect(first).toMatchObject({ welcome: 0, lastAck: 400, outcome: "complete", gaps: [] })
    // Group commit: far fewer acks than records.
    expect(first.acks).toBeLessThan(400)
    // Resend the last 50: each duplicate is acked with the durable seq, none is appended again.
    const again = await Proc.streamPlan({
      host: receiver.host,
      port: receiver.port,
      hello: hello("vm1", 400),
      plan,
      from: (welcome) => welcome - 49,
      minAcks: 50
    })
    expect(again).toMatchObject({ welcome: 400, lastAck: 400, acks: 50, outcome: "complete" })
    await expectLog(dir, "vm1", plan)
    // The recovery points are the writes in sync and the resync-ends.
    const [listed] = await Effect.runPromise(Restore.points(dir, "vm1"))
    expect(listed!.points.map((p) => p.seq)).toEqual([
      0,
      ...plan.filter((p) => p.recoveryPoint).map((p) => p.record.seq)
    ])
  })

  it("a gap is reported and nothing is applied until a resync-begin whose base it holds", async () => {
    const dir = tempDir()
    const receiver = await start(dir)
    const block = (seq: number, b: number, fill: number): Wire.Block => ({
      _tag: "Block",
      seq,
      epoch: 1,
      block: b,
      data: new Uint8Array(geometry.blockSize).fill(fill)
    })
    const exit = await withConnection(receiver, hello("vm-gap"), (c, messages) =>
      Effect.gen(function* () {
        yield* c.send(write(1, 0, 1))
        yield* c.send(write(2, 4096, 2))
        yield* until(() => messages.some((m) => m._tag === "Ack" && m.seq === 2), "ack 2")
        yield* c.send(write(4, 8192, 4)) // 3 is missing
        yield* until(() => messages.some((m) => m._tag === "Gap"), "the gap")
        yield* c.send(write(5, 12288, 5)) // rejected
        yield* c.send({ _tag: "ResyncBegin", seq: 6, epoch: 1, base: 5 }) // relies on 3..5: rejected
        yield* c.send({ _tag: "ResyncBegin", seq: 7, epoch: 1, base: 2 }) // holds through 2: accepted
        yield* c.send(block(8, 3, 8))
        yield* c.send({ _tag: "ResyncEnd", seq: 9, epoch: 1 })
        yield* until(() => messages.some((m) => m._tag === "Ack" && m.seq === 9), "ack 9")
        return messages
      })
    )
    expect(Exit.isSuccess(exit)).toBe(true)
    if (Exit.isFailure(exit)) return
    expect(exit.value.filter((m) => m._tag === "Gap")).toEqual([{ _tag: "Gap", expected: 3 }])
    expect(exit.value.filter((m) => m._tag === "Ack").every((m) => m.seq <= 2 || m.seq >= 7)).toBe(true)
    const { records } = await Proc.readLog(dir, "vm-gap")
    expect(records.map((r) => r.seq)).toEqual([1, 2, 7, 8, 9])

    const points = await Proc.run(["points", "--dir", dir, "--json"])
    expect(points.code).toBe(0)
    const listed = JSON.parse(points.stdout).disks[0]
    expect(listed.points.map((p: { seq: number; kind: string }) => [p.seq, p.kind])).toEqual([
      [0, "base"],
      [1, "write"],
      [2, "write"],
      [9, "resync-end"]
    ])
    // Inside the resync: refused, the nearest points named.
    const refused = await Proc.run(["restore", "--dir", dir, "--at", "8", "--out", path.join(dir, "x.img")])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/seq 8 is not a recovery point of disk vm-gap/)
    expect(refused.stderr).toMatch(/nearest recovery points: 2 \(before\), 9 \(after\)/)
    expect(fs.existsSync(path.join(dir, "x.img"))).toBe(false)
    const skipped = await Proc.run(["restore", "--dir", dir, "--at", "5", "--out", path.join(dir, "x.img")])
    expect(skipped.stderr).toMatch(/no record has this seq/)
    // At 9: writes 1 and 2 and block 3; write 4 and 5 were never applied.
    // Outside the receiver directory: restore refuses to write inside it.
    const out = path.join(tempDir(), "at9.img")
    const restored = await Proc.run(["restore", "--dir", dir, "--disk", "vm-gap", "--at", "9", "--out", out])
    expect(restored.code).toBe(0)
    const image = fs.readFileSync(out)
    const expected = Buffer.alloc(geometry.blockSize * geometry.blockCount)
    expected.fill(1, 0, 1000)
    expected.fill(2, 4096, 5096)
    expected.fill(8, 3 * 4096, 4 * 4096)
    expect(image.equals(expected)).toBe(true)
  })

  it("corrupt and oversized frames close only that connection, with a typed error, and leave the log intact", async () => {
    const dir = tempDir()
    const receiver = await start(dir, ["--max-frame-bytes", String(Wire.HEADER_BYTES + 8192)])
    // A bystander on another disk keeps its connection throughout.
    const bystander = await raw(receiver)
    bystander.socket.write(Wire.encode({ _tag: "Hello", ...hello("other") }))
    await bystander.next(1)

    const client = await raw(receiver)
    client.socket.write(Wire.encode({ _tag: "Hello", ...hello("vm2") }))
    client.socket.write(Wire.encode(write(1, 0, 1)))
    expect(await client.next(2)).toEqual([
      { _tag: "Welcome", durableSeq: 0 },
      { _tag: "Ack", seq: 1 }
    ])
    const corrupt = Buffer.from(Wire.encode(write(2, 4096, 2)))
    corrupt[Wire.HEADER_BYTES + 100]! ^= 0x10
    client.socket.write(corrupt)
    await client.closed
    await until(() => /reason=payload-crc/.test(receiver.stderr()), "the logged error").pipe(
      Effect.runPromise
    )
    expect(receiver.stderr()).toMatch(
      /WARN.*connection closed: wire protocol error \(payload-crc\).*error=WireError/
    )

    // Oversized: refused from the header, before any payload is read.
    const big = await raw(receiver)
    big.socket.write(Wire.encode({ _tag: "Hello", ...hello("vm2") }))
    await big.next(1)
    big.socket.write(Wire.encode(write(2, 0, 9, 8193)))
    await big.closed
    await until(() => /reason=too-large/.test(receiver.stderr()), "the logged error").pipe(Effect.runPromise)

    // A record that does not fit the disk is a protocol error too.
    const beyond = await raw(receiver)
    beyond.socket.write(Wire.encode({ _tag: "Hello", ...hello("vm2") }))
    beyond.socket.write(Wire.encode(write(2, geometry.blockSize * geometry.blockCount - 10, 3, 100)))
    await beyond.closed
    await until(() => /reason=bad-record/.test(receiver.stderr()), "the logged error").pipe(Effect.runPromise)

    // The log holds write 1 only, and a new connection carries on from it.
    expect(bystander.socket.destroyed).toBe(false)
    const after = await raw(receiver)
    after.socket.write(Wire.encode({ _tag: "Hello", ...hello("vm2") }))
    after.socket.write(Wire.encode(write(2, 4096, 2)))
    expect(await after.next(2)).toEqual([
      { _tag: "Welcome", durableSeq: 1 },
      { _tag: "Ack", seq: 2 }
    ])
    const { records } = await Proc.readLog(dir, "vm2")
    expect(records.map((r) => [r.seq, r.payload[0]])).toEqual([
      [1, 1],
      [2, 2]
    ])
    for (const c of [bystander, after]) c.socket.destroy()
  })

  it("refuses a geometry mismatch, a bad geometry, a second connection for the same disk and a second receiver", async () => {
    const dir = tempDir()
    const receiver = await start(dir)
    const exit = await withConnection(receiver, hello("vm3"), (c, messages) =>
      Effect.gen(function* () {
        const other = (h: LogReceiver.Hello) =>
          Effect.promise(() => withConnection(receiver, h, () => Effect.void))
        const second = yield* other(hello("vm3"))
        const mismatch = yield* other({ ...hello("vm3"), blockCount: 65 })
        const bad = yield* other({ ...hello("vm4"), blockSize: 1000 })
        // The first connection is unaffected.
        yield* c.send(write(1, 0, 1))
        yield* until(() => messages.some((m) => m._tag === "Ack" && m.seq === 1), "ack 1")
        return [second, mismatch, bad] as const
      })
    )
    expect(Exit.isSuccess(exit)).toBe(true)
    if (Exit.isFailure(exit)) return
    const reasons = exit.value.map((e) => (Exit.isFailure(e) ? refusalOf(e.cause) : "connected"))
    expect(reasons).toEqual(["already-connected", "geometry-mismatch", "bad-geometry"])
    expect(receiver.stderr()).toMatch(/hello for disk vm3 refused \(geometry-mismatch\)/)
    // Once the first is gone, the disk takes a new connection — with its own geometry only.
    const reconnect = await withConnection(receiver, hello("vm3", 1), (c) => Effect.succeed(c.durableSeq))
    expect(reconnect).toEqual(Exit.succeed(1))
    // One receiver per directory.
    const second = await Proc.run(["receiver", "--dir", dir, "--port", "0"])
    expect(second.code).toBe(1)
    expect(second.stderr).toMatch(new RegExp(`in use by another receiver \\(pid ${receiver.child.pid}\\)`))
    // The geometry survives a restart.
    await receiver.kill()
    const restarted = await start(dir)
    const mismatch = await withConnection(restarted, { ...hello("vm3"), blockSize: 8192 }, () => Effect.void)
    expect(Exit.isFailure(mismatch) && refusalOf(mismatch.cause)).toBe("geometry-mismatch")
  })

  it("closes a connection that sends no hello in time, and keeps one that did", async () => {
    const receiver = await start(tempDir(), ["--hello-timeout", "300"])
    const silent = await raw(receiver)
    const startedAt = Date.now()
    await silent.closed
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(250)
    const talker = await raw(receiver)
    talker.socket.write(Wire.encode({ _tag: "Hello", ...hello("d1") }))
    expect((await talker.next(1))[0]).toEqual({ _tag: "Welcome", durableSeq: 0 })
    await new Promise((done) => setTimeout(done, 600))
    talker.socket.write(Wire.encode(write(1, 0, 7)))
    expect((await talker.next(2))[1]).toEqual({ _tag: "Ack", seq: 1 })
    talker.socket.destroy()
  })

  it("points lists every disk; restore needs --disk when there are several and refuses an unknown one", async () => {
    const dir = tempDir()
    const receiver = await start(dir)
    for (const id of ["a", "b"]) {
      const plan = Proc.makePlan({ seed: id.charCodeAt(0), records: 30, ...geometry, resyncChance: 0 })
      await Proc.streamPlan({ host: receiver.host, port: receiver.port, hello: hello(id), plan })
    }
    const listing = await Proc.run(["points", "--dir", dir])
    expect(listing.code).toBe(0)
    expect(listing.stdout).toMatch(/disk a: 64 blocks of 4096 bytes; base at seq 0, log through seq 30/)
    expect(listing.stdout).toMatch(/disk b: /)
    const ambiguous = await Proc.run([
      "restore",
      "--dir",
      dir,
      "--at",
      "latest",
      "--out",
      path.join(dir, "o.img")
    ])
    expect(ambiguous.code).toBe(1)
    expect(ambiguous.stderr).toMatch(/holds 2 disks \(a, b\): name one with --disk/)
    const unknown = await Proc.run(["points", "--dir", dir, "--disk", "zz"])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/holds no disk "zz"/)
    const bad = await Proc.run(["restore", "--dir", dir, "--disk", "a", "--at", "soon", "--out", "x"])
    expect(bad.code).not.toBe(0)
  })
})

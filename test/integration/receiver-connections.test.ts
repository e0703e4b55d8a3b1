/**
 * What a peer can hold of the receiver (docs/receiver.md, "Running it": the bounds), with the
 * service in-process over real TCP and real files: a connection closed under it ends its
 * fiber, the hello is capped, a silent connection is dropped after the idle timeout (or
 * taken over), a healthy idle filter's keep-alives keep it, a peer that reads nothing is
 * dropped, and connections beyond the limit are closed at once. Time is a TestClock where
 * a timeout is under test; the sockets are real, so the tests wait (in real time) only for
 * what the sockets must deliver, never for a duration.
 */
import * as Net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Logger, Stream, TestClock } from "effect"
import { tempDirs } from "../support/tempDirs.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as Wire from "../../src/protocol/Wire.js"
import * as ReceiverService from "../../src/receiver/ReceiverService.js"

const tempDir = tempDirs("cdp-connections-")

const geometry = { blockSize: 4096, blockCount: 64 }
const helloFrame = (diskId: string, watermark = 0): Wire.Hello => ({
  _tag: "Hello",
  diskId,
  ...geometry,
  watermark
})

/** Log lines (logfmt) the service writes, to read its verdicts. */
const captureLogs = () => {
  const lines: Array<string> = []
  const layer = Logger.replace(
    Logger.defaultLogger,
    Logger.map(Logger.logfmtLogger, (line) => {
      lines.push(line)
    })
  )
  return { lines, layer }
}

const realSleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms))

/** Waits in real time for what a socket must deliver; fails (after a generous bound) with `what`. */
const waitFor = (what: string, condition: () => boolean) =>
  Effect.promise(async () => {
    for (let i = 0; i < 3000; i++) {
      if (condition()) return
      await realSleep(10)
    }
    throw new Error(`timed out waiting for ${what}`)
  })

interface Raw {
  readonly socket: Net.Socket
  readonly frames: Array<Wire.Frame>
  readonly state: { closed: boolean; received: number }
  readonly send: (frame: Wire.Frame) => void
}

/** A raw TCP peer: writes frames, decodes what the receiver sends, tells when it closed. */
const connect = (port: number) =>
  Effect.promise(
    () =>
      new Promise<Raw>((resolve, reject) => {
        const socket = Net.connect({ host: "127.0.0.1", port }, () => {
          const frames: Array<Wire.Frame> = []
          const state = { closed: false, received: 0 }
          const decoder = Wire.makeDecoder()
          socket.on("data", (chunk) => {
            state.received += chunk.byteLength
            decoder.pushInto(chunk, frames)
          })
          socket.on("close", () => {
            state.closed = true
          })
          socket.on("error", () => {})
          resolve({ socket, frames, state, send: (frame) => socket.write(Wire.encode(frame)) })
        })
        socket.once("error", reject)
      })
  )

/** Says hello and waits for the answer. */
const hello = (raw: Raw, diskId: string) =>
  Effect.gen(function* () {
    raw.send(helloFrame(diskId))
    yield* waitFor(`an answer to the hello for ${diskId}`, () => raw.frames.length > 0 || raw.state.closed)
    return raw.frames[0]
  })

/** A keep-alive and its answer: once it is back, the receiver has taken everything sent before. */
const roundTrip = (raw: Raw) =>
  Effect.gen(function* () {
    const before = raw.frames.filter((f) => f._tag === "KeepAlive").length
    raw.send({ _tag: "KeepAlive" })
    yield* waitFor(
      "the keep-alive's answer",
      () => raw.frames.filter((f) => f._tag === "KeepAlive").length > before
    )
  })

const serve = (options: Partial<ReceiverService.ServeOptions>) =>
  ReceiverService.serve({ dir: tempDir(), host: "127.0.0.1", port: 0, ...options })

describe("a connection closed under its fiber", () => {
  it.scopedLive("by the hello timeout: its fiber ends and the partial hello is dropped", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const server = yield* serve({ helloTimeout: "300 millis" })
      // Each peer sends part of a large (but allowed) hello, then nothing.
      const bytes = Wire.encode(helloFrame("d".repeat(1000)))
      const big = Wire.encode({ ...helloFrame("x"), diskId: "x".repeat(60_000) })
      expect(big.byteLength).toBeLessThan(Wire.MAX_HELLO_FRAME_BYTES)
      const peers: Array<Raw> = []
      for (let i = 0; i < 20; i++) {
        const peer = yield* connect(server.port)
        peer.socket.write((i % 2 === 0 ? big : bytes).subarray(0, 500 + i))
        peers.push(peer)
      }
      yield* waitFor("every peer closed by the receiver", () => peers.every((p) => p.state.closed))
      // The fibers are gone (they used to wait for an `end` that a destroyed socket never emits).
      yield* Effect.promise(async () => {
        for (let i = 0; i < 3000; i++) {
          if ((await Effect.runPromise(server.connections)) === 0) return
          await realSleep(10)
        }
      })
      expect(yield* server.connections).toBe(0)
      expect(logs.lines.filter((l) => /connection closed: no hello in time/.test(l))).toHaveLength(20)
    }).pipe(Effect.provide(logs.layer))
  })

  it.scopedLive("a hello larger than MAX_HELLO_FRAME_BYTES is refused from its header", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const server = yield* serve({})
      const peer = yield* connect(server.port)
      const huge = Wire.encode({ ...helloFrame("x"), diskId: "x".repeat(Wire.MAX_HELLO_FRAME_BYTES) })
      // The header alone decides: the payload never has to arrive.
      peer.socket.write(huge.subarray(0, Wire.HEADER_BYTES))
      yield* waitFor("the peer closed", () => peer.state.closed)
      yield* waitFor("the log line", () => logs.lines.some((l) => /reason=too-large/.test(l)))
      expect(logs.lines.find((l) => /reason=too-large/.test(l))).toMatch(/first frame of \d+ bytes exceeds/)
      // A record announced as the first frame is refused alike, whatever maxFrameBytes allows.
      const record = yield* connect(server.port)
      record.send({ _tag: "Write", seq: 1, epoch: 0, offset: 0, data: new Uint8Array(100_000) })
      yield* waitFor("the record peer closed", () => record.state.closed)
      expect(logs.lines.filter((l) => /reason=too-large/.test(l))).toHaveLength(2)
    }).pipe(Effect.provide(logs.layer))
  })
})

describe("the idle timeout after the hello (TestClock)", () => {
  it.scoped("a silent peer is dropped after it, and the filter is then served", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const server = yield* serve({ idleTimeout: "30 seconds" })
      const silent = yield* connect(server.port)
      expect(yield* hello(silent, "vm1")).toEqual({ _tag: "Welcome", durableSeq: 0 })
      yield* roundTrip(silent)
      // The receiver now waits for it: silence counts from here.
      yield* TestClock.adjust("29 seconds")
      expect(logs.lines.some((l) => /connection closed/.test(l))).toBe(false)
      yield* TestClock.adjust("2 seconds")
      yield* waitFor("the silent peer dropped", () => silent.state.closed)
      expect(logs.lines.find((l) => /connection closed: nothing received/.test(l))).toMatch(
        /disk=vm1 .*idleTimeout=30s/
      )
      // The disk is free: the filter connects.
      const filter = yield* connect(server.port)
      expect(yield* hello(filter, "vm1")).toEqual({ _tag: "Welcome", durableSeq: 0 })
    }).pipe(Effect.provide(logs.layer))
  })

  it.scoped("a healthy idle filter (keep-alives) is never dropped nor taken over", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const server = yield* serve({ idleTimeout: "30 seconds" })
      const exit = yield* Effect.gen(function* () {
        const connection = yield* (yield* LogReceiver.LogReceiver).connect({
          diskId: "vm2",
          ...geometry,
          watermark: 0
        })
        const acks: Array<number> = []
        yield* connection.messages.pipe(
          Stream.runForEach((m) => Effect.sync(() => m._tag === "Ack" && acks.push(m.seq))),
          Effect.forkScoped
        )
        // Five minutes of nothing to send, a second at a time; the client's keep-alives
        // (every 5 s by default) go out on their own.
        for (let s = 0; s < 300; s++) yield* TestClock.adjust("1 second")
        // Meanwhile a second hello for the disk is refused: the holder is alive.
        const rival = yield* connect(server.port)
        const answer = yield* hello(rival, "vm2")
        expect(answer?._tag === "Refuse" && answer.reason).toBe("already-connected")
        // The connection still carries records.
        yield* connection.send({
          _tag: "Write",
          seq: 1,
          epoch: 0,
          offset: 0,
          data: new Uint8Array(512).fill(1)
        })
        yield* waitFor("the ack", () => acks.includes(1))
      }).pipe(
        Effect.scoped,
        Effect.provide(LogReceiver.layerTcp({ host: "127.0.0.1", port: server.port })),
        Effect.exit
      )
      expect(exit).toEqual(Exit.void)
      expect(logs.lines.filter((l) => /connection closed|connection taken over by/.test(l))).toEqual([])
    }).pipe(Effect.provide(logs.layer))
  })

  it.scoped("a hello for a disk whose connection has been silent for half of it takes the disk over", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const server = yield* serve({ idleTimeout: "30 seconds" })
      const old = yield* connect(server.port)
      expect(yield* hello(old, "vm3")).toEqual({ _tag: "Welcome", durableSeq: 0 })
      old.send({ _tag: "Write", seq: 1, epoch: 0, offset: 0, data: new Uint8Array(100).fill(3) })
      yield* waitFor("ack 1", () => old.frames.some((f) => f._tag === "Ack" && f.seq === 1))
      yield* roundTrip(old)
      yield* TestClock.adjust("14 seconds")
      const early = yield* connect(server.port)
      const refused = yield* hello(early, "vm3")
      expect(refused?._tag === "Refuse" && refused.reason).toBe("already-connected")
      expect(refused?._tag === "Refuse" && refused.detail).toMatch(/last heard 14\.0s ago/)
      yield* TestClock.adjust("2 seconds")
      const late = yield* connect(server.port)
      expect(yield* hello(late, "vm3")).toEqual({ _tag: "Welcome", durableSeq: 1 })
      yield* waitFor("the old connection closed", () => old.state.closed)
      expect(logs.lines.find((l) => /connection taken over by/.test(l))).toMatch(
        /vm3: connection taken over by a new one/
      )
      // The new holder carries on from the durable seq.
      late.send({ _tag: "Write", seq: 2, epoch: 0, offset: 4096, data: new Uint8Array(100).fill(4) })
      yield* waitFor("ack 2", () => late.frames.some((f) => f._tag === "Ack" && f.seq === 2))
    }).pipe(Effect.provide(logs.layer))
  })

  it.scoped(
    "a peer that never reads what the receiver sends is dropped after it, however much it sends",
    () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* serve({ idleTimeout: "30 seconds" })
        const peer = yield* connect(server.port)
        expect(yield* hello(peer, "vm4")).toEqual({ _tag: "Welcome", durableSeq: 0 })
        peer.send({ _tag: "Write", seq: 1, epoch: 0, offset: 0, data: new Uint8Array(100).fill(5) })
        yield* waitFor("ack 1", () => peer.frames.some((f) => f._tag === "Ack"))
        // From now on it reads nothing and sends duplicates: each one is due an ack.
        peer.socket.pause()
        const duplicate = Buffer.alloc(40 * 10_000)
        const one = Wire.encode({ _tag: "ResyncEnd", seq: 1, epoch: 0 })
        for (let i = 0; i < 10_000; i++) duplicate.set(one, i * 40)
        const flood = Effect.promise(
          () =>
            new Promise<void>((done) => {
              if (peer.socket.write(duplicate)) done()
              else peer.socket.once("drain", () => done())
            })
        )
        // Enough unread acks to fill both kernels' buffers and the receiver's high-water mark.
        for (let round = 0; round < 60; round++) yield* flood
        // Then 30 s of test time, with a keep-alive every 5 s so it is never merely idle.
        for (let s = 0; s < 40 && !peer.state.closed; s++) {
          peer.send({ _tag: "KeepAlive" })
          yield* TestClock.adjust("5 seconds")
          yield* Effect.promise(() => realSleep(20))
        }
        yield* waitFor("the peer dropped", () =>
          logs.lines.some((l) => /has not read the receiver's replies/.test(l))
        )
        expect(logs.lines.some((l) => /nothing received/.test(l))).toBe(false)
      }).pipe(Effect.provide(logs.layer))
    }
  )
})

describe("the connection limit", () => {
  it.scopedLive("closes a connection beyond it at once, with a WARN line, and serves again below it", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const server = yield* serve({ maxConnections: 3 })
      const held = [yield* connect(server.port), yield* connect(server.port), yield* connect(server.port)]
      const extra = yield* connect(server.port)
      yield* waitFor("the extra connection closed", () => extra.state.closed)
      expect(extra.state.received).toBe(0)
      expect(logs.lines.find((l) => /too many connections/.test(l))).toMatch(
        /level=WARN .*connection refused: too many connections.*maxConnections=3/
      )
      expect(held.some((p) => p.state.closed)).toBe(false)
      held[0]!.socket.destroy()
      yield* Effect.promise(async () => {
        for (let i = 0; i < 3000; i++) {
          if ((await Effect.runPromise(server.connections)) === 2) return
          await realSleep(10)
        }
      })
      const next = yield* connect(server.port)
      expect(yield* hello(next, "vm5")).toEqual({ _tag: "Welcome", durableSeq: 0 })
      for (const p of held) p.socket.destroy()
    }).pipe(Effect.provide(logs.layer))
  })
})

describe("the TCP client's keep-alive (TestClock)", () => {
  /** A raw receiver: welcomes, counts the client's frames, acks records. */
  const rawReceiver = Effect.acquireRelease(
    Effect.promise(
      () =>
        new Promise<{ server: Net.Server; port: number; seen: Array<Wire.Frame> }>((resolve) => {
          const seen: Array<Wire.Frame> = []
          const server = Net.createServer((socket) => {
            const decoder = Wire.makeDecoder()
            socket.on("error", () => {})
            socket.on("data", (chunk) => {
              const frames: Array<Wire.Frame> = []
              decoder.pushInto(chunk, frames)
              for (const f of frames) {
                seen.push(f)
                if (f._tag === "Hello") socket.write(Wire.encode({ _tag: "Welcome", durableSeq: 0 }))
                if (f._tag === "Write") socket.write(Wire.encode({ _tag: "Ack", seq: f.seq }))
                if (f._tag === "KeepAlive") socket.write(Wire.encode(f))
              }
            })
          })
          server.listen(0, "127.0.0.1", () =>
            resolve({ server, port: (server.address() as Net.AddressInfo).port, seen })
          )
        })
    ),
    ({ server }) => Effect.promise(() => new Promise<void>((done) => server.close(() => done())))
  )

  it.scoped("goes out once nothing was sent for the interval, never while records flow", () =>
    Effect.gen(function* () {
      const { port, seen } = yield* rawReceiver
      const keepAlives = () => seen.filter((f) => f._tag === "KeepAlive").length
      yield* Effect.gen(function* () {
        const connection = yield* (yield* LogReceiver.LogReceiver).connect({
          diskId: "k",
          ...geometry,
          watermark: 0
        })
        const consumer = yield* Effect.fork(Stream.runDrain(connection.messages))
        // A record every second for a minute: the link is never idle for 5 s.
        for (let seq = 1; seq <= 60; seq++) {
          yield* connection.send({ _tag: "Write", seq, epoch: 0, offset: 0, data: new Uint8Array(8) })
          yield* TestClock.adjust("1 second")
        }
        yield* waitFor("the 60 records", () => seen.filter((f) => f._tag === "Write").length === 60)
        expect(keepAlives()).toBe(0)
        // Then nothing to send: a keep-alive every 5 s (the default), answers dropped quietly.
        for (let s = 0; s < 30; s++) yield* TestClock.adjust("1 second")
        yield* waitFor("keep-alives", () => keepAlives() >= 5)
        expect(keepAlives()).toBeLessThanOrEqual(7)
        // The link is intact: a record still goes out and is acked.
        yield* connection.send({ _tag: "Write", seq: 61, epoch: 0, offset: 0, data: new Uint8Array(8) })
        yield* waitFor("record 61", () => seen.some((f) => f._tag === "Write" && f.seq === 61))
        yield* Fiber.interrupt(consumer)
      }).pipe(Effect.scoped, Effect.provide(LogReceiver.layerTcp({ host: "127.0.0.1", port })))
    })
  )
})

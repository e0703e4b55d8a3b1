/**
 * The receiver's replies to a peer that reads when it pleases (`internal/connection.ts`
 * `Replies`): acks coalesce while the socket is above its high-water mark, so a filter that
 * never reads costs O(1); what it does read is faithful: acks and gaps in their order, the
 * latest ack last, no gap lost. A mutant that queues every reply is caught.
 */
import { Writable } from "node:stream"
import { Effect, Fiber } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Wire from "../../src/protocol/Wire.js"
import { Replies } from "../../src/receiver/internal/connection.js"

const RUNS = Math.round(200 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1))
const HIGH_WATER = 200

/** A socket whose peer takes a write only when told to (`read`). */
const peerSocket = () => {
  const waiting: Array<() => void> = []
  const taken: Array<Uint8Array> = []
  const socket = new Writable({
    highWaterMark: HIGH_WATER,
    write(chunk: Uint8Array, _encoding, callback) {
      waiting.push(() => {
        taken.push(chunk)
        callback()
      })
    }
  })
  return {
    socket,
    /** The peer reads up to `n` writes (each read lets the next one through). */
    read: (n: number) => {
      for (let i = 0; i < n && waiting.length > 0; i++) waiting.shift()!()
    },
    readAll: () => {
      while (waiting.length > 0) waiting.shift()!()
    },
    frames: (): Array<Wire.Frame> =>
      Wire.makeDecoder()
        .push(Buffer.concat(taken))
        .pipe((r) => {
          if (r._tag === "Left") throw r.left
          return [...r.right]
        })
  }
}

type Op =
  | { readonly _tag: "ack"; readonly step: number }
  | { readonly _tag: "gap" }
  | { readonly _tag: "keepAlive" }
  | { readonly _tag: "read"; readonly n: number }

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ _tag: fc.constant("ack" as const), step: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("gap" as const) }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("keepAlive" as const) }) },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("read" as const), n: fc.nat(8) }) }
)

const property = (mutant: boolean) =>
  fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
    const peer = peerSocket()
    const replies = new Replies(peer.socket, () => 0, mutant)
    // Acks issued between gaps: segment i holds those after gap i - 1 and before gap i.
    const segments: Array<Set<number>> = [new Set()]
    const gaps: Array<number> = []
    let durable = 0
    let keepAlives = 0
    for (const o of ops) {
      if (o._tag === "ack") {
        durable += o.step
        replies.ack(durable)
        segments.at(-1)!.add(durable)
      } else if (o._tag === "gap") {
        const expected = durable + 1 + gaps.length
        if (!replies.gap(expected)) {
          // Refused only while an earlier gap is unwritten: the peer is not reading.
          expect(peer.socket.writableNeedDrain).toBe(true)
          break
        }
        gaps.push(expected)
        segments.push(new Set())
      } else if (o._tag === "keepAlive") {
        replies.keepAlive()
        keepAlives++
      } else peer.read(o.n)
      // The bound: what waits in the socket never exceeds its high-water mark by more than a frame.
      if (peer.socket.writableLength >= HIGH_WATER + Wire.HEADER_BYTES)
        throw new Error(`${peer.socket.writableLength} bytes wait in the socket`)
    }
    peer.readAll()
    const read = peer.frames()
    // Faithful: every ack read was issued in its place between gaps; gaps in order, none lost.
    let gapsRead = 0
    let lastAck = 0
    for (const frame of read) {
      if (frame._tag === "Ack") {
        expect(segments[gapsRead]!.has(frame.seq)).toBe(true)
        expect(frame.seq).toBeGreaterThanOrEqual(lastAck)
        lastAck = frame.seq
      } else if (frame._tag === "Gap") expect(frame.expected).toBe(gaps[gapsRead++])
      else expect(frame._tag).toBe("KeepAlive")
    }
    expect(gapsRead).toBe(gaps.length)
    // The latest ack is read last (an ack of 0 says nothing: the durable seq starts there).
    expect(lastAck).toBe(durable)
    const keepAlivesRead = read.filter((f) => f._tag === "KeepAlive").length
    expect(keepAlivesRead).toBeLessThanOrEqual(keepAlives)
    if (keepAlives > 0) expect(keepAlivesRead).toBeGreaterThan(0)
  })

describe("the receiver's replies to a peer that reads when it pleases", () => {
  it("stay under the socket's high-water mark plus one frame, and what is read is faithful", () => {
    fc.assert(property(false), { numRuns: RUNS })
  })

  it("MUTANT: a receiver that queues every reply is caught by the bound", () => {
    const result = fc.check(property(true), { numRuns: RUNS })
    expect(result.failed).toBe(true)
  })

  it("a peer that never reads: a million acks leave one ack pending, and the socket's buffer bounded", () => {
    const peer = peerSocket()
    const replies = new Replies(peer.socket, () => 0)
    for (let seq = 1; seq <= 1_000_000; seq++) replies.ack(seq)
    expect(peer.socket.writableLength).toBeLessThan(HIGH_WATER + Wire.HEADER_BYTES)
    peer.readAll()
    expect(peer.frames().at(-1)).toEqual({ _tag: "Ack", seq: 1_000_000 })
    expect(peer.frames().length).toBeLessThan(10)
  })
})

describe("checksum answers (issue 18)", () => {
  const answer = (id: number): Wire.ChecksumReply => ({
    _tag: "ChecksumReply",
    algorithm: 0,
    id,
    through: id,
    digests: new Uint8Array(Wire.DIGEST_BYTES * 8)
  })
  const isDrained = async (replies: Replies) => {
    let done = false
    const fiber = Effect.runFork(Effect.tap(replies.drained, () => Effect.sync(() => (done = true))))
    await new Promise((resolve) => setTimeout(resolve, 20))
    await Effect.runPromise(Fiber.interrupt(fiber))
    return done
  }

  it("a peer that asks without reading holds one answer: drained waits until the peer reads; acks due go first", async () => {
    const peer = peerSocket()
    const replies = new Replies(peer.socket, () => 0)
    expect(await isDrained(replies)).toBe(true)
    replies.ack(5)
    replies.checksumAnswer(answer(1))
    // Above the high-water mark (an answer is larger): the next request must wait.
    expect(await isDrained(replies)).toBe(false)
    replies.ack(6)
    peer.readAll()
    await new Promise((resolve) => setTimeout(resolve, 10))
    peer.readAll()
    expect(await isDrained(replies)).toBe(true)
    const frames = peer.frames()
    expect(frames.map((f) => f._tag)).toEqual(["Ack", "ChecksumReply", "Ack"])
    expect(frames[0]).toEqual({ _tag: "Ack", seq: 5 })
  })

  it("an answer not yet written is held until the socket drains, after the ack due before it", async () => {
    const peer = peerSocket()
    const replies = new Replies(peer.socket, () => 0)
    replies.checksumAnswer(answer(1))
    expect(await isDrained(replies)).toBe(false)
    // The first answer sits in the socket; the next is held in `Replies` (one), not written.
    replies.ack(9)
    replies.checksumAnswer(answer(2))
    for (let i = 0; i < 5 && !(await isDrained(replies)); i++) {
      peer.readAll()
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    expect(await isDrained(replies)).toBe(true)
    expect(peer.frames().map((f) => (f._tag === "ChecksumReply" ? `reply ${f.id}` : f._tag))).toEqual([
      "reply 1",
      "Ack",
      "reply 2"
    ])
  })

  it("a closed socket releases a waiting answer", async () => {
    const peer = peerSocket()
    const replies = new Replies(peer.socket, () => 0)
    replies.checksumAnswer(answer(1))
    const waiting = Effect.runPromise(replies.drained)
    peer.socket.destroy()
    await waiting
  })
})

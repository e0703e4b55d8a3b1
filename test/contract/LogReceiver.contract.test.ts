/**
 * The LogReceiver port's contract, run against every layer: the in-memory receiver and
 * the TCP client talking to the test server on loopback (records, acks, gaps, and checksum
 * requests with their answers). Plus TCP-only checks on real sockets: a corrupted frame
 * closes only its own connection with a typed error.
 */
import * as Net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import {
  Cause,
  Deferred,
  Effect,
  Exit,
  Fiber,
  type Layer,
  Queue,
  Ref,
  Schedule,
  type Scope,
  Stream
} from "effect"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import type { MemoryOptions } from "../../src/adapters/internal/receiverMemory.js"
import * as Wire from "../../src/protocol/Wire.js"
import * as TcpReceiver from "../support/tcpReceiver.js"

const {
  ConnectionLost,
  LogReceiver: Port,
  MemoryReceiver,
  ReceiverRefused,
  ReceiverUnreachable
} = LogReceiver

type Options = MemoryOptions
type Env = LogReceiver.LogReceiver | LogReceiver.MemoryReceiver

interface Harness {
  readonly name: string
  readonly layer: (options?: Options) => Layer.Layer<Env>
  /** Records of this size and count surely overflow the buffers between filter and receiver. */
  readonly overflow: { readonly records: number; readonly bytes: number }
}

const BLOCK = 65536
const hello = (diskId: string, watermark = 0): LogReceiver.Hello => ({
  diskId,
  blockSize: BLOCK,
  blockCount: 1024,
  watermark
})
const bytes = (length: number, fill: number) => new Uint8Array(length).fill(fill)
const write = (seq: number, offset: number, fill: number, length = 512): LogReceiver.OutRecord => ({
  _tag: "Write",
  seq,
  epoch: 0,
  offset,
  data: bytes(length, fill)
})

/** Polls until `condition` holds (5 s at most). */
const eventually = <E, R>(condition: Effect.Effect<boolean, E, R>) =>
  condition.pipe(
    Effect.flatMap((ok) => (ok ? Effect.void : Effect.fail("not yet" as const))),
    Effect.retry({ schedule: Schedule.spaced("10 millis"), times: 500 }),
    Effect.orDie
  )

const sha = (data: Uint8Array) => Array.from(Wire.blockDigest(data))
/** The digest of block `b` of a model image. */
const blockSha = (image: Uint8Array, b: number) => sha(image.subarray(b * BLOCK, (b + 1) * BLOCK))
const digestsOf = (reply: Wire.ChecksumReply) =>
  Array.from({ length: reply.digests.byteLength / Wire.DIGEST_BYTES }, (_, k) =>
    Array.from(Wire.digestAt(reply, k))
  )
/** Applies a record to a model image, as the receiver does. */
const model = (image: Uint8Array, record: LogReceiver.OutRecord) => {
  if (record._tag === "Write") image.set(record.data, record.offset)
  else if (record._tag === "Block") image.set(record.data, record.block * BLOCK)
}

/** Takes messages until the answer to checksum request `id`; returns them all, the answer last. */
const answered = (inbox: { readonly next: Effect.Effect<LogReceiver.Message, string> }, id: number) =>
  Effect.gen(function* () {
    const seen: Array<LogReceiver.Message> = []
    for (;;) {
      const m = yield* inbox.next
      seen.push(m)
      if ((m._tag === "ChecksumReply" || m._tag === "ChecksumRefused") && m.id === id) return seen
    }
  })

/** Consumes a connection's messages in the background. */
const listen = (connection: LogReceiver.Connection) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<LogReceiver.Message>()
    const ended = yield* Deferred.make<Exit.Exit<void, LogReceiver.ConnectionLost>>()
    yield* connection.messages.pipe(
      Stream.runForEach((m) => Queue.offer(queue, m)),
      Effect.exit,
      Effect.flatMap((exit) => Deferred.succeed(ended, exit)),
      Effect.forkScoped
    )
    const next = Queue.take(queue).pipe(
      Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "no message" })
    )
    return {
      next,
      /** Takes messages until an ack through `seq`; returns them all. */
      ackedThrough: (seq: number) =>
        Effect.gen(function* () {
          const seen: Array<LogReceiver.Message> = []
          for (;;) {
            const m = yield* next
            seen.push(m)
            if (m._tag === "Ack" && m.seq >= seq) return seen
          }
        }),
      pending: Queue.takeAll(queue),
      lost: Deferred.await(ended).pipe(
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "still up" })
      )
    }
  })

/** A connection to disk `diskId` whose messages are consumed in the background, and the control. */
const connected = (diskId: string) =>
  Effect.gen(function* () {
    const port = yield* Port
    const connection = yield* port.connect(hello(diskId))
    return { control: yield* MemoryReceiver, connection, inbox: yield* listen(connection) }
  })

const contract = (harness: Harness) =>
  describe(`LogReceiver contract: ${harness.name}`, () => {
    const run = <A, E>(body: Effect.Effect<A, E, Env | Scope.Scope>, options?: Options) =>
      Effect.scoped(body).pipe(Effect.provide(harness.layer(options)))

    it.scopedLive("the handshake returns the receiver's durable seq", () =>
      run(
        Effect.gen(function* () {
          const port = yield* Port
          const control = yield* MemoryReceiver
          yield* Effect.scoped(
            Effect.gen(function* () {
              const connection = yield* port.connect(hello("d1"))
              assert.strictEqual(connection.durableSeq, 0)
              const inbox = yield* listen(connection)
              for (let seq = 1; seq <= 3; seq++) yield* connection.send(write(seq, seq * 4096, seq))
              yield* inbox.ackedThrough(3)
            })
          )
          yield* eventually(Effect.map(control.isConnected("d1"), (c) => !c))
          const again = yield* port.connect(hello("d1", 3))
          assert.strictEqual(again.durableSeq, 3)
          // Another disk has its own log.
          const other = yield* port.connect(hello("d2"))
          assert.strictEqual(other.durableSeq, 0)
        })
      )
    )

    it.scopedLive("records in order are applied and acked cumulatively", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          const n = 20
          for (let seq = 1; seq <= n; seq++) yield* connection.send(write(seq, (seq - 1) * 1000, seq, 1000))
          const seen = yield* inbox.ackedThrough(n)
          let last = 0
          for (const m of seen) {
            assert.strictEqual(m._tag, "Ack")
            if (m._tag !== "Ack") continue
            assert.isTrue(m.seq >= last && m.seq <= n, `ack ${m.seq} after ${last}`)
            last = m.seq
          }
          assert.deepStrictEqual(
            (yield* control.log("d")).map((e) => e.seq),
            Array.from({ length: n }, (_, i) => i + 1)
          )
          assert.strictEqual(yield* control.durableSeq("d"), n)
          // Writes straddle blocks: the replica holds every byte where it was written.
          const image = yield* control.image("d")
          for (let seq = 1; seq <= n; seq++)
            assert.isTrue(
              image.subarray((seq - 1) * 1000, seq * 1000).every((b) => b === seq),
              `write ${seq} on the replica`
            )
          assert.deepStrictEqual(
            yield* control.recoveryPoints("d"),
            Array.from({ length: n }, (_, i) => i + 1)
          )
        })
      )
    )

    it.scopedLive("sendOwned and send interleave: one order, the same bytes on the replica", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          yield* connection.sendOwned(write(1, 0, 1))
          yield* connection.send(write(2, 4096, 2, 4096))
          yield* connection.sendOwned({ _tag: "ResyncBegin", seq: 3, epoch: 1, base: 2 })
          yield* connection.sendOwned({ _tag: "Block", seq: 4, epoch: 1, block: 1, data: bytes(BLOCK, 4) })
          // A payload that is a view into a larger buffer is sent as exactly the view.
          const big = bytes(3 * BLOCK, 0)
          big.fill(5, BLOCK, 2 * BLOCK)
          yield* connection.sendOwned({
            _tag: "Block",
            seq: 5,
            epoch: 1,
            block: 2,
            data: big.subarray(BLOCK, 2 * BLOCK)
          })
          yield* connection.send({ _tag: "ResyncEnd", seq: 6, epoch: 1 })
          yield* inbox.ackedThrough(6)
          assert.deepStrictEqual(
            (yield* control.log("d")).map((e) => e.seq),
            [1, 2, 3, 4, 5, 6]
          )
          const block0 = yield* control.replicaBlock("d", 0)
          assert.isTrue(block0.subarray(0, 512).every((b) => b === 1))
          assert.isTrue(block0.subarray(4096, 8192).every((b) => b === 2))
          assert.isTrue((yield* control.replicaBlock("d", 1)).every((b) => b === 4))
          assert.isTrue((yield* control.replicaBlock("d", 2)).every((b) => b === 5))
        })
      )
    )

    it.scopedLive(
      "lent data: onWritten comes once per record, and scribbling after it changes nothing received",
      () =>
        run(
          Effect.gen(function* () {
            const { control, connection, inbox } = yield* connected("d")
            const n = 40
            const calls = new Array<number>(n + 1).fill(0)
            // One buffer lent over and over, as a pool reuses its slabs: each record's bytes
            // are overwritten the moment the layer says it is done with them.
            for (let seq = 1; seq <= n; seq++) {
              const data = bytes(BLOCK, seq)
              yield* connection.sendOwned(
                { _tag: "Write", seq, epoch: 0, offset: (seq % 4) * BLOCK, data },
                () => {
                  calls[seq]! += 1
                  data.fill(0xee)
                }
              )
            }
            yield* inbox.ackedThrough(n)
            assert.deepStrictEqual(calls.slice(1), new Array<number>(n).fill(1))
            // Each of the last four writes is the last to its block: what was lent, not the scribble.
            for (let seq = n - 3; seq <= n; seq++)
              assert.isTrue(
                (yield* control.replicaBlock("d", seq % 4)).every((b) => b === seq),
                `block ${seq % 4} holds write ${seq}`
              )
          })
        )
    )

    it.scopedLive(
      "sendAll: a run in one effect, in order among send and sendOwned; onWritten once for the run, after which scribbling changes nothing",
      () =>
        run(
          Effect.gen(function* () {
            const { control, connection, inbox } = yield* connected("d")
            // Longer than the send buffer (64): the run waits for room part of the way.
            const n = 150
            const size = 4096
            const lent = Array.from({ length: n }, (_, i) => bytes(size, (i + 2) % 251))
            let calls = 0
            yield* connection.send(write(1, 0, 1))
            yield* connection.sendAll(
              lent.map((data, i) => ({ _tag: "Write", seq: i + 2, epoch: 0, offset: (i % 32) * size, data })),
              () => {
                calls++
                for (const data of lent) data.fill(0xee)
              }
            )
            yield* connection.sendOwned(write(n + 2, 32 * size, 7, size))
            // An empty run queues nothing; its data (none) is done with at once.
            let emptyCalls = 0
            yield* connection.sendAll([], () => emptyCalls++)
            yield* connection.sendAll([{ _tag: "ResyncBegin", seq: n + 3, epoch: 1, base: n + 2 }])
            yield* connection.send({ _tag: "ResyncEnd", seq: n + 4, epoch: 1 })
            yield* inbox.ackedThrough(n + 4)
            assert.strictEqual(calls, 1)
            assert.strictEqual(emptyCalls, 1)
            assert.deepStrictEqual(
              (yield* control.log("d")).map((e) => e.seq),
              Array.from({ length: n + 4 }, (_, i) => i + 1)
            )
            // Each of the 32 places holds the last write of the run to it, not the scribble.
            const image = yield* control.image("d")
            const lastTo = new Array<number>(32)
            for (let i = 0; i < n; i++) lastTo[i % 32] = i
            for (let k = 0; k < 32; k++)
              assert.isTrue(
                image.subarray(k * size, (k + 1) * size).every((b) => b === (lastTo[k]! + 2) % 251),
                `place ${k} holds write ${lastTo[k]! + 2}`
              )
            assert.isTrue(image.subarray(32 * size, 33 * size).every((b) => b === 7))
          })
        )
    )

    it.scopedLive("sendAll suspends while the buffer is full and goes on when drained", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          const { records, bytes: size } = harness.overflow
          yield* control.stallIntake(true)
          const sender = yield* Effect.forkScoped(
            connection.sendAll(
              Array.from({ length: records }, (_, i) =>
                write(i + 1, (i * size) % (BLOCK * 1024), (i + 1) % 251, size)
              )
            )
          )
          yield* Effect.sleep("500 millis")
          assert.isTrue(
            (yield* Fiber.poll(sender))._tag === "None",
            "sendAll must suspend while the receiver does not read"
          )
          yield* control.stallIntake(false)
          yield* Fiber.join(sender)
          yield* inbox.ackedThrough(records)
          assert.strictEqual(yield* control.durableSeq("d"), records)
        }),
        { sendBuffer: 4 }
      )
    )

    it.scopedLive("a gap is reported; later records are rejected until a resync-begin", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          yield* connection.send(write(1, 0, 1))
          yield* inbox.ackedThrough(1)
          yield* connection.send(write(3, 0, 3))
          assert.deepStrictEqual(yield* inbox.next, { _tag: "Gap", expected: 2 })
          yield* connection.send(write(4, 0, 4))
          // A marker relying on records the receiver lacks (base 4) is no resync-begin for it.
          yield* connection.send({ _tag: "ResyncBegin", seq: 5, epoch: 1, base: 4 })
          // The filter relies on what was acked (base 1): the marker is accepted across the gap.
          yield* connection.send({ _tag: "ResyncBegin", seq: 6, epoch: 1, base: 1 })
          yield* connection.send({ _tag: "Block", seq: 7, epoch: 1, block: 1, data: bytes(BLOCK, 7) })
          yield* connection.send({ _tag: "ResyncEnd", seq: 8, epoch: 1 })
          const seen = yield* inbox.ackedThrough(8)
          assert.isTrue(
            seen.every((m) => m._tag === "Ack" && m.seq >= 6),
            "rejected records are neither acked nor new gaps"
          )
          assert.deepStrictEqual(
            (yield* control.log("d")).map((e) => e.seq),
            [1, 6, 7, 8]
          )
          const block0 = yield* control.replicaBlock("d", 0)
          assert.isTrue(
            block0.subarray(0, 512).every((b) => b === 1),
            "records 3 and 4 were not applied"
          )
          assert.isTrue((yield* control.replicaBlock("d", 1)).every((b) => b === 7))
          // Recovery points: the write in sync and the resync-end, never inside the resync.
          assert.deepStrictEqual(yield* control.recoveryPoints("d"), [1, 8])
        })
      )
    )

    it.scopedLive("a record lost on the way makes the next one a gap", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          yield* connection.send(write(1, 0, 1))
          yield* inbox.ackedThrough(1)
          yield* control.dropNextRecord
          yield* connection.send(write(2, 0, 2))
          yield* connection.send(write(3, 0, 3))
          assert.deepStrictEqual(yield* inbox.next, { _tag: "Gap", expected: 2 })
        })
      )
    )

    it.scopedLive("duplicates are acked again and not applied twice", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          yield* connection.send(write(1, 0, 1))
          yield* connection.send(write(2, 4096, 2))
          yield* inbox.ackedThrough(2)
          // Same seq, different bytes: a duplicate must not overwrite.
          yield* connection.send(write(2, 4096, 9))
          assert.deepStrictEqual(yield* inbox.next, { _tag: "Ack", seq: 2 })
          yield* connection.send(write(1, 0, 9))
          assert.deepStrictEqual(yield* inbox.next, { _tag: "Ack", seq: 2 })
          assert.deepStrictEqual(
            (yield* control.log("d")).map((e) => e.seq),
            [1, 2]
          )
          const image = yield* control.image("d")
          assert.isTrue(image.subarray(0, 512).every((b) => b === 1))
          assert.isTrue(image.subarray(4096, 4096 + 512).every((b) => b === 2))
        })
      )
    )

    it.scopedLive("send suspends when the buffer is full and resumes when drained", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          const { records, bytes: size } = harness.overflow
          yield* control.stallIntake(true)
          const sent = yield* Ref.make(0)
          const sender = yield* Effect.forkScoped(
            Effect.forEach(
              Array.from({ length: records }, (_, i) => i + 1),
              (seq) =>
                Effect.zipRight(
                  connection.send(write(seq, ((seq - 1) * size) % (BLOCK * 1024), seq % 251, size)),
                  Ref.update(sent, (n) => n + 1)
                ),
              { discard: true }
            )
          )
          // Wait until sending stops making progress.
          let before = -1
          let now = yield* Ref.get(sent)
          while (now !== before) {
            before = now
            yield* Effect.sleep("300 millis")
            now = yield* Ref.get(sent)
          }
          assert.isBelow(now, records, "send must suspend while the receiver does not read")
          assert.isUndefined(
            yield* Fiber.poll(sender).pipe(Effect.map((o) => (o._tag === "Some" ? o : undefined)))
          )
          yield* control.stallIntake(false)
          yield* Fiber.join(sender)
          yield* inbox.ackedThrough(records)
          assert.strictEqual(yield* control.durableSeq("d"), records)
        }),
        { sendBuffer: 4 }
      )
    )

    it.scopedLive("a hello is refused on geometry mismatch, bad geometry, or a second connection", () =>
      run(
        Effect.gen(function* () {
          const port = yield* Port
          yield* port.connect(hello("d"))
          const second = yield* Effect.flip(Effect.scoped(port.connect(hello("d"))))
          assert.instanceOf(second, ReceiverRefused)
          assert.strictEqual((second as LogReceiver.ReceiverRefused).reason, "already-connected")
          const mismatch = yield* Effect.flip(Effect.scoped(port.connect({ ...hello("d"), blockCount: 7 })))
          assert.strictEqual(mismatch._tag, "ReceiverRefused")
          assert.strictEqual((mismatch as LogReceiver.ReceiverRefused).reason, "geometry-mismatch")
          const bad = yield* Effect.flip(Effect.scoped(port.connect({ ...hello("e"), blockSize: 1000 })))
          assert.strictEqual((bad as LogReceiver.ReceiverRefused).reason, "bad-geometry")
        })
      )
    )

    it.scopedLive("a dropped connection fails messages and send with ConnectionLost", () =>
      run(
        Effect.gen(function* () {
          const port = yield* Port
          const { control, connection, inbox } = yield* connected("d")
          yield* connection.send(write(1, 0, 1))
          yield* inbox.ackedThrough(1)
          yield* control.dropConnection("d")
          const exit = yield* inbox.lost
          assert.isTrue(Exit.isFailure(exit))
          if (Exit.isFailure(exit)) assert.instanceOf(Cause.squash(exit.cause), ConnectionLost)
          const error = yield* Effect.flip(connection.send(write(2, 0, 2)))
          assert.instanceOf(error, ConnectionLost)
          // The disk is free for a new connection.
          yield* eventually(Effect.map(control.isConnected("d"), (c) => !c))
          const again = yield* port.connect(hello("d", 1))
          assert.strictEqual(again.durableSeq, 1)
        })
      )
    )

    it.scopedLive("closing the scope closes the connection", () =>
      run(
        Effect.gen(function* () {
          const port = yield* Port
          const control = yield* MemoryReceiver
          const connection = yield* Effect.scoped(port.connect(hello("d")))
          const error = yield* Effect.flip(connection.send(write(1, 0, 1)))
          assert.instanceOf(error, ConnectionLost)
          yield* eventually(Effect.map(control.isConnected("d"), (c) => !c))
        })
      )
    )

    it.scopedLive("a record outside the disk closes the connection and never reaches the log", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          yield* connection.send(write(1, BLOCK * 1024 - 100, 1, 512))
          const exit = yield* inbox.lost
          assert.isTrue(Exit.isFailure(exit))
          assert.deepStrictEqual(yield* control.log("d"), [])
        })
      )
    )

    it.scopedLive("acks wait for durability: on-flush, stalled acks, restart losing unacked records", () =>
      run(
        Effect.gen(function* () {
          const port = yield* Port
          const control = yield* MemoryReceiver
          yield* Effect.scoped(
            Effect.gen(function* () {
              const connection = yield* port.connect(hello("d"))
              const inbox = yield* listen(connection)
              yield* connection.send(write(1, 0, 1))
              yield* connection.send(write(2, 0, 2))
              yield* Effect.sleep("100 millis")
              assert.deepStrictEqual(yield* inbox.pending.pipe(Effect.map((c) => [...c])), [])
              yield* control.flush
              assert.deepStrictEqual(yield* inbox.next, { _tag: "Ack", seq: 2 })
              yield* control.stallAcks(true)
              yield* connection.send(write(3, 0, 3))
              yield* Effect.sleep("100 millis")
              yield* control.flush
              assert.deepStrictEqual(yield* inbox.pending.pipe(Effect.map((c) => [...c])), [])
              yield* control.restart({ loseUnacked: true })
              yield* inbox.lost
            })
          )
          yield* control.stallAcks(false)
          yield* eventually(Effect.map(control.isConnected("d"), (c) => !c))
          const again = yield* port.connect(hello("d", 2))
          assert.strictEqual(again.durableSeq, 2)
          assert.deepStrictEqual(
            (yield* control.log("d")).map((e) => e.seq),
            [1, 2]
          )
          // The receiver expects seq 3 again: the lost record is accepted anew.
          const inbox = yield* listen(again)
          yield* again.send(write(3, 0, 7))
          yield* eventually(
            Effect.succeed(true).pipe(
              Effect.zipLeft(control.flush),
              Effect.zipRight(control.durableSeq("d")),
              Effect.map((s) => s === 3)
            )
          )
          assert.deepStrictEqual(yield* inbox.next, { _tag: "Ack", seq: 3 })
        }),
        { ack: "on-flush" }
      )
    )

    // --- Checksum requests (docs/wire.md, "Checksums") ------------------------------------------

    it.scopedLive(
      "checksums: digests of each block's newest version, in request order, after the acks of every record before the request",
      () =>
        run(
          Effect.gen(function* () {
            const { connection, inbox } = yield* connected("d")
            const image = new Uint8Array(BLOCK * 1024)
            const sendAll = (records: ReadonlyArray<LogReceiver.OutRecord>) =>
              Effect.forEach(
                records,
                (r) =>
                  Effect.zipRight(
                    connection.send(r),
                    Effect.sync(() => model(image, r))
                  ),
                {
                  discard: true
                }
              )
            // Block 1 is written three times (a straddling write, a block, a write into it).
            yield* sendAll([
              write(1, BLOCK - 256, 1, 1024),
              { _tag: "ResyncBegin", seq: 2, epoch: 1, base: 1 },
              { _tag: "Block", seq: 3, epoch: 1, block: 1, data: bytes(BLOCK, 3) },
              { _tag: "Block", seq: 4, epoch: 1, block: 7, data: bytes(BLOCK, 4) },
              write(5, BLOCK + 100, 5, 300)
            ])
            yield* connection.requestChecksums({
              _tag: "ChecksumRequest",
              algorithm: 0,
              id: 41,
              blocks: [0, 1, 2, 7, 1023]
            })
            const seen = yield* answered(inbox, 41)
            const reply = seen.at(-1)!
            assert.strictEqual(reply._tag, "ChecksumReply")
            if (reply._tag !== "ChecksumReply") return
            assert.strictEqual(reply.through, 5)
            assert.isTrue(
              seen.some((m) => m._tag === "Ack" && m.seq === 5),
              "the ack of the records before the request comes before its answer"
            )
            assert.deepStrictEqual(
              digestsOf(reply),
              [0, 1, 2, 7, 1023].map((b) => blockSha(image, b))
            )
            // Records after it are not in it; the next request sees them, and only those before it.
            yield* sendAll([{ _tag: "Block", seq: 6, epoch: 1, block: 2, data: bytes(BLOCK, 6) }])
            yield* connection.requestChecksums({ _tag: "ChecksumRequest", algorithm: 0, id: 42, blocks: [2] })
            const second = (yield* answered(inbox, 42)).at(-1)!
            yield* sendAll([{ _tag: "Block", seq: 7, epoch: 1, block: 2, data: bytes(BLOCK, 7) }])
            assert.strictEqual(second._tag, "ChecksumReply")
            if (second._tag !== "ChecksumReply") return
            assert.strictEqual(second.through, 6)
            assert.deepStrictEqual(digestsOf(second), [sha(bytes(BLOCK, 6))])
          })
        )
    )

    it.scopedLive(
      "checksums: the answer waits until the records before it are durable; what follows waits behind it",
      () =>
        run(
          Effect.gen(function* () {
            const { control, connection, inbox } = yield* connected("d")
            yield* connection.send({ _tag: "ResyncBegin", seq: 1, epoch: 1, base: 0 })
            yield* connection.send({ _tag: "Block", seq: 2, epoch: 1, block: 3, data: bytes(BLOCK, 2) })
            yield* connection.requestChecksums({ _tag: "ChecksumRequest", algorithm: 0, id: 1, blocks: [3] })
            // Sent after the request: it must not be in the answer, durable or not.
            yield* connection.send({ _tag: "Block", seq: 3, epoch: 1, block: 3, data: bytes(BLOCK, 3) })
            yield* Effect.sleep("150 millis")
            assert.deepStrictEqual([...(yield* inbox.pending)], [], "nothing durable yet: no ack, no answer")
            yield* control.flush
            assert.deepStrictEqual(yield* inbox.next, { _tag: "Ack", seq: 2 })
            const reply = yield* inbox.next
            assert.strictEqual(reply._tag, "ChecksumReply")
            if (reply._tag !== "ChecksumReply") return
            assert.strictEqual(reply.through, 2)
            assert.deepStrictEqual(digestsOf(reply), [sha(bytes(BLOCK, 2))])
            // The record behind the request is taken once the answer went out.
            yield* eventually(
              Effect.zipRight(
                control.flush,
                Effect.map(control.durableSeq("d"), (s) => s === 3)
              )
            )
            assert.deepStrictEqual(yield* inbox.next, { _tag: "Ack", seq: 3 })
            // A stuck fsync holds the answer too; it comes once the fsync does.
            yield* control.stallAcks(true)
            yield* connection.send({ _tag: "Block", seq: 4, epoch: 1, block: 3, data: bytes(BLOCK, 4) })
            yield* connection.requestChecksums({ _tag: "ChecksumRequest", algorithm: 0, id: 2, blocks: [3] })
            yield* Effect.sleep("150 millis")
            yield* control.flush
            assert.deepStrictEqual([...(yield* inbox.pending)], [], "acks stalled: no ack, no answer")
            yield* control.stallAcks(false)
            yield* control.flush
            assert.deepStrictEqual(yield* inbox.next, { _tag: "Ack", seq: 4 })
            const after = yield* inbox.next
            assert.isTrue(after._tag === "ChecksumReply" && after.through === 4 && after.id === 2)
          }),
          { ack: "on-flush" }
        )
    )

    it.scopedLive("checksums: during a gap, the answer reflects the records accepted before it", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          yield* connection.send(write(1, 0, 1, BLOCK))
          yield* inbox.ackedThrough(1)
          yield* control.dropNextRecord
          yield* connection.send(write(2, 0, 2, BLOCK))
          yield* connection.send(write(3, 0, 3, BLOCK))
          yield* connection.requestChecksums({ _tag: "ChecksumRequest", algorithm: 0, id: 9, blocks: [0] })
          const seen = yield* answered(inbox, 9)
          assert.isTrue(seen.some((m) => m._tag === "Gap" && m.expected === 2))
          const reply = seen.at(-1)!
          assert.isTrue(reply._tag === "ChecksumReply" && reply.through === 1)
          if (reply._tag === "ChecksumReply") assert.deepStrictEqual(digestsOf(reply), [sha(bytes(BLOCK, 1))])
        })
      )
    )

    it.scopedLive(
      "checksums: a block that fails its check is refused (damaged), the link stays up; a rewrite heals it; undetected damage shows in the digest",
      () =>
        run(
          Effect.gen(function* () {
            const { control, connection, inbox } = yield* connected("d")
            yield* connection.send(write(1, 0, 1, 4 * BLOCK))
            yield* inbox.ackedThrough(1)
            yield* control.damage("d", 2)
            yield* control.overwrite("d", 3, bytes(BLOCK, 0x33))
            yield* connection.requestChecksums({
              _tag: "ChecksumRequest",
              algorithm: 0,
              id: 1,
              blocks: [1, 2]
            })
            const refused = (yield* answered(inbox, 1)).at(-1)!
            assert.strictEqual(refused._tag, "ChecksumRefused")
            if (refused._tag === "ChecksumRefused") assert.strictEqual(refused.reason, "damaged")
            yield* connection.requestChecksums({
              _tag: "ChecksumRequest",
              algorithm: 0,
              id: 2,
              blocks: [1, 3]
            })
            const reply = (yield* answered(inbox, 2)).at(-1)!
            assert.strictEqual(reply._tag, "ChecksumReply")
            if (reply._tag === "ChecksumReply")
              assert.deepStrictEqual(digestsOf(reply), [sha(bytes(BLOCK, 1)), sha(bytes(BLOCK, 0x33))])
            yield* connection.send({ _tag: "ResyncBegin", seq: 2, epoch: 1, base: 1 })
            yield* connection.send({ _tag: "Block", seq: 3, epoch: 1, block: 2, data: bytes(BLOCK, 9) })
            yield* connection.requestChecksums({ _tag: "ChecksumRequest", algorithm: 0, id: 3, blocks: [2] })
            const healed = (yield* answered(inbox, 3)).at(-1)!
            assert.isTrue(healed._tag === "ChecksumReply" && healed.through === 3)
            if (healed._tag === "ChecksumReply")
              assert.deepStrictEqual(digestsOf(healed), [sha(bytes(BLOCK, 9))])
          })
        )
    )

    it.scopedLive("checksums: a request naming a block beyond the disk closes the connection", () =>
      run(
        Effect.gen(function* () {
          const { connection, inbox } = yield* connected("d")
          yield* connection.requestChecksums({
            _tag: "ChecksumRequest",
            algorithm: 0,
            id: 1,
            blocks: [0, 1024]
          })
          const exit = yield* inbox.lost
          assert.isTrue(Exit.isFailure(exit))
          assert.deepStrictEqual(
            [...(yield* inbox.pending)].filter((m) => m._tag !== "Ack"),
            []
          )
        })
      )
    )

    it.scopedLive("checksums: a request waiting when the connection drops is never answered", () =>
      run(
        Effect.gen(function* () {
          const { control, connection, inbox } = yield* connected("d")
          yield* connection.send(write(1, 0, 1))
          yield* connection.requestChecksums({ _tag: "ChecksumRequest", algorithm: 0, id: 1, blocks: [0] })
          yield* Effect.sleep("100 millis")
          yield* control.dropConnection("d")
          const exit = yield* inbox.lost
          assert.isTrue(Exit.isFailure(exit))
          assert.deepStrictEqual([...(yield* inbox.pending)], [])
          assert.instanceOf(
            yield* Effect.flip(
              connection.requestChecksums({ _tag: "ChecksumRequest", algorithm: 0, id: 2, blocks: [0] })
            ),
            ConnectionLost
          )
        }),
        { ack: "on-flush" }
      )
    )
  })

// ---------------------------------------------------------------------------------------------

contract({
  name: "layerMemory",
  layer: (options) => LogReceiver.layerMemory(options),
  overflow: { records: 64, bytes: 4096 }
})

contract({
  name: "layerTcp (loopback)",
  layer: (options = {}) =>
    TcpReceiver.layerWithClient({ ...options, client: { sendBuffer: options.sendBuffer } }),
  // Kernel socket buffers on loopback hold megabytes (here it stalls after ~9 MiB): send enough to overflow them.
  overflow: { records: 48, bytes: 1 << 20 }
})

// ---------------------------------------------------------------------------------------------
// TCP only: real sockets on loopback.

/** A raw TCP server whose behaviour the test scripts; returns its port. */
const rawServer = (onConnection: (socket: Net.Socket) => void) =>
  Effect.acquireRelease(
    Effect.async<{ server: Net.Server; sockets: Set<Net.Socket> }>((resume) => {
      const sockets = new Set<Net.Socket>()
      const server = Net.createServer((socket) => {
        sockets.add(socket)
        socket.on("error", () => {})
        socket.on("close", () => sockets.delete(socket))
        onConnection(socket)
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, sockets })))
    }),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        for (const socket of sockets) socket.destroy()
      })
  ).pipe(Effect.map(({ server }) => (server.address() as Net.AddressInfo).port))

/** A raw client socket: frames it receives, and whether the server closed it. */
const rawClient = (port: number) =>
  Effect.acquireRelease(
    Effect.async<{ socket: Net.Socket; frames: Array<Wire.Frame>; closed: Deferred.Deferred<void> }>(
      (resume) => {
        const closed = Deferred.unsafeMake<void>(undefined as never)
        const frames: Array<Wire.Frame> = []
        const decoder = Wire.makeDecoder()
        const socket = Net.createConnection({ host: "127.0.0.1", port }, () =>
          resume(Effect.succeed({ socket, frames, closed }))
        )
        socket.on("data", (chunk) => decoder.pushInto(chunk, frames))
        socket.on("error", () => {})
        socket.on("close", () => Deferred.unsafeDone(closed, Exit.void))
      }
    ),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

describe("LogReceiver over TCP: real sockets", () => {
  it.scopedLive("a corrupted frame closes only its own connection, with a typed error", () =>
    Effect.gen(function* () {
      const server = yield* TcpReceiver.TestTcpReceiver
      const port = yield* Port
      // A healthy connection for another disk, through the TCP layer.
      const healthy = yield* port.connect(hello("healthy"))
      const inbox = yield* listen(healthy)
      yield* healthy.send(write(1, 0, 1))
      yield* inbox.ackedThrough(1)

      const raw = yield* rawClient(server.port)
      raw.socket.write(Wire.encode({ _tag: "Hello", ...hello("raw") }))
      yield* eventually(Effect.sync(() => raw.frames.length > 0))
      assert.deepStrictEqual(raw.frames[0], { _tag: "Welcome", durableSeq: 0 })
      const good = Wire.encode(write(1, 0, 5))
      const bad = Buffer.from(Wire.encode(write(2, 0, 6)))
      bad[Wire.HEADER_BYTES + 10] = bad[Wire.HEADER_BYTES + 10]! ^ 0xff // payload byte: only its CRC can tell
      raw.socket.write(Buffer.concat([good, bad]))
      yield* Deferred.await(raw.closed).pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(server.errors.length, 1)
      assert.instanceOf(server.errors[0], Wire.WireError)
      assert.strictEqual(server.errors[0]!.reason, "payload-crc")
      // The corrupt record never reached the log; the good one before it did.
      assert.deepStrictEqual(
        server.store.log("raw").map((e) => e.seq),
        [1]
      )
      // The other connection is untouched.
      yield* healthy.send(write(2, 0, 2))
      yield* inbox.ackedThrough(2)
      assert.strictEqual(server.store.durableSeq("healthy"), 2)
    }).pipe(Effect.provide(TcpReceiver.layerWithClient()))
  )

  it.scopedLive("a frame beyond the server's maximum closes the connection with too-large", () =>
    Effect.gen(function* () {
      const server = yield* TcpReceiver.TestTcpReceiver
      const port = yield* Port
      const connection = yield* port.connect(hello("d"))
      const inbox = yield* listen(connection)
      yield* connection.send(write(1, 0, 1, 8192))
      const exit = yield* inbox.lost
      assert.isTrue(Exit.isFailure(exit))
      assert.strictEqual(server.errors[0]?.reason, "too-large")
      assert.deepStrictEqual(server.store.log("d"), [])
    }).pipe(Effect.provide(TcpReceiver.layerWithClient({ maxFrameBytes: 4096 })))
  )

  it.scopedLive("nobody listening → ReceiverUnreachable", () =>
    Effect.gen(function* () {
      const port = yield* Effect.scoped(rawServer(() => {}))
      const error = yield* Effect.flip(
        Effect.scoped(
          Effect.flatMap(Port, (p) => p.connect(hello("d"))).pipe(
            Effect.provide(LogReceiver.layerTcp({ host: "127.0.0.1", port }))
          )
        )
      )
      assert.instanceOf(error, ReceiverUnreachable)
    })
  )

  it.scopedLive("no welcome in time → ReceiverUnreachable (handshake timeout)", () =>
    Effect.gen(function* () {
      const port = yield* rawServer(() => {})
      const error = yield* Effect.flip(
        Effect.scoped(
          Effect.flatMap(Port, (p) => p.connect(hello("d"))).pipe(
            Effect.provide(LogReceiver.layerTcp({ host: "127.0.0.1", port, connectTimeout: "200 millis" }))
          )
        )
      )
      assert.instanceOf(error, ReceiverUnreachable)
      assert.instanceOf((error as LogReceiver.ReceiverUnreachable).cause, Cause.TimeoutException)
    })
  )

  it.scopedLive("garbage instead of a welcome → ReceiverUnreachable with the WireError", () =>
    Effect.gen(function* () {
      const port = yield* rawServer((socket) =>
        socket.write(Buffer.from("HTTP/1.1 400 Bad Request\r\n\r\n......"))
      )
      const error = yield* Effect.flip(
        Effect.scoped(
          Effect.flatMap(Port, (p) => p.connect(hello("d"))).pipe(
            Effect.provide(LogReceiver.layerTcp({ host: "127.0.0.1", port }))
          )
        )
      )
      assert.instanceOf(error, ReceiverUnreachable)
      const cause = (error as LogReceiver.ReceiverUnreachable).cause
      assert.instanceOf(cause, Wire.WireError)
      assert.strictEqual((cause as Wire.WireError).reason, "bad-magic")
    })
  )

  it.scopedLive("a corrupted frame from the receiver → ConnectionLost with the WireError", () =>
    Effect.gen(function* () {
      const port = yield* rawServer((socket) => {
        socket.once("data", () => {
          const ack = Buffer.from(Wire.encode({ _tag: "Ack", seq: 1 }))
          ack[9] = ack[9]! ^ 1 // inside seq: the header CRC catches it
          socket.write(Buffer.concat([Wire.encode({ _tag: "Welcome", durableSeq: 0 }), ack]))
        })
      })
      const error = yield* Effect.gen(function* () {
        const connection = yield* (yield* Port).connect(hello("d"))
        return yield* Effect.flip(Stream.runDrain(connection.messages))
      }).pipe(Effect.scoped, Effect.provide(LogReceiver.layerTcp({ host: "127.0.0.1", port })))
      assert.instanceOf(error, ConnectionLost)
      assert.instanceOf(error.cause, Wire.WireError)
      assert.strictEqual((error.cause as Wire.WireError).reason, "header-crc")
    })
  )
})

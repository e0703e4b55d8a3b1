/**
 * Bad input against a running server (in process, real loopback sockets): each case of
 * the matrix sends what no well-behaved client sends and checks the protocol's answer —
 * an NBD error reply, an option error, or a closed connection with a logged, typed error.
 * Meanwhile another client keeps writing through the same server: its writes must all
 * land, read back, and replicate (the replica restores equal to the disk).
 */
import { Deferred, Effect, Fiber, type Scope } from "effect"
import { describe, expect, it } from "vitest"
import * as Nbd from "../../src/nbd/Nbd.js"
import { Connection, go } from "../../src/nbd/internal/client.js"
import { DISK_BYTES, type Harness, logged, make, pattern } from "../support/nbdHarness.js"
import { Codec, errnoOf, eventually, options, P, transmitting, untilClosed } from "../support/nbdRaw.js"

const MAX = 1024 * 1024 // the harness's maxPayload
const GOOD_REGION = 1024 * 1024

interface Case {
  readonly name: string
  readonly run: (h: Harness) => Effect.Effect<void, unknown, Scope.Scope>
}

const closedWithLog = (h: Harness, reader: Parameters<typeof untilClosed>[0], tag: string, reason?: string) =>
  Effect.gen(function* () {
    yield* untilClosed(reader)
    yield* eventually(
      () =>
        h.logs.some(
          (l) =>
            l.level === "WARN" && l.tags.includes(tag) && (reason === undefined || l.text.includes(reason))
        ),
      `a logged ${tag} ${reason ?? ""}`
    )
  })

const handshakeCases: ReadonlyArray<Case> = [
  {
    name: "unknown client flags: closed, logged",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint, 0xffffffff)
        yield* closedWithLog(h, channel.reader, "NbdProtocolError", "unknown-client-flags")
      })
  },
  {
    name: "bad option magic: closed, logged",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint)
        const bytes = Codec.encodeOption(P.OPT_GO)
        bytes[0]! ^= 0xff
        channel.socket.write(bytes)
        yield* closedWithLog(h, channel.reader, "NbdProtocolError", "bad-option-magic")
      })
  },
  {
    name: "unknown and unsupported options: NBD_REP_ERR_UNSUP, then GO still works",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint)
        for (const option of [99, P.OPT_STARTTLS, P.OPT_STRUCTURED_REPLY, 10, 2 ** 32 - 1]) {
          const replies = yield* channel.ask(option, Uint8Array.of(1, 2, 3))
          expect(replies.map((r) => r.type)).toEqual([P.REP_ERR_UNSUP])
        }
        expect((yield* go(channel, "test")).size).toBe(DISK_BYTES)
      })
  },
  {
    name: "NBD_OPT_LIST: the export then ACK; with data: NBD_REP_ERR_INVALID",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint)
        const bad = yield* channel.ask(P.OPT_LIST, Uint8Array.of(0))
        expect(bad.map((r) => r.type)).toEqual([P.REP_ERR_INVALID])
        const good = yield* channel.ask(P.OPT_LIST)
        expect(good.map((r) => r.type)).toEqual([P.REP_SERVER, P.REP_ACK])
        expect(Codec.decodeServerEntry(good[0]!.data)).toBe("test")
      })
  },
  {
    name: "NBD_OPT_INFO: lengths that do not add up, an unknown export, then the export's info",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint)
        const good = Codec.encodeInfoRequest({ name: "test", requests: [P.INFO_BLOCK_SIZE] })
        for (const data of [
          good.subarray(0, 5),
          good.subarray(0, good.byteLength - 1),
          new Uint8Array(6).fill(0xff)
        ]) {
          const replies = yield* channel.ask(P.OPT_INFO, data)
          expect(replies.map((r) => r.type)).toEqual([P.REP_ERR_INVALID])
        }
        const unknown = yield* channel.ask(
          P.OPT_INFO,
          Codec.encodeInfoRequest({ name: "other", requests: [] })
        )
        expect(unknown.map((r) => r.type)).toEqual([P.REP_ERR_UNKNOWN])
        const info = yield* channel.ask(
          P.OPT_INFO,
          Codec.encodeInfoRequest({ name: "test", requests: [P.INFO_NAME, P.INFO_DESCRIPTION, 999] })
        )
        expect(info.at(-1)!.type).toBe(P.REP_ACK)
        const decoded = info.slice(0, -1).map((r) => Codec.decodeInfo(r.data))
        expect(decoded).toContainEqual({
          _tag: "Export",
          size: DISK_BYTES,
          flags: h.server.transmissionFlags
        })
        expect(decoded).toContainEqual({
          _tag: "BlockSize",
          sizes: { minimum: 512, preferred: 4096, maximum: MAX }
        })
        expect(decoded).toContainEqual({ _tag: "Text", type: P.INFO_NAME, text: "test" })
        // INFO does not enter transmission: GO for the default export ("") still can.
        expect((yield* go(channel, "")).blockSizes?.minimum).toBe(512)
      })
  },
  {
    name: "NBD_OPT_EXPORT_NAME for an unknown export: closed (the spec leaves no other answer), logged",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint)
        channel.send(P.OPT_EXPORT_NAME, Codec.encodeName("nope"))
        expect(yield* untilClosed(channel.reader)).toBe(0)
        yield* eventually(() => logged(h, "NbdProtocolError"), "the unknown-export log")
      })
  },
  {
    name: "NBD_OPT_EXPORT_NAME without NO_ZEROES: size, flags and 124 zeroes, then transmission",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint, P.FLAG_C_FIXED_NEWSTYLE)
        channel.send(P.OPT_EXPORT_NAME, Codec.encodeName("test"))
        const answer = (yield* channel.reader.take(134, "export-name answer"))!
        expect(Number(Buffer.from(answer).readBigUInt64BE(0))).toBe(DISK_BYTES)
        expect(Buffer.from(answer).readUInt16BE(8)).toBe(h.server.transmissionFlags)
        expect(answer.subarray(10).every((b) => b === 0)).toBe(true)
        const connection = yield* Connection.start(channel.socket, channel.reader)
        expect(yield* errnoOf(connection.raw({ type: P.CMD_READ, offset: 0, length: 512 }))).toBe("ok")
      })
  },
  {
    name: "NBD_OPT_ABORT: ACK, then closed",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint)
        const replies = yield* channel.ask(P.OPT_ABORT, Uint8Array.of(7))
        expect(replies.map((r) => r.type)).toEqual([P.REP_ACK])
        expect(yield* untilClosed(channel.reader)).toBe(0)
      })
  },
  {
    name: "option data over the limit: dropped unread, NBD_REP_ERR_TOO_BIG, then GO works",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint)
        const replies = yield* channel.ask(99, new Uint8Array(200 * 1024).fill(0x49))
        expect(replies.map((r) => r.type)).toEqual([P.REP_ERR_TOO_BIG])
        expect((yield* go(channel, "test")).size).toBe(DISK_BYTES)
      })
  },
  {
    name: "the client leaves inside an option's data: logged, nothing else",
    run: (h) =>
      Effect.gen(function* () {
        const channel = yield* options(h.endpoint)
        channel.socket.end(Codec.encodeOption(P.OPT_GO, new Uint8Array(40)).subarray(0, 30))
        yield* eventually(() => logged(h, "EndedMidMessage"), "the mid-option log")
      })
  }
]

const transmissionCases: ReadonlyArray<Case> = [
  {
    name: "bad request magic: the requests before it answered, then closed, logged",
    run: (h) =>
      Effect.gen(function* () {
        const c = yield* transmitting(h.endpoint)
        const read = c.sendNow({ type: P.CMD_READ, offset: 0, length: 4096 })
        const bad = Codec.encodeRequest({ flags: 0, type: P.CMD_READ, cookie: 99n, offset: 0, length: 512 })
        bad[1]! ^= 0x01
        c.rawBytes(bad)
        expect((yield* read).byteLength).toBe(4096)
        expect(yield* Deferred.await(c.closed)).toBeUndefined()
        yield* eventually(() => logged(h, "NbdProtocolError"), "the bad-magic log")
      })
  },
  {
    name: "unknown commands and flags not documented for the command: EINVAL, the connection goes on",
    run: (h) =>
      Effect.gen(function* () {
        const c = yield* transmitting(h.endpoint)
        const answers = yield* Effect.all(
          [
            c.raw({ type: 99, offset: 0, length: 512 }),
            c.raw({ type: P.CMD_CACHE, offset: 0, length: 512 }),
            c.raw({ type: P.CMD_BLOCK_STATUS, offset: 0, length: 512 }),
            c.raw({ type: P.CMD_READ, flags: P.CMD_FLAG_DF, offset: 0, length: 512 }),
            c.raw({ type: P.CMD_WRITE_ZEROES, flags: P.CMD_FLAG_FAST_ZERO, offset: 0, length: 512 }),
            c.raw({
              type: P.CMD_WRITE,
              flags: P.CMD_FLAG_NO_HOLE,
              offset: 2 << 20,
              length: 512,
              payload: new Uint8Array(512).fill(1)
            }),
            c.raw({ type: P.CMD_FLUSH, flags: 0x8000 })
          ].map(errnoOf),
          { concurrency: "unbounded" }
        )
        expect(answers).toEqual(Array(7).fill(P.EINVAL))
        // The refused WRITE's payload was read off: the stream is still in step.
        const back = yield* c.raw({ type: P.CMD_READ, offset: 2 << 20, length: 512 })
        expect(back.every((b) => b === 0)).toBe(true)
      })
  },
  {
    name: "over the maximum payload: EINVAL (a WRITE's payload dropped unread), the connection goes on",
    run: (h) =>
      Effect.gen(function* () {
        const c = yield* transmitting(h.endpoint)
        expect(yield* errnoOf(c.raw({ type: P.CMD_READ, offset: 0, length: MAX + 512 }))).toBe(P.EINVAL)
        const big = new Uint8Array(MAX + 512).fill(0xee)
        expect(
          yield* errnoOf(c.raw({ type: P.CMD_WRITE, offset: 0, length: big.byteLength, payload: big }))
        ).toBe(P.EINVAL)
        expect(yield* errnoOf(c.raw({ type: P.CMD_READ, offset: 0, length: MAX }))).toBe("ok")
        // TRIM and WRITE_ZEROES carry no payload: a range over the maximum is zeroed.
        expect(yield* errnoOf(c.raw({ type: P.CMD_WRITE_ZEROES, offset: 2 << 20, length: MAX + 4096 }))).toBe(
          "ok"
        )
      })
  },
  {
    name: "past the export's end: ENOSPC for writes, EINVAL otherwise; the last sector is fine",
    run: (h) =>
      Effect.gen(function* () {
        const c = yield* transmitting(h.endpoint)
        const end = DISK_BYTES
        const cases: Array<[Parameters<typeof c.raw>[0], number | "ok"]> = [
          [{ type: P.CMD_READ, offset: end - 512, length: 1024 }, P.EINVAL],
          [{ type: P.CMD_READ, offset: end, length: 512 }, P.EINVAL],
          [{ type: P.CMD_WRITE, offset: end - 512, length: 1024, payload: new Uint8Array(1024) }, P.ENOSPC],
          [{ type: P.CMD_WRITE, offset: 2n ** 63n, length: 512, payload: new Uint8Array(512) }, P.ENOSPC],
          [{ type: P.CMD_WRITE_ZEROES, offset: end, length: 512 }, P.ENOSPC],
          [{ type: P.CMD_TRIM, offset: end - 512, length: 1024 }, P.EINVAL],
          [{ type: P.CMD_READ, offset: 2n ** 64n - 512n, length: 512 }, P.EINVAL],
          [{ type: P.CMD_READ, offset: end - 512, length: 512 }, "ok"],
          [{ type: P.CMD_READ, offset: end, length: 0 }, "ok"]
        ]
        for (const [request, answer] of cases) expect(yield* errnoOf(c.raw(request))).toBe(answer)
      })
  },
  {
    name: "not aligned to 512 (the advertised minimum block): EINVAL, nothing written",
    run: (h) =>
      Effect.gen(function* () {
        const c = yield* transmitting(h.endpoint)
        const at = 3 << 20
        expect(yield* errnoOf(c.raw({ type: P.CMD_READ, offset: at + 100, length: 512 }))).toBe(P.EINVAL)
        expect(
          yield* errnoOf(
            c.raw({ type: P.CMD_WRITE, offset: at, length: 100, payload: new Uint8Array(100).fill(9) })
          )
        ).toBe(P.EINVAL)
        expect(yield* errnoOf(c.raw({ type: P.CMD_TRIM, offset: at + 1, length: 512 }))).toBe(P.EINVAL)
        expect(yield* errnoOf(c.raw({ type: P.CMD_WRITE_ZEROES, offset: at, length: 513 }))).toBe(P.EINVAL)
        expect((yield* c.raw({ type: P.CMD_READ, offset: at, length: 4096 })).every((b) => b === 0)).toBe(
          true
        )
        expect(
          yield* errnoOf(c.raw({ type: P.CMD_WRITE, offset: at, length: 0, payload: new Uint8Array(0) }))
        ).toBe("ok")
      })
  },
  {
    name: "the client leaves inside a request header: logged",
    run: (h) =>
      Effect.gen(function* () {
        const c = yield* transmitting(h.endpoint)
        c.socket.end(
          Codec.encodeRequest({ flags: 0, type: P.CMD_READ, cookie: 1n, offset: 0, length: 512 }).subarray(
            0,
            10
          )
        )
        yield* eventually(() => logged(h, "EndedMidMessage"), "the mid-header log")
      })
  },
  {
    name: "the client leaves inside a WRITE's payload: nothing written, logged",
    run: (h) =>
      Effect.gen(function* () {
        const c = yield* transmitting(h.endpoint)
        const at = 3 << 20
        const entered = h.diskWriteEntered.length
        const header = Codec.encodeRequest({
          flags: 0,
          type: P.CMD_WRITE,
          cookie: 1n,
          offset: at,
          length: 4096
        })
        c.socket.end(Buffer.concat([header, new Uint8Array(100).fill(0x77)]))
        const before = h.logs.filter((l) => l.tags.includes("EndedMidMessage")).length
        yield* eventually(
          () => h.logs.filter((l) => l.tags.includes("EndedMidMessage")).length > before,
          "the mid-payload log"
        )
        expect(h.diskWriteEntered.slice(entered)).not.toContain(at)
        expect((yield* h.disk.read(at, 4096)).every((b) => b === 0)).toBe(true)
      })
  },
  {
    name: "garbage instead of requests: closed, logged",
    run: (h) =>
      Effect.gen(function* () {
        const c = yield* transmitting(h.endpoint)
        c.rawBytes(Buffer.from("GET / HTTP/1.1\r\nHost: nbd\r\n\r\n"))
        yield* Deferred.await(c.closed)
        yield* eventually(() => h.logs.some((l) => l.text.includes("0x47455420")), "the bad-magic log")
      })
  }
]

describe("bad input gets the protocol's answer, and another client goes on", () => {
  it("the malformed-input matrix, while a good client writes and replicates", async () => {
    const outcome = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const h = yield* make()
          // The good client: pipelined patterned writes over its region, round after round.
          const good = yield* Nbd.connect({ connect: h.endpoint, exportName: "test" })
          let rounds = 0
          let stop = false
          const writer = yield* Effect.fork(
            Effect.gen(function* () {
              while (!stop) {
                rounds++
                yield* Effect.forEach(
                  Array.from({ length: 16 }, (_, i) => i * (GOOD_REGION / 16)),
                  (offset) => good.write(offset, pattern(rounds, offset, GOOD_REGION / 16)),
                  { concurrency: 8, discard: true }
                )
              }
            })
          )
          const failures: Array<string> = []
          for (const c of [...handshakeCases, ...transmissionCases]) {
            if (process.env.NBD_DEBUG) console.error("case", c.name)
            const result = yield* Effect.exit(Effect.scoped(c.run(h)).pipe(Effect.timeout("30 seconds")))
            if (result._tag === "Failure") failures.push(`${c.name}: ${String(result.cause)}`)
          }
          stop = true
          yield* Fiber.join(writer)
          yield* good.flush
          // Every one of the good client's writes landed: its last round reads back whole.
          const back = yield* good.read(0, GOOD_REGION)
          const expected = Buffer.concat(
            Array.from({ length: 16 }, (_, i) => pattern(rounds, i * (GOOD_REGION / 16), GOOD_REGION / 16))
          )
          return {
            failures,
            rounds,
            sameData: Buffer.compare(Buffer.from(back), expected) === 0,
            replicated: yield* h.replicaEqualsDisk
          }
        })
      )
    )
    expect(outcome.failures).toEqual([])
    expect(outcome.rounds).toBeGreaterThan(1)
    expect(outcome.sameData).toBe(true)
    expect(outcome.replicated).toBe(true)
  })

  it("a read-only export refuses changes with EPERM and says so in its flags", async () => {
    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const h = yield* make({ serve: { readOnly: true } })
          const c = yield* transmitting(h.endpoint)
          const flags = h.server.transmissionFlags
          expect(flags & P.FLAG_READ_ONLY).not.toBe(0)
          expect(flags & (P.FLAG_SEND_FUA | P.FLAG_SEND_TRIM | P.FLAG_SEND_WRITE_ZEROES)).toBe(0)
          expect(
            yield* errnoOf(
              c.raw({ type: P.CMD_WRITE, offset: 0, length: 512, payload: new Uint8Array(512).fill(1) })
            )
          ).toBe(P.EPERM)
          expect(yield* errnoOf(c.raw({ type: P.CMD_TRIM, offset: 0, length: 512 }))).toBe(P.EPERM)
          expect(yield* errnoOf(c.raw({ type: P.CMD_WRITE_ZEROES, offset: 0, length: 512 }))).toBe(P.EPERM)
          expect(yield* errnoOf(c.raw({ type: P.CMD_READ, offset: 0, length: 512 }))).toBe("ok")
          expect(yield* errnoOf(c.raw({ type: P.CMD_FLUSH }))).toBe("ok")
          expect(h.diskWriteEntered).toEqual([])
        })
      )
    )
  })
})

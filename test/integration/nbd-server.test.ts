/**
 * What the NBD server promises a guest, against a running server in process (real
 * sockets; the replicator over in-memory disk, journal and receiver):
 *
 * - several clients pipelining reads, writes, TRIM, WRITE_ZEROES and FLUSH at once: the
 *   data reads back, and after FLUSH the replica restores equal to the disk;
 * - a WRITE is answered only once the disk has it (mutant: answered early);
 * - FLUSH and FUA are answered only once every earlier answered write is journaled, on
 *   any connection (mutant: FLUSH skips the journal);
 * - connections are bounded and their sockets released; a stalled handshake is cut off;
 * - a unix socket works the same; closing the server answers what it took.
 */
import { Deferred, Effect, Fiber, type Scope } from "effect"
import { describe, expect, it } from "vitest"
import * as Nbd from "../../src/nbd/Nbd.js"
import type * as NbdMutants from "../../src/nbd/internal/mutants.js"
import { DISK_BYTES, type Harness, make, pattern } from "../support/nbdHarness.js"
import { errnoOf, eventually, options, P, transmitting, untilClosed } from "../support/nbdRaw.js"

const run = <A>(use: Effect.Effect<A, unknown, Scope.Scope>): Promise<A> =>
  Effect.runPromise(Effect.scoped(use))

const connect = (h: Harness) => Nbd.connect({ connect: h.endpoint, exportName: "test" })

describe("pipelined clients", () => {
  it("several clients pipelining writes, zeroes, trims, reads and flushes: data reads back, the replica equals the disk", async () => {
    const result = await run(
      Effect.gen(function* () {
        const h = yield* make()
        const clients = yield* Effect.all([connect(h), connect(h), connect(h)])
        // Each client owns a stripe and pipelines rounds of non-overlapping requests in it;
        // a fourth stripe is shared: writes there overlap across clients (the disk decides
        // who wins, and the replica must agree with the disk).
        const stripe = DISK_BYTES / 4
        const piece = 64 * 1024
        const expected = new Uint8Array(DISK_BYTES)
        const work = clients.map((client, c) =>
          Effect.gen(function* () {
            for (let round = 1; round <= 4; round++) {
              const requests: Array<Effect.Effect<unknown, unknown>> = []
              for (let k = 0; k < stripe / piece; k++) {
                const offset = c * stripe + k * piece
                const kind = (k + round) % 5
                if (kind === 3) {
                  requests.push(client.writeZeroes(offset, piece, { noHole: round % 2 === 0 }))
                  expected.fill(0, offset, offset + piece)
                } else if (kind === 4) {
                  requests.push(client.trim(offset, piece))
                  expected.fill(0, offset, offset + piece)
                } else {
                  const data = pattern(round * 10 + c, offset, piece)
                  requests.push(client.write(offset, data, { fua: kind === 2 }))
                  expected.set(data, offset)
                }
                // Shared stripe: overlapping, unaligned to the pieces, from every client.
                const shared = 3 * stripe + ((k * 7 + c * 13) % (stripe / 4096 - 16)) * 4096
                requests.push(client.write(shared, pattern(c, shared, 16 * 4096)))
                requests.push(client.read(shared, 8192))
              }
              requests.push(client.flush)
              yield* Effect.all(requests, { concurrency: "unbounded", discard: true })
            }
          })
        )
        yield* Effect.all(work, { concurrency: "unbounded", discard: true })
        yield* clients[0]!.flush
        const readAll = (client: Nbd.Client, from: number, length: number) =>
          Effect.map(
            Effect.forEach(
              Array.from({ length: length / (1 << 20) }, (_, i) => from + i * (1 << 20)),
              (at) => client.read(at, 1 << 20)
            ),
            (parts) => Buffer.concat(parts)
          )
        const own = yield* readAll(clients[1]!, 0, 3 * stripe)
        const diskShared = yield* h.disk.read(3 * stripe, stripe)
        const readShared = yield* readAll(clients[2]!, 3 * stripe, stripe)
        return {
          ownStripes: Buffer.compare(Buffer.from(own), Buffer.from(expected.subarray(0, 3 * stripe))) === 0,
          sharedReadsDisk: Buffer.compare(Buffer.from(diskShared), Buffer.from(readShared)) === 0,
          replicated: yield* h.replicaEqualsDisk
        }
      })
    )
    expect(result.ownStripes).toBe(true)
    expect(result.sharedReadsDisk).toBe(true)
    expect(result.replicated).toBe(true)
  })
})

/**
 * A WRITE whose disk write is held: it must not be answered while held. A READ on the
 * same connection, sent after it, is answered first (reads are not held), so by then an
 * early answer would have arrived.
 */
const writeAnsweredEarly = (mutants: Partial<NbdMutants.Mutants>) =>
  run(
    Effect.gen(function* () {
      const h = yield* make({ mutants })
      const c = yield* transmitting(h.endpoint)
      yield* h.diskWrites.close
      const write = c.sendNow({
        type: P.CMD_WRITE,
        offset: 8192,
        length: 4096,
        payload: pattern(1, 8192, 4096)
      })
      const answered = yield* Effect.fork(write)
      yield* eventually(() => h.diskWriteEntered.includes(8192), "the held disk write")
      yield* c.raw({ type: P.CMD_READ, offset: 0, length: 512 })
      const early = (yield* Fiber.poll(answered))._tag === "Some"
      yield* h.diskWrites.open
      yield* Fiber.join(answered)
      return early
    })
  )

/**
 * FLUSH while the journal's appends are held (writes still land on the disk: they do not
 * wait for the journal): when its answer arrives, every write answered before it — on
 * this connection and another — must be journaled.
 */
const flushBeforeJournal = (mutants: Partial<NbdMutants.Mutants>) =>
  run(
    Effect.gen(function* () {
      const h = yield* make({ mutants })
      const a = yield* transmitting(h.endpoint)
      const b = yield* transmitting(h.endpoint)
      let missing = 0
      for (let round = 0; round < 3; round++) {
        yield* h.journalAppends.close
        const offsets = [round * 65536, round * 65536 + 8192]
        yield* a.raw({
          type: P.CMD_WRITE,
          offset: offsets[0]!,
          length: 4096,
          payload: pattern(round, 0, 4096)
        })
        yield* b.raw({
          type: P.CMD_WRITE,
          offset: offsets[1]!,
          length: 4096,
          payload: pattern(round, 1, 4096)
        })
        // FUA on one connection, FLUSH on the other: each must cover both writes.
        const flushed = a.sendNow({ type: P.CMD_FLUSH })
        const fua = b.sendNow({
          type: P.CMD_WRITE,
          flags: P.CMD_FLAG_FUA,
          offset: round * 65536 + 16384,
          length: 512,
          payload: new Uint8Array(512).fill(round + 1)
        })
        const journaledWhenAnswered = (answer: Effect.Effect<Uint8Array, unknown>) =>
          Effect.map(
            answer,
            () =>
              offsets.filter((o) => !h.journaled.some((j) => j.offset <= o && o < j.offset + j.length)).length
          )
        const flushFiber = yield* Effect.fork(journaledWhenAnswered(flushed))
        const fuaFiber = yield* Effect.fork(journaledWhenAnswered(fua))
        // Round trips on both connections: an answer that does not wait for the journal is in by now.
        yield* a.raw({ type: P.CMD_READ, offset: 0, length: 512 })
        yield* b.raw({ type: P.CMD_READ, offset: 0, length: 512 })
        yield* h.journalAppends.open
        missing += (yield* Fiber.join(flushFiber)) + (yield* Fiber.join(fuaFiber))
      }
      return missing
    })
  )

describe("answers wait for what they promise", () => {
  it("a WRITE is answered only once the disk has it", async () => {
    expect(await writeAnsweredEarly({})).toBe(false)
  })

  it("the mutant that answers a WRITE before the replicator wrote it is caught", async () => {
    expect(await writeAnsweredEarly({ answerWritesEarly: true })).toBe(true)
  })

  it("FLUSH and FUA answer only once every earlier answered write (on any connection) is journaled", async () => {
    expect(await flushBeforeJournal({})).toBe(0)
  })

  it("the mutant whose FLUSH skips the journal is caught", async () => {
    expect(await flushBeforeJournal({ flushSkipsJournal: true })).toBeGreaterThan(0)
  })
})

describe("resources a client can hold are bounded and released", () => {
  it("connections beyond the limit are closed on arrival; closed ones free their slot", async () => {
    await run(
      Effect.gen(function* () {
        const h = yield* make({ serve: { maxConnections: 2 } })
        const first = yield* Effect.scoped(
          Effect.gen(function* () {
            yield* transmitting(h.endpoint)
            yield* transmitting(h.endpoint)
            const third = yield* Effect.either(Effect.scoped(transmitting(h.endpoint)))
            return { third: third._tag, open: yield* h.server.connections }
          })
        )
        expect(first).toEqual({ third: "Left", open: 2 })
        yield* eventually(() => Effect.runSync(h.server.connections) === 0, "the sockets released")
        const again = yield* transmitting(h.endpoint)
        expect(yield* errnoOf(again.raw({ type: P.CMD_READ, offset: 0, length: 512 }))).toBe("ok")
        expect(h.logs.some((l) => l.text.includes("too many connections"))).toBe(true)
      })
    )
  })

  it("a client that never finishes the handshake is cut off, and its slot freed", async () => {
    await run(
      Effect.gen(function* () {
        const h = yield* make({ serve: { handshakeTimeout: "300 millis", maxConnections: 1 } })
        const idle = yield* options(h.endpoint)
        yield* untilClosed(idle.reader)
        yield* eventually(() => h.logs.some((l) => l.text.includes("handshake-timeout")), "the timeout log")
        yield* eventually(() => Effect.runSync(h.server.connections) === 0, "the socket released")
        const c = yield* transmitting(h.endpoint)
        expect(yield* errnoOf(c.raw({ type: P.CMD_READ, offset: 0, length: 512 }))).toBe("ok")
      })
    )
  })
})

describe("listening and closing", () => {
  it("serves a unix socket, and its URI says so", async () => {
    await run(
      Effect.gen(function* () {
        const h = yield* make({ unix: true })
        expect(h.server.uri).toMatch(/^nbd\+unix:\/\/\/test\?socket=.*nbd\.sock$/)
        const client = yield* connect(h)
        yield* client.write(0, pattern(5, 0, 8192), { fua: true })
        expect(Buffer.from(yield* client.read(0, 8192))).toEqual(Buffer.from(pattern(5, 0, 8192)))
        yield* client.disconnect
      })
    )
  })

  it("closing the server answers the requests it took, then closes the connections", async () => {
    const outcome = await run(
      Effect.gen(function* () {
        const h = yield* make()
        const c = yield* transmitting(h.endpoint)
        yield* h.diskWrites.close
        const write = yield* Effect.fork(
          Effect.either(
            c.sendNow({ type: P.CMD_WRITE, offset: 0, length: 4096, payload: pattern(9, 0, 4096) })
          )
        )
        yield* eventually(() => h.diskWriteEntered.includes(0), "the held write")
        const closing = yield* Effect.fork(h.closeServer)
        yield* h.diskWrites.open
        const answer = yield* Fiber.join(write)
        yield* Deferred.await(c.closed)
        yield* Fiber.join(closing)
        return { answer: answer._tag, open: yield* h.server.connections }
      })
    )
    expect(outcome).toEqual({ answer: "Right", open: 0 })
  })
})

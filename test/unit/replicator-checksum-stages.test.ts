/**
 * Checksum-based resync (issue 18) in the replicator's stages, alone:
 * - the journal stage puts each request where its comparisons were decided, among the
 *   records, its blocks read after, in increasing runs, into buffers reused from request
 *   to request; requests are hashed one after another, in their order;
 * - the loop turns an answer into one outcome per block (stale and refused ones too), and
 *   the window refills by an eighth while comparisons wait.
 * The replicator whole, over the in-memory receiver: replicator-checksums.test.ts.
 */
import { Deferred, Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import type * as Event from "../../src/domain/Event.js"
import * as Input from "../../src/domain/Input.js"
import * as State from "../../src/domain/State.js"
import * as Wire from "../../src/protocol/Wire.js"
import { decideBatch, needsPump } from "../../src/replicator/internal/decisionLoop.js"
import { act, compareReadBuffers } from "../../src/replicator/internal/journalStage.js"
import { forDisk } from "../../src/replicator/internal/metrics.js"
import { type Comparisons, makeShared } from "../../src/replicator/internal/shared.js"

const BS = 4096
const BLOCKS = 64
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: BLOCKS, window: 8, congestionLimit: 1 << 20 })
)
const block = (fill: number) => new Uint8Array(BS).fill(fill)

/** A request on the wire as the sender keeps it: its comparisons (id, block) and the disk's digests. */
const asked = (compared: ReadonlyArray<{ id: number; block: number; digest: Uint8Array }>): Comparisons => ({
  request: {
    _tag: "ChecksumRequest",
    algorithm: 0,
    id: compared[0]!.id,
    blocks: compared.map((c) => c.block)
  },
  ids: compared.map((c) => c.id),
  run: false,
  digests: Effect.succeed(Buffer.concat(compared.map((c) => c.digest)))
})
/** The comparisons of a request as `act` made it, once its digests are ready. */
const comparedOf = (c: Comparisons) =>
  Effect.map(c.digests, (digests) => ({
    request: c.request,
    compared: c.ids.map((id, k) => ({
      id,
      block: c.request.blocks[k]!,
      digest: digests.subarray(k * Wire.DIGEST_BYTES, (k + 1) * Wire.DIGEST_BYTES)
    }))
  }))

describe("checksum requests in the stages", () => {
  const metrics = forDisk("d")
  const fresh = (state = State.initial(config)) =>
    makeShared({
      state,
      position: 0,
      pending: { bytes: 1 << 20, writes: 16 },
      activity: undefined,
      digest: "sha256"
    })

  it("the journal stage puts each request where its comparisons were decided, blocks read after, in increasing runs", async () => {
    const disk = VirtualDisk.makeMemory(config)
    for (let b = 0; b < BLOCKS; b++) await Effect.runPromise(disk.write(b * BS, block(b + 1)))
    const items = await Effect.runPromise(
      Effect.gen(function* () {
        const shared = yield* fresh()
        const compare = (id: number, b: number) => ({ session: 0, compared: id, block: b })
        yield* act(shared, disk, config, [
          {
            session: 0,
            seq: 5,
            record: { _tag: "ResyncBegin", seq: 5, epoch: 1, base: 4 },
            read: undefined,
            release: undefined
          },
          compare(0, 3),
          compare(1, 4),
          compare(2, 9),
          // Not above the last: a request's blocks strictly increase.
          compare(3, 2),
          { session: 0, seq: 6, block: 30, epoch: 1 },
          compare(4, 10)
        ])
        const taken = yield* shared.outbox.takeAll
        return yield* Effect.forEach(
          taken,
          (out): Effect.Effect<unknown, VirtualDisk.DiskError> =>
            "comparisons" in out ? comparedOf(out.comparisons) : Effect.succeed({ seq: out.seq })
        )
      })
    )
    const digest = (b: number) => Wire.blockDigest(block(b + 1))
    expect(items).toEqual([
      { seq: 5 },
      {
        request: { _tag: "ChecksumRequest", algorithm: 0, id: 0, blocks: [3, 4, 9] },
        compared: [3, 4, 9].map((b, id) => ({ id, block: b, digest: digest(b) }))
      },
      {
        request: { _tag: "ChecksumRequest", algorithm: 0, id: 3, blocks: [2] },
        compared: [{ id: 3, block: 2, digest: digest(2) }]
      },
      { seq: 6 },
      {
        request: { _tag: "ChecksumRequest", algorithm: 0, id: 4, blocks: [10] },
        compared: [{ id: 4, block: 10, digest: digest(10) }]
      }
    ])
  })

  it("requests are hashed one after another, in request order: the next one's reads wait for the last one's", async () => {
    const inner = VirtualDisk.makeMemory(config)
    for (let b = 0; b < BLOCKS; b++) await Effect.runPromise(inner.write(b * BS, block(b + 1)))
    const { started, whileHeld, requests } = await Effect.runPromise(
      Effect.gen(function* () {
        const shared = yield* fresh()
        const release = yield* Deferred.make<void>()
        const started: Array<number> = []
        // The first read (request 0's) is held until released.
        const disk: VirtualDisk.VirtualDisk.Service = {
          ...inner,
          readInto: (offset, into) =>
            Effect.gen(function* () {
              started.push(offset / BS)
              if (started.length === 1) yield* Deferred.await(release)
              yield* inner.readInto(offset, into)
            })
        }
        const compare = (id: number, b: number) => ({ session: 0, compared: id, block: b })
        // Two requests (blocks must increase within one): [5, 6] and [2].
        yield* act(shared, disk, config, [compare(0, 5), compare(1, 6), compare(2, 2)])
        // Both requests are out at once, their digests not needed yet.
        const taken = yield* shared.outbox.takeAll
        yield* Effect.sleep("50 millis")
        const whileHeld = [...started]
        yield* Deferred.succeed(release, undefined)
        const requests = yield* Effect.forEach(taken, (out) =>
          "comparisons" in out ? comparedOf(out.comparisons) : Effect.die("a record")
        )
        return { started, whileHeld, requests }
      })
    )
    expect(whileHeld).toEqual([5])
    expect(started).toEqual([5, 2])
    expect(requests.map((r) => r.request.blocks)).toEqual([[5, 6], [2]])
    for (const r of requests)
      for (const c of r.compared)
        expect(Buffer.from(c.digest).equals(Wire.blockDigest(block(c.block + 1)))).toBe(true)
  })

  it("the loop turns an answer into one outcome per block: a match, a mismatch sent at once; a stale or refused one", async () => {
    const settings = { diskId: "d", config, holdMillis: 0, metrics }
    const digest = (fill: number) => Wire.blockDigest(block(fill))
    const events = await Effect.runPromise(
      Effect.gen(function* () {
        // Every block owed from the start (full sync), the link up: comparisons decide at once.
        const shared = yield* fresh(State.initial({ ...config, initial: "full-sync" }))
        shared.link = 1
        const decided: Array<ReadonlyArray<Event.Event>> = []
        const batch = (commands: Parameters<typeof decideBatch>[2]) =>
          Effect.gen(function* () {
            yield* decideBatch(shared, settings, commands)
            const taken = yield* Effect.map(
              Effect.suspend(() =>
                shared.decisions.size() > 0 ? shared.decisions.takeAll : Effect.succeed([])
              ),
              (ds) => ds.flatMap((d) => d.events)
            )
            decided.push(taken)
          })
        yield* batch([{ _tag: "Input", input: Input.pumpTick(3, 1) }])
        // Three comparisons (ids 0, 1, 2 of blocks 0, 1, 2) after the marker, seq 1.
        shared.requests.set(
          0,
          asked([
            { id: 0, block: 0, digest: digest(1) },
            { id: 1, block: 1, digest: digest(2) }
          ])
        )
        shared.requests.set(2, asked([{ id: 2, block: 2, digest: digest(3) }]))
        const digests = new Uint8Array(2 * Wire.DIGEST_BYTES)
        digests.set(digest(1), 0)
        digests.set(digest(9), Wire.DIGEST_BYTES)
        const reply: Wire.ChecksumReply = { _tag: "ChecksumReply", algorithm: 0, id: 0, through: 1, digests }
        // From an older connection: dropped.
        yield* batch([{ _tag: "Answer", link: 0, answer: reply }])
        yield* batch([{ _tag: "Answer", link: 1, answer: reply }])
        // Its request was answered: the same answer again is stale.
        yield* batch([{ _tag: "Answer", link: 1, answer: reply }])
        yield* batch([
          {
            _tag: "Answer",
            link: 1,
            answer: { _tag: "ChecksumRefused", id: 2, reason: "damaged", detail: "test" }
          }
        ])
        expect(shared.requests.size).toBe(0)
        return decided
      })
    )
    expect(events[0]!.map((e) => e.type)).toEqual([
      "ResyncBegun",
      "PassStarted",
      "BlockCompared",
      "BlockCompared",
      "BlockCompared"
    ])
    expect(events[1]).toEqual([])
    expect(events[2]).toEqual([
      { type: "Acked", seq: 1 },
      { type: "BlockMatched", id: 0, block: 0 },
      { type: "BlockMismatched", id: 1, block: 1 },
      { type: "BlockSent", seq: 2, block: 1 }
    ])
    expect(events[3]).toEqual([])
    expect(events[4]).toEqual([
      { type: "BlockMismatched", id: 2, block: 2 },
      { type: "BlockSent", seq: 3, block: 2 }
    ])
  })

  it("the window refills by an eighth at least while comparisons wait: no tick (and request) for a few acked blocks", async () => {
    const wide = Either.getOrThrow(
      Config.make({
        blockSize: BS,
        blockCount: BLOCKS,
        window: 32,
        congestionLimit: 1 << 20,
        initial: "full-sync"
      })
    )
    const settings = { diskId: "d", config: wide, holdMillis: 0, metrics }
    const same = Wire.blockDigest(block(1))
    const states = await Effect.runPromise(
      Effect.gen(function* () {
        const shared = yield* fresh(State.initial(wide))
        shared.link = 1
        // A window of comparisons (ids and blocks 0..31), asked in two requests of 16.
        yield* decideBatch(shared, settings, [{ _tag: "Input", input: Input.pumpTick(32, 1) }])
        const sixteen = (from: number) =>
          asked(Array.from({ length: 16 }, (_, k) => ({ id: from + k, block: from + k, digest: same })))
        shared.requests.set(0, sixteen(0))
        shared.requests.set(16, sixteen(16))
        const reply = (id: number, matched: number): Wire.ChecksumReply => {
          const digests = new Uint8Array(16 * Wire.DIGEST_BYTES)
          for (let k = 0; k < matched; k++) digests.set(same, k * Wire.DIGEST_BYTES)
          return { _tag: "ChecksumReply", algorithm: 0, id, through: 1, digests }
        }
        const full = needsPump(shared.state, 32)
        // The first answer: 2 blocks match, 14 differ and are sent: 2 slots free (under 32 / 8), 16 comparisons wait.
        yield* decideBatch(shared, settings, [{ _tag: "Answer", link: 1, answer: reply(0, 2) }])
        const few = { comparing: shared.state.comparing.length, pump: needsPump(shared.state, 32) }
        // The second: all 16 match, 18 slots free.
        yield* decideBatch(shared, settings, [{ _tag: "Answer", link: 1, answer: reply(16, 16) }])
        const more = { comparing: shared.state.comparing.length, pump: needsPump(shared.state, 32) }
        return { full, few, more }
      })
    )
    expect(states.full).toBe(false)
    expect(states.few).toEqual({ comparing: 16, pump: false })
    expect(states.more).toEqual({ comparing: 0, pump: true })
  })

  it("compared blocks are read into buffers reused from request to request", async () => {
    const disk = VirtualDisk.makeMemory(config)
    for (let b = 0; b < BLOCKS; b++) await Effect.runPromise(disk.write(b * BS, block(b + 1)))
    const { requests, again } = await Effect.runPromise(
      Effect.gen(function* () {
        const shared = yield* fresh()
        const requests: Array<Wire.ChecksumRequest> = []
        let made = 0
        for (let round = 0; round < 4; round++) {
          // Blocks 0..63 in one request: one run (64 × 4 KiB), compared with what the disk holds.
          yield* act(
            shared,
            disk,
            config,
            Array.from({ length: BLOCKS }, (_, b) => ({ session: 0, compared: round * BLOCKS + b, block: b }))
          )
          for (const out of yield* shared.outbox.takeAll)
            if ("comparisons" in out) {
              const c = yield* comparedOf(out.comparisons)
              for (const x of c.compared)
                expect(Buffer.from(x.digest).equals(Wire.blockDigest(block(x.block + 1)))).toBe(true)
              requests.push(c.request)
            }
          if (round === 0) made = compareReadBuffers.made
        }
        return { requests, again: compareReadBuffers.made - made }
      })
    )
    expect(requests).toHaveLength(4)
    // The first request made its buffer; the next three took it again.
    expect(again).toBe(0)
  })
})

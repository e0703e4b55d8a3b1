/**
 * Checksum-based resync in the replicator (issue 18), in process over the in-memory
 * receiver (which answers checksum requests as the real one does):
 * - after an unclean start (every block owed), with `compareFrom` only the blocks that
 *   differ are sent, whether the disk changed or the receiver's copy did; the counters say
 *   so in `Status`, the control endpoint's report and `cdp-sync status`;
 * - a block the receiver cannot check (refused as damaged) is sent;
 * - a guest write to a block whose comparison is outstanding (its read held) ends up at
 *   the receiver, whether the read saw the write or not;
 * - a receiver that closes the connection on a checksum request (one from before them)
 *   turns comparisons off: every owed block is sent and the replica is whole;
 * - a clean close leaves a snapshot at the journal's end (the next start replays nothing);
 * - a request reaches the receiver while its blocks are still read and hashed (the
 *   receiver hashes its versions meanwhile).
 * The stages alone (journal stage, loop): replicator-checksum-stages.test.ts.
 */
import { Deferred, Effect, Either, Option, Schema, type Scope, Stream } from "effect"
import { describe, expect, it } from "vitest"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import { filterDisk } from "../../src/cli/internal/control.js"
import { render } from "../../src/cli/statusCommand.js"
import { Report } from "../../src/internal/controlProtocol.js"
import type * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import * as Decider from "../../src/domain/Decider.js"
import type * as Event from "../../src/domain/Event.js"
import * as State from "../../src/domain/State.js"
import type * as Wire from "../../src/protocol/Wire.js"
import type * as Mutants from "../../src/replicator/internal/mutants.js"
import type * as Replicator from "../../src/replicator/Replicator.js"
import { makeWorld as makeWorldOf, startReplicator, type World } from "../support/replicatorWorld.js"

const BS = 4096
const BLOCKS = 64
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: BLOCKS, window: 8, congestionLimit: 1 << 20 })
)
const header = { blockSize: BS, blockCount: BLOCKS, initial: config.initial }
const block = (fill: number) => new Uint8Array(BS).fill(fill)

const makeWorld = (disk?: VirtualDisk.VirtualDisk.Service) => makeWorldOf(config, disk)
const start = (
  world: World,
  options: Partial<Replicator.Options> = {},
  wrap?: (inner: LogReceiver.LogReceiver.Service) => LogReceiver.LogReceiver.Service,
  mutants: Partial<Mutants.Mutants> = {}
) => startReplicator(world, config, options, wrap, mutants)

/** Run 1: every block written (block b holds b + 1) and replicated; then the run is left open, as by a kill. */
const replicatedThenKilled = (world: World) =>
  Effect.gen(function* () {
    yield* Effect.scoped(
      Effect.gen(function* () {
        const replicator = yield* start(world)
        for (let b = 0; b < BLOCKS; b++) yield* replicator.write(b * BS, block(b + 1))
        yield* replicator.quiesce
      })
    )
    // The next start is unclean: without an activity log it owes every block.
    yield* EventJournal.makeMemory(world.store).beginRun(header)
    return yield* world.control.durableSeq("d")
  })

/** Blocks of the Block records the receiver logged after `seq`. */
const blocksSentAfter = (world: World, seq: number) =>
  Effect.map(world.control.log("d"), (log) =>
    log.filter((e) => e.seq > seq && e._tag === "Block").map((e) => (e as Wire.Block).block)
  )

/** The replica equals the disk, block by block. */
const expectWhole = (world: World) =>
  Effect.gen(function* () {
    for (let b = 0; b < BLOCKS; b++)
      expect(
        Buffer.from(yield* world.control.replicaBlock("d", b)).equals(
          Buffer.from(yield* world.disk.read(b * BS, BS))
        ),
        `block ${b}`
      ).toBe(true)
  })

const run = <A, E>(program: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Effect.scoped(program))

describe("checksum-based resync in the replicator", () => {
  /**
   * After an unclean start, with three blocks changed on the disk and two at the receiver
   * while the filter was down: what it sent, its status, and the blocks it read before
   * their event (compared or sent) was journaled.
   */
  const changedWhileDown = (mutants: Partial<Mutants.Mutants> = {}) =>
    Effect.gen(function* () {
      const inner = VirtualDisk.makeMemory(config)
      // Per block: events journaled that read it (compared or sent), and reads so far.
      const journaled = new Array<number>(BLOCKS).fill(0)
      const reads = new Array<number>(BLOCKS).fill(0)
      const early: Array<number> = []
      // The comparison events journaled: runs (one per request) and per-block ones.
      const runs = { compared: 0, runBlocks: 0, matched: 0, runMatched: 0, perBlock: 0 }
      let watching = false
      const disk: VirtualDisk.VirtualDisk.Service = {
        ...inner,
        read: (offset, length) =>
          Effect.suspend(() => {
            if (watching)
              for (let b = offset / BS; b < (offset + length) / BS; b++)
                if (++reads[b]! > journaled[b]!) early.push(b)
            return inner.read(offset, length)
          }),
        // The comparisons' reads (into reused buffers), counted the same way.
        readInto: (offset, into) =>
          Effect.suspend(() => {
            if (watching)
              for (let b = offset / BS; b < (offset + into.byteLength) / BS; b++)
                if (++reads[b]! > journaled[b]!) early.push(b)
            return inner.readInto(offset, into)
          })
      }
      const world = yield* makeWorld(disk)
      const before = yield* replicatedThenKilled(world)
      for (const b of [3, 17, 40]) yield* world.disk.write(b * BS, block(0xd0 + b))
      for (const b of [9, 63]) yield* world.control.overwrite("d", b, block(0xee))
      watching = true
      const onEvents = (events: ReadonlyArray<Event.Event>) =>
        Effect.sync(() => {
          for (const e of events)
            if (e.type === "BlockCompared" || e.type === "BlockSent") journaled[e.block]!++
            else if (e.type === "RunCompared") for (const b of e.blocks) journaled[b]!++
          for (const e of events) {
            if (e.type === "RunCompared") {
              runs.compared++
              runs.runBlocks += e.blocks.length
            }
            if (e.type === "RunMatched") {
              runs.matched++
              runs.runMatched += e.count - e.except.length
            }
            if (e.type === "BlockCompared" || e.type === "BlockMatched") runs.perBlock++
          }
        })
      const replicator = yield* start(world, { compareFrom: 1, onEvents }, undefined, mutants)
      yield* replicator.quiesce
      const sent = (yield* blocksSentAfter(world, before)).sort((a, b) => a - b)
      return { world, early, sent, runs, status: yield* replicator.status }
    })

  it("after an unclean start sends only the blocks that differ, on the disk or at the receiver; each block read after its event is journaled", async () => {
    await run(
      Effect.gen(function* () {
        const { world, early, sent, runs, status } = yield* changedWhileDown()
        expect(early, "blocks read before their event was journaled").toEqual([])
        // One event per request each way (trace version 3), none per block.
        expect(runs.perBlock).toBe(0)
        expect(runs.runBlocks).toBe(BLOCKS)
        expect(runs.runMatched).toBe(BLOCKS - 5)
        expect(runs.compared).toBeLessThanOrEqual(BLOCKS / 2)
        expect(runs.matched).toBeLessThanOrEqual(runs.compared)
        expect(sent).toEqual([3, 9, 17, 40, 63])
        expect(status.checksums).toEqual({
          compared: BLOCKS,
          matched: BLOCKS - 5,
          sent: 5,
          algorithm: "blake3"
        })
        yield* expectWhole(world)
        // `serve`'s control endpoint reports them, and `cdp-sync status` shows them.
        const report = Schema.decodeUnknownSync(Report)({
          role: "filter",
          pid: 1,
          at: new Date(0).toISOString(),
          disks: [filterDisk(status, { diskId: "d", receiver: "backup:7070" }, 0)]
        })
        expect(report.disks[0]).toMatchObject({
          checksums: { compared: BLOCKS, matched: BLOCKS - 5, sent: 5, algorithm: "blake3" }
        })
        expect(render(report)).toContain(
          `checksum-resync:${BLOCKS} blocks compared, ${BLOCKS - 5} matched, 5 sent`
        )
      })
    )
  })

  it("MUTANT: compared blocks read before their events are journaled are caught", async () => {
    const { early } = await run(changedWhileDown({ readComparedEarly: true }))
    expect(early.length).toBeGreaterThan(0)
  })

  it("without compareFrom sends every owed block, and counts no comparison", async () => {
    await run(
      Effect.gen(function* () {
        const world = yield* makeWorld()
        const before = yield* replicatedThenKilled(world)
        const replicator = yield* start(world)
        yield* replicator.quiesce
        expect((yield* blocksSentAfter(world, before)).length).toBe(BLOCKS)
        expect((yield* replicator.status).checksums).toEqual({
          compared: 0,
          matched: 0,
          sent: 0,
          algorithm: "blake3"
        })
      })
    )
  })

  it("sends a block the receiver cannot check (refused as damaged), with the rest of its request", async () => {
    await run(
      Effect.gen(function* () {
        const world = yield* makeWorld()
        const before = yield* replicatedThenKilled(world)
        yield* world.control.damage("d", 21)
        const replicator = yield* start(world, { compareFrom: 1 })
        yield* replicator.quiesce
        const sent = yield* blocksSentAfter(world, before)
        expect(sent).toContain(21)
        // A refusal covers one request, at most a window of comparisons.
        expect(sent.length).toBeLessThanOrEqual(config.window)
        const counts = (yield* replicator.status).checksums
        expect(counts).toEqual({
          compared: BLOCKS,
          matched: BLOCKS - sent.length,
          sent: sent.length,
          algorithm: "blake3"
        })
        yield* expectWhole(world)
      })
    )
  })

  for (const seen of ["before", "after"] as const) {
    it(`a guest write to a block whose comparison is outstanding reaches the receiver (the read ${seen} the write)`, async () => {
      await run(
        Effect.gen(function* () {
          const inner = VirtualDisk.makeMemory(config)
          const target = 12
          const reading = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          let held = false
          // Holds the first read of the target block: what it returns is read before (or after) the write.
          const disk: VirtualDisk.VirtualDisk.Service = {
            ...inner,
            read: (offset, length) =>
              Effect.gen(function* () {
                const covers = offset <= target * BS && offset + length > target * BS
                if (!covers || held || !armed) return yield* inner.read(offset, length)
                held = true
                const early = seen === "before" ? yield* inner.read(offset, length) : undefined
                yield* Deferred.succeed(reading, undefined)
                yield* Deferred.await(release)
                return early ?? (yield* inner.read(offset, length))
              }),
            // The comparisons' reads (into reused buffers), held the same way.
            readInto: (offset, into) =>
              Effect.gen(function* () {
                const covers = offset <= target * BS && offset + into.byteLength > target * BS
                if (!covers || held || !armed) return yield* inner.readInto(offset, into)
                held = true
                if (seen === "before") yield* inner.readInto(offset, into)
                yield* Deferred.succeed(reading, undefined)
                yield* Deferred.await(release)
                if (seen === "after") yield* inner.readInto(offset, into)
              })
          }
          let armed = false
          const world = yield* makeWorld(disk)
          yield* replicatedThenKilled(world)
          armed = true
          const replicator = yield* start(world, { compareFrom: 1 })
          yield* Deferred.await(reading)
          // The comparison of the target is decided and its read under way: the guest writes it.
          yield* replicator.write(target * BS, block(0x5a))
          yield* replicator.flush
          yield* Deferred.succeed(release, undefined)
          yield* replicator.quiesce
          expect(
            Buffer.from(yield* world.control.replicaBlock("d", target)).equals(Buffer.from(block(0x5a)))
          ).toBe(true)
          yield* expectWhole(world)
        })
      )
    })
  }

  it("a checksum request reaches the receiver while its blocks are still being read: both sides hash at once", async () => {
    await run(
      Effect.gen(function* () {
        const inner = VirtualDisk.makeMemory(config)
        const reading = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        let armed = false
        // Holds every compared block's read until released.
        const disk: VirtualDisk.VirtualDisk.Service = {
          ...inner,
          readInto: (offset, into) =>
            Effect.gen(function* () {
              if (armed) {
                yield* Deferred.succeed(reading, undefined)
                yield* Deferred.await(release)
              }
              yield* inner.readInto(offset, into)
            })
        }
        const world = yield* makeWorld(disk)
        const before = yield* replicatedThenKilled(world)
        const asked = yield* Deferred.make<Wire.ChecksumRequest>()
        const watched = (inner: LogReceiver.LogReceiver.Service): LogReceiver.LogReceiver.Service => ({
          connect: (hello) =>
            Effect.map(inner.connect(hello), (connection) => ({
              ...connection,
              requestChecksums: (request) =>
                Effect.zipRight(Deferred.succeed(asked, request), connection.requestChecksums(request))
            }))
        })
        armed = true
        const replicator = yield* start(world, { compareFrom: 1 }, watched)
        yield* Deferred.await(reading)
        // The read is held: the request is on the wire all the same (before, it waited for the hashing).
        const request = yield* Deferred.await(asked).pipe(Effect.timeout("20 seconds"), Effect.option)
        expect(request._tag).toBe("Some")
        yield* Deferred.succeed(release, undefined)
        yield* replicator.quiesce
        expect(yield* blocksSentAfter(world, before)).toEqual([])
        expect((yield* replicator.status).checksums.matched).toBe(BLOCKS)
        yield* expectWhole(world)
      })
    )
  })

  it("a compared block's read that fails stops the replicator (the request already left)", async () => {
    await run(
      Effect.gen(function* () {
        const inner = VirtualDisk.makeMemory(config)
        let armed = false
        const disk: VirtualDisk.VirtualDisk.Service = {
          ...inner,
          readInto: (offset, into) =>
            armed
              ? Effect.fail(
                  new VirtualDisk.DiskIoError({ op: "read", path: "test", cause: new Error("EIO") })
                )
              : inner.readInto(offset, into)
        }
        const world = yield* makeWorld(disk)
        yield* replicatedThenKilled(world)
        armed = true
        const replicator = yield* start(world, { compareFrom: 1 })
        const stopped = yield* replicator.quiesce.pipe(Effect.timeout("20 seconds"), Effect.flip)
        expect(stopped._tag).toBe("ReplicatorStopped")
        expect((yield* replicator.status).stopped?.reason).toBe("a block read failed")
      })
    )
  })

  it("a clean close saves a snapshot at the journal's end, equal to the journal folded from the start", async () => {
    await run(
      Effect.gen(function* () {
        const world = yield* makeWorld()
        yield* replicatedThenKilled(world)
        yield* world.disk.write(7 * BS, block(0x77))
        // A checksum resync, no periodic snapshot: closed cleanly at the end of the scope.
        yield* Effect.scoped(
          Effect.flatMap(start(world, { compareFrom: 1, snapshotEvery: 1_000_000 }), (r) => r.quiesce)
        )
        const journal = EventJournal.makeMemory(world.store)
        const end = yield* journal.position
        const saved = yield* journal.loadSnapshot
        expect(Option.map(saved, (s) => s.position)).toEqual(Option.some(end))
        let folded = State.initial(config)
        yield* journal
          .read(0)
          .pipe(
            Stream.runForEach((entry) => Effect.sync(() => (folded = Decider.evolve(folded, entry.event))))
          )
        expect(Option.getOrThrow(saved).snapshot).toEqual(State.toSnapshot(folded))
      })
    )
  })

  it("a receiver slow to answer its first request (the filter's ack timeout drops the link): comparisons stay on", async () => {
    await run(
      Effect.gen(function* () {
        const world = yield* makeWorld()
        const before = yield* replicatedThenKilled(world)
        let requests = 0
        // The first request reaches the receiver only after the ack timeout (as one opening its index).
        const slow = (inner: LogReceiver.LogReceiver.Service): LogReceiver.LogReceiver.Service => ({
          connect: (hello) =>
            Effect.map(inner.connect(hello), (connection) => ({
              ...connection,
              requestChecksums: (request) =>
                Effect.suspend(() =>
                  requests++ === 0
                    ? Effect.zipRight(Effect.sleep("1200 millis"), connection.requestChecksums(request))
                    : connection.requestChecksums(request)
                )
            }))
        })
        const replicator = yield* start(world, { compareFrom: 1, ackTimeout: "300 millis" }, slow)
        yield* replicator.quiesce.pipe(Effect.timeout("30 seconds"))
        expect(requests).toBeGreaterThanOrEqual(2)
        // Nothing changed while it was down: every block matches once asked again.
        expect(yield* blocksSentAfter(world, before)).toEqual([])
        expect((yield* replicator.status).checksums.matched).toBe(BLOCKS)
        yield* expectWhole(world)
      })
    )
  })

  it("a receiver that closes the connection on a checksum request: comparisons turn off, every owed block is sent", async () => {
    await run(
      Effect.gen(function* () {
        const world = yield* makeWorld()
        const before = yield* replicatedThenKilled(world)
        let requests = 0
        // As a receiver from before checksum requests: `unknown-kind`, and it closes.
        const older = (inner: LogReceiver.LogReceiver.Service): LogReceiver.LogReceiver.Service => ({
          connect: (hello) =>
            Effect.map(inner.connect(hello), (connection) => ({
              ...connection,
              requestChecksums: () =>
                Effect.suspend(() => {
                  requests++
                  return world.control.dropConnection("d")
                })
            }))
        })
        const replicator = yield* start(world, { compareFrom: 1 }, older)
        yield* replicator.quiesce.pipe(Effect.timeout("30 seconds"))
        expect(requests).toBeGreaterThanOrEqual(1)
        expect(new Set(yield* blocksSentAfter(world, before)).size).toBe(BLOCKS)
        expect((yield* replicator.status).checksums.matched).toBe(0)
        yield* expectWhole(world)
      })
    )
  })
})

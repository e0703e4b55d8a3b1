/**
 * The replicator's stages, each alone on a shared record (issue 14: the heart is no
 * longer one closure): the decision loop decides a batch and hands it on, the journal
 * stage makes it durable before acting and reads drained runs with one request, the
 * sender drops records of an older session. And `Replicator.Options` takes `undefined`
 * for every optional field (`exactOptionalPropertyTypes` callers), with the defaults.
 *
 * The stage modules are imported before Replicator.ts on purpose: they import the
 * errors and metrics from it, and it imports them back.
 */
import { Chunk, Deferred, Effect, Either, Fiber, Layer, Stream } from "effect"
import { describe, expect, it } from "vitest"
import { decideBatch } from "../../src/replicator/internal/decisionLoop.js"
import { journalStage, READ_RUN } from "../../src/replicator/internal/journalStage.js"
import { forDisk } from "../../src/replicator/internal/metrics.js"
import { sender } from "../../src/replicator/internal/sender.js"
import { type Decided, makeShared, type Shared } from "../../src/replicator/internal/shared.js"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import type { Connection } from "../../src/adapters/LogReceiver.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import type * as Wire from "../../src/protocol/Wire.js"
import * as Config from "../../src/domain/Config.js"
import type * as Event from "../../src/domain/Event.js"
import * as Input from "../../src/domain/Input.js"
import * as State from "../../src/domain/State.js"
import * as Replicator from "../../src/replicator/Replicator.js"

const BS = 4096
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: 64, window: 4, congestionLimit: 1 << 20 })
)
const metrics = forDisk("d")
const settings = { diskId: "d", config, holdMillis: 0, metrics }

const fresh = (state = State.initial(config)) =>
  makeShared({
    state,
    position: 0,
    pending: { bytes: 1 << 20, writes: 16 },
    activity: undefined,
    digest: "sha256"
  })

/** Lets the forked stage run until `done` holds (bounded: no timing involved). */
const until = (done: () => boolean) =>
  Effect.gen(function* () {
    for (let i = 0; i < 10_000 && !done(); i++) yield* Effect.yieldNow()
  })

describe("the decision loop, alone", () => {
  it("decides a completed write in sync: one WriteStreamed, its record with the data, the state folded and published", async () => {
    const shared = await Effect.runPromise(fresh())
    const data = new Uint8Array(BS).fill(7)
    let released = 0
    await Effect.runPromise(
      decideBatch(shared, settings, [
        {
          _tag: "Input",
          input: Input.writeCompleted(BS, BS),
          data: { bytes: data, release: () => released++ }
        }
      ])
    )
    expect(shared.state.nextSeq).toBe(2)
    expect(shared.state.flight.size).toBe(1)
    expect(shared.statusRef.get().lagRecords).toBe(1)
    expect(shared.decisions.size()).toBe(1)
    const [decision] = await Effect.runPromise(shared.decisions.takeAll)
    expect(decision!.events).toEqual([{ type: "WriteStreamed", seq: 1, offset: BS, length: BS }])
    expect(decision!.writes).toBe(1)
    const out = decision!.outgoing[0] as Extract<Decided, { record: unknown }>
    expect(out.record).toEqual({ _tag: "Write", seq: 1, epoch: 0, offset: BS, data })
    // Streamed: the copy is the record's until the connection has written it.
    expect(released).toBe(0)
  })

  it("drops a message from a connection it no longer holds, and decides nothing", async () => {
    const shared = await Effect.runPromise(fresh())
    shared.link = 3
    const before = shared.state
    await Effect.runPromise(
      decideBatch(shared, settings, [
        { _tag: "Message", link: 2, input: Input.linkFailed("connection-lost") }
      ])
    )
    expect(shared.state).toBe(before)
    expect(shared.decisions.size()).toBe(0)
  })

  it("a loss starts a new session: records decided before it are not the sender's any more", async () => {
    const shared = await Effect.runPromise(fresh())
    await Effect.runPromise(
      decideBatch(shared, settings, [{ _tag: "Disconnected", link: 0, reason: "connection-lost" }])
    )
    expect(shared.session).toBe(1)
    expect(shared.state.link).toBe("down")
    expect(shared.state.mode).toBe("resync")
  })
})

describe("the journal stage, alone", () => {
  it("appends before it acts: the barrier completes after the events are in the journal; a drained run is one read", async () => {
    const store = EventJournal.makeMemoryStore()
    const journal = EventJournal.makeMemory(store)
    const memory = VirtualDisk.makeMemory(config)
    const reads: Array<number> = []
    const disk: VirtualDisk.VirtualDisk.Service = {
      ...memory,
      read: (offset, length) =>
        Effect.zipRight(
          Effect.sync(() => reads.push(length)),
          memory.read(offset, length)
        )
    }
    const run = READ_RUN + 2
    // A pass of `run` consecutive blocks, after the marker: what a pump tick decides.
    const outgoing: Array<Decided> = Array.from({ length: run }, (_, k) => ({
      session: 0,
      seq: k + 2,
      block: 10 + k,
      epoch: 1
    }))
    const events: Array<Event.Event> = [
      { type: "ResyncBegun", epoch: 1, seq: 1 },
      ...Array.from(
        { length: run },
        (_, k): Event.Event => ({ type: "BlockSent", seq: k + 2, block: 10 + k })
      )
    ]
    const result = await Effect.runPromise(
      Effect.gen(function* () {
        const shared: Shared = yield* fresh()
        const done = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(
          journalStage(shared, journal, disk, {
            config,
            snapshotEvery: 1_000_000,
            onEvents: undefined,
            metrics
          })
        )
        shared.pendingWrites.take(1, BS)
        shared.decisions.offer({
          events,
          outgoing,
          barriers: [done],
          writes: 1,
          writtenBytes: BS,
          extents: undefined,
          after: shared.state
        })
        yield* Deferred.await(done)
        // The barrier completes only once the batch is acted on, after its append.
        const atBarrier = Chunk.toReadonlyArray(yield* Stream.runCollect(journal.read(0))).map((e) => e.event)
        yield* until(() => shared.outbox.size() === run)
        yield* Fiber.interrupt(fiber)
        return { shared, atBarrier, queued: shared.outbox.size() }
      })
    )
    expect(result.atBarrier).toEqual(events)
    expect(result.shared.position).toBeGreaterThan(0)
    expect(result.queued).toBe(run)
    // Two reads: a run of READ_RUN blocks, then the rest.
    expect(reads).toEqual([READ_RUN * BS, 2 * BS])
    expect(result.shared.pendingWrites.pending()).toEqual({ writes: 0, bytes: 0 })
  })
})

describe("the sender, alone", () => {
  it("sends the current session's records in order and hands back the copies of an older session's", async () => {
    const sent: Array<number> = []
    const connection = {
      durableSeq: 0,
      send: () => Effect.void,
      sendOwned: (record: Wire.Record) => Effect.sync(() => sent.push(record.seq)),
      sendAll: (records: ReadonlyArray<Wire.Record>) =>
        Effect.sync(() => sent.push(...records.map((r) => r.seq))),
      requestChecksums: () => Effect.void,
      messages: undefined as never
    } satisfies Connection
    const released: Array<number> = []
    const record = (seq: number): Wire.Record => ({ _tag: "ResyncEnd", seq, epoch: 1 })
    const shared = await Effect.runPromise(
      Effect.gen(function* () {
        const shared = yield* fresh()
        shared.session = 2
        shared.connection = connection
        const fiber = yield* Effect.fork(sender(shared, metrics))
        shared.outbox.offerAll(
          [1, 2, 3].map((seq) => ({
            session: seq === 2 ? 2 : 1,
            seq,
            record: record(seq),
            read: undefined,
            release: () => released.push(seq)
          }))
        )
        yield* until(() => released.length === 2)
        yield* Fiber.interrupt(fiber)
        return shared
      })
    )
    expect(sent).toEqual([2])
    expect(released).toEqual([1, 3])
    expect([...shared.sentAt.keys()]).toEqual([2])
  })
})

describe("Replicator.Options", () => {
  it("takes undefined for every optional field, and then runs on the defaults", async () => {
    const options: Replicator.Options = {
      diskId: "d",
      config,
      ackTimeout: undefined,
      reconnect: undefined,
      drainBytesPerSecond: undefined,
      snapshotEvery: undefined,
      onEvents: undefined,
      switchoverHold: undefined,
      activityExtents: undefined,
      maxPendingBytes: undefined,
      maxPendingWrites: undefined,
      scheduler: undefined
    }
    const replica = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const context = yield* Layer.build(
            Replicator.layer(options).pipe(
              Layer.provideMerge(
                Layer.mergeAll(
                  VirtualDisk.layerMemory(config),
                  EventJournal.layerMemory(),
                  LogReceiver.layerMemory({})
                )
              )
            )
          )
          const replicator = yield* Effect.provide(Replicator.Replicator, context)
          const receiver = yield* Effect.provide(LogReceiver.MemoryReceiver, context)
          yield* replicator.write(3 * BS, new Uint8Array(BS).fill(9))
          yield* replicator.quiesce
          return yield* receiver.replicaBlock("d", 3)
        })
      )
    )
    expect(replica).toEqual(new Uint8Array(BS).fill(9))
  })
})

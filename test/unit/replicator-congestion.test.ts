/**
 * Congestion pull-ahead is the link's (session 12, issue 19: the stream fell behind under
 * fio through `serve`). Writes not yet journaled count as live bytes in flight, so with a
 * pending-write bound above the congestion limit one slow commit of the filter's own
 * journal pulled the stream into resync with nothing on the wire. The write path now
 * keeps the journal's backlog to half the limit (`admissionBounds`): a stalled journal
 * makes writes wait and the stream stays in sync; a receiver that stops acking still
 * fills the limit and pulls ahead, as the design's rule for leaving sync says.
 */
import { Deferred, Effect, Either, Fiber, Layer, Logger, Ref } from "effect"
import { describe, expect, it } from "vitest"
import { admissionBounds } from "../../src/replicator/internal/shared.js"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import type * as Event from "../../src/domain/Event.js"
import * as Replicator from "../../src/replicator/Replicator.js"

const BS = 4096
const WRITES = 16
/** Four 4 KiB writes unacked fill it: the fifth would pull ahead. */
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: 64, window: 4, congestionLimit: 4 * BS })
)

/** The memory journal, whose appends wait while `stalled` holds a gate (a stuck fsync). */
const stallableJournal = (stalled: Ref.Ref<Deferred.Deferred<void> | undefined>) =>
  Layer.effect(
    EventJournal.EventJournal,
    Effect.map(EventJournal.EventJournal, (journal) => ({
      ...journal,
      append: (events: ReadonlyArray<Event.Event>) =>
        Effect.flatMap(Ref.get(stalled), (gate) =>
          Effect.zipRight(gate === undefined ? Effect.void : Deferred.await(gate), journal.append(events))
        )
    }))
  ).pipe(Layer.provide(EventJournal.layerMemory()))

/** Runs `body` against a replicator in sync, with the memory receiver and a stallable journal. */
const withReplicator = <A>(
  body: (
    replicator: Replicator.Replicator.Service,
    receiver: LogReceiver.MemoryReceiver.Service,
    stalled: Ref.Ref<Deferred.Deferred<void> | undefined>,
    events: Array<Event.Event>
  ) => Effect.Effect<A, unknown>,
  /** Every line the replicator logs. */
  logs: Array<string> = []
) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const stalled = yield* Ref.make<Deferred.Deferred<void> | undefined>(undefined)
        const events: Array<Event.Event> = []
        const context = yield* Layer.build(
          Replicator.layer({
            diskId: "d",
            config,
            switchoverHold: 0,
            onEvents: (es) => Effect.sync(() => events.push(...es))
          }).pipe(
            Layer.provideMerge(
              Layer.mergeAll(
                VirtualDisk.layerMemory(config),
                stallableJournal(stalled),
                LogReceiver.layerMemory({})
              )
            )
          )
        )
        const replicator = yield* Effect.provide(Replicator.Replicator, context)
        const receiver = yield* Effect.provide(LogReceiver.MemoryReceiver, context)
        yield* replicator.quiesce
        return yield* body(replicator, receiver, stalled, events)
      })
    ).pipe(
      Effect.provide(
        Logger.replace(
          Logger.defaultLogger,
          Logger.make(({ message }) => {
            logs.push(Array.isArray(message) ? message.join(" ") : String(message))
          })
        )
      )
    )
  )

const write = (replicator: Replicator.Replicator.Service, k: number) =>
  replicator.write(k * BS, new Uint8Array(BS).fill(k + 1))

const pullAheads = (events: ReadonlyArray<Event.Event>) =>
  events.filter((e) => e.type === "ResyncActivated" && e.reason === "congestion").length

describe("congestion pull-ahead is the link's, not the journal's", () => {
  it("the pending bound is at most half the congestion limit", () => {
    expect(admissionBounds({ bytes: 32 << 20, writes: Infinity }, 8 << 20)).toEqual({
      bytes: 4 << 20,
      writes: Infinity
    })
    expect(admissionBounds({ bytes: 1 << 20, writes: 7 }, 64 << 20)).toEqual({ bytes: 1 << 20, writes: 7 })
    expect(admissionBounds({ bytes: 1 << 20, writes: 7 }, 1).bytes).toBe(1)
  })

  it("a stalled journal makes writes wait; the stream stays in sync", async () => {
    const result = await withReplicator((replicator, receiver, stalled) =>
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        yield* Ref.set(stalled, gate)
        const { epoch, nextSeq } = yield* replicator.status
        let returned = 0
        // One guest queue's writes, each after the last returned (as fio's do).
        const writes = yield* Effect.fork(
          Effect.forEach(
            Array.from({ length: WRITES }, (_, k) => k),
            (k) => Effect.tap(write(replicator, k), () => Effect.sync(() => returned++)),
            { discard: true }
          )
        )
        // Until every write returned (the old bound: none waits for the journal), or the
        // writes the new bound admits are decided and the next one has waited a while.
        let quiet = 0
        for (let i = 0; i < 5000 && quiet < 50; i++) {
          yield* Effect.sleep("2 millis")
          if ((yield* Fiber.poll(writes))._tag === "Some") break
          const s = yield* replicator.status
          quiet = s.nextSeq - nextSeq >= 2 ? quiet + 1 : 0
        }
        const stalledStatus = yield* replicator.status
        const whileStalled = { returned, mode: stalledStatus.mode, epoch: stalledStatus.epoch - epoch }
        yield* Ref.set(stalled, undefined)
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(writes)
        yield* replicator.quiesce
        return { whileStalled, replica: yield* receiver.replicaBlock("d", WRITES - 1) }
      })
    )
    // Half the limit is two writes: the third waits for the journal; nothing pulled ahead.
    expect(result.whileStalled).toEqual({ returned: 2, mode: "sync", epoch: 0 })
    expect(result.replica).toEqual(new Uint8Array(BS).fill(WRITES))
  })

  it("a receiver that stops acking still pulls the stream ahead into resync, and the log says where the bytes were", async () => {
    const logs: Array<string> = []
    const result = await withReplicator(
      (replicator, receiver, _stalled, events) =>
        Effect.gen(function* () {
          const before = events.length
          yield* receiver.stallAcks(true)
          for (let k = 0; k < WRITES; k++) yield* write(replicator, k)
          yield* replicator.flush
          const mode = (yield* replicator.status).mode
          yield* receiver.stallAcks(false)
          yield* receiver.flush
          yield* replicator.quiesce
          return {
            mode,
            pullAheads: pullAheads(events.slice(before)),
            replica: yield* receiver.replicaBlock("d", 0)
          }
        }),
      logs
    )
    // Where the unacked bytes were: on the wire (the link's side), or waiting for the journal.
    const line = logs.find((l) => l.includes("reason congestion"))
    expect(line).toMatch(/reason congestion \(16 KiB unacked in 4 records: \d+ sent, .*\d+ not sent yet\)/)
    expect(result.mode).toBe("resync")
    expect(result.pullAheads).toBe(1)
    expect(result.replica).toEqual(new Uint8Array(BS).fill(1))
  })
})

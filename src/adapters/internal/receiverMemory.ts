/**
 * `LogReceiver.layerMemory`: the client port wired straight to an in-process
 * `ReceiverStore`. A wire fiber per connection drains the bounded outbox into the
 * store, so a stalled intake backs up into `send` exactly like a full socket, and so
 * does a checksum request waiting for the records before it to be durable.
 */
import { Effect, Mailbox } from "effect"
import type { LogReceiver, MemoryReceiver } from "../LogReceiver.js"
import { ConnectionClosed, ReceiverRefused } from "./receiverErrors.js"
import { makeLink } from "./receiverLink.js"
import { type Inbound, ReceiverStore, type Session, type StoreOptions } from "./receiverStore.js"
import type { Record } from "../../protocol/Wire.js"

export interface MemoryOptions extends StoreOptions {
  /** Records the sender may buffer before `send` suspends (default 64). */
  readonly sendBuffer?: number | undefined
}

export const DEFAULT_SEND_BUFFER = 64

/** The sender may reuse its buffer once `send` returns, as with an encoded frame. */
const copy = (record: Record): Record =>
  record._tag === "Write" || record._tag === "Block"
    ? { ...record, data: new Uint8Array(record.data) }
    : record

/** Suspends while a checksum request waits (the session reads nothing more), or until it closes. */
const unblocked = (session: Session): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (!session.blocked) return resume(Effect.void)
    session.onUnblocked = () => {
      session.onUnblocked = undefined
      resume(Effect.void)
    }
    return Effect.sync(() => {
      session.onUnblocked = undefined
    })
  })

/** Suspends while the store's intake is stalled. */
const intakeOpen = (store: ReceiverStore): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (!store.intakePaused) return resume(Effect.void)
    const off = store.onIntake((paused) => {
      if (paused) return
      off()
      resume(Effect.void)
    })
    return Effect.sync(off)
  })

export const makeClient = (store: ReceiverStore, options: MemoryOptions = {}): LogReceiver.Service => ({
  connect: Effect.fn("LogReceiver.memory.connect")(function* (hello: LogReceiver.Hello) {
    const link = yield* makeLink<Inbound>(options.sendBuffer ?? DEFAULT_SEND_BUFFER)
    const result = store.hello(hello, { deliver: link.deliver, close: link.markLost })
    if (result._tag === "Refuse")
      return yield* new ReceiverRefused({ reason: result.reason, detail: result.detail })
    const session = result.session
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        session.close()
        link.markLost(new ConnectionClosed({ by: "filter", detail: "connection scope closed" }))
      })
    )
    yield* Effect.forkScoped(
      Effect.gen(function* () {
        for (;;) {
          const [records] = yield* link.outbox.takeAll
          for (const frame of records) {
            if (store.intakePaused) yield* intakeOpen(store)
            if (session.blocked) yield* unblocked(session)
            if (link.isLost()) return
            session.receive(frame)
          }
        }
      })
    )
    const connection: LogReceiver.Connection = {
      durableSeq: result.durableSeq,
      send: (record) => Effect.suspend(() => link.send(copy(record))),
      // Kept by reference: a caller that changed the bytes would corrupt the replica here.
      // Lent data is copied at once: the store keeps what it receives.
      sendOwned: (record, onWritten) =>
        onWritten === undefined
          ? link.send(record)
          : Effect.suspend(() => {
              const own = copy(record)
              onWritten()
              return link.send(own)
            }),
      // As `sendOwned`: kept by reference, or copied at once when lent with `onWritten`.
      sendAll: (records, onWritten) =>
        onWritten === undefined
          ? link.sendAll(records)
          : Effect.suspend(() => {
              const own = records.map(copy)
              onWritten()
              return link.sendAll(own)
            }),
      // The blocks are copied: the caller may reuse its array.
      requestChecksums: (request) =>
        Effect.suspend(() => link.send({ ...request, blocks: [...request.blocks] })),
      messages: Mailbox.toStream(link.messages)
    }
    return connection
  })
})

export const controlOf = (store: ReceiverStore): MemoryReceiver.Service => ({
  flush: Effect.sync(() => store.flush()),
  stallAcks: (on) => Effect.sync(() => store.stallAcks(on)),
  stallIntake: (on) => Effect.sync(() => store.stallIntake(on)),
  dropConnection: (diskId) => Effect.sync(() => store.dropConnection(diskId)),
  dropNextRecord: Effect.sync(() => store.dropNextRecord()),
  restart: (options) => Effect.sync(() => store.restart(options)),
  durableSeq: (diskId) => Effect.sync(() => store.durableSeq(diskId)),
  log: (diskId) => Effect.sync(() => store.log(diskId)),
  recoveryPoints: (diskId) => Effect.sync(() => store.recoveryPoints(diskId)),
  damage: (diskId, block) => Effect.sync(() => store.damage(diskId, block)),
  overwrite: (diskId, block, bytes) => Effect.sync(() => store.overwrite(diskId, block, bytes)),
  replicaBlock: (diskId, block) => Effect.sync(() => store.replicaBlock(diskId, block)),
  image: (diskId, atSeq) => Effect.sync(() => store.image(diskId, atSeq)),
  isConnected: (diskId) => Effect.sync(() => store.isConnected(diskId))
})

export const makeMemory = (
  options: MemoryOptions = {}
): {
  readonly store: ReceiverStore
  readonly client: LogReceiver.Service
  readonly control: MemoryReceiver.Service
} => {
  const store = new ReceiverStore(options)
  return { store, client: makeClient(store, options), control: controlOf(store) }
}

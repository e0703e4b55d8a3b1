/**
 * The client side of one connection, shared by every LogReceiver layer: a bounded
 * outbox (backpressure), the receiver's messages, and the one-way "lost" state that
 * fails `send` and `messages` with `ConnectionLost`.
 */
import { Chunk, Deferred, Effect, Exit, Mailbox } from "effect"
import type { Message } from "./receiverStore.js"
import { ConnectionLost } from "./receiverErrors.js"

export interface Link<A> {
  readonly outbox: Mailbox.Mailbox<A>
  readonly messages: Mailbox.Mailbox<Message, ConnectionLost>
  readonly lost: Deferred.Deferred<never, ConnectionLost>
  /** Enqueues for the writer; suspends while the outbox is full; fails once the connection is lost. */
  readonly send: (item: A) => Effect.Effect<void, ConnectionLost>
  /** `send` for each item in order, in one effect: suspends while the outbox is full. */
  readonly sendAll: (items: ReadonlyArray<A>) => Effect.Effect<void, ConnectionLost>
  readonly deliver: (message: Message) => void
  /** Idempotent: the first cause wins. */
  readonly markLost: (cause: unknown) => void
  readonly isLost: () => boolean
}

export const makeLink = <A>(capacity: number): Effect.Effect<Link<A>> =>
  Effect.gen(function* () {
    // A mailbox: the writer takes a batch as the array it was offered into.
    const outbox = yield* Mailbox.make<A>(capacity)
    const messages = yield* Mailbox.make<Message, ConnectionLost>()
    const lost = yield* Deferred.make<never, ConnectionLost>()
    let error: ConnectionLost | undefined
    const markLost = (cause: unknown) => {
      if (error !== undefined) return
      error = new ConnectionLost({ cause })
      // Messages already delivered stay readable before the failure.
      messages.unsafeDone(Exit.fail(error))
      Deferred.unsafeDone(lost, Exit.fail(error))
    }
    const send = (item: A): Effect.Effect<void, ConnectionLost> =>
      Effect.suspend(() => {
        if (error !== undefined) return Effect.fail(error)
        // Fast path without forking; only a full outbox races the offer against the loss.
        if (outbox.unsafeOffer(item)) return Effect.void
        return Effect.asVoid(Effect.raceFirst(outbox.offer(item), Deferred.await(lost)))
      })
    const sendAll = (items: ReadonlyArray<A>): Effect.Effect<void, ConnectionLost> =>
      Effect.suspend(() => {
        if (error !== undefined) return Effect.fail(error)
        // What fits goes at once; the rest waits for room, in order, unless the loss comes first.
        const rest = outbox.unsafeOfferAll(items)
        if (Chunk.isEmpty(rest)) return Effect.void
        return Effect.asVoid(Effect.raceFirst(outbox.offerAll(rest), Deferred.await(lost)))
      })
    return {
      outbox,
      messages,
      lost,
      send,
      sendAll,
      deliver: (message) => {
        messages.unsafeOffer(message)
      },
      markLost,
      isLost: () => error !== undefined
    }
  })

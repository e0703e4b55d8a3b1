/**
 * A queue with one consumer that takes everything at once: offers are synchronous and
 * never fail, and `takeAll` returns the array the items were pushed into (waiting while
 * it is empty). It replaces `Queue` on per-record paths, where `Queue`'s take built a
 * chunk node per element, and `Mailbox`, whose wake-up hops through the scheduler it
 * was made on (under a `TestClock` that let the clock run ahead of the consumer).
 */
import { Effect } from "effect"

export interface Inbox<A> {
  readonly offer: (item: A) => void
  readonly offerAll: (items: Iterable<A>) => void
  /** Everything offered since the last take, in order; waits while there is nothing. One taker at a time. */
  readonly takeAll: Effect.Effect<ReadonlyArray<A>>
  readonly size: () => number
}

export const make = <A>(): Inbox<A> => {
  let items: Array<A> = []
  let taker: ((resume: Effect.Effect<void>) => void) | undefined
  const wake = () => {
    if (taker === undefined) return
    const resume = taker
    taker = undefined
    resume(Effect.void)
  }
  const waitForItems = Effect.async<void>((resume) => {
    if (items.length > 0) return resume(Effect.void)
    taker = resume
    return Effect.sync(() => {
      if (taker === resume) taker = undefined
    })
  })
  const takeAll: Effect.Effect<ReadonlyArray<A>> = Effect.suspend(() => {
    if (items.length === 0) return Effect.zipRight(waitForItems, takeAll)
    const taken = items
    items = []
    return Effect.succeed(taken)
  })
  return {
    offer: (item) => {
      items.push(item)
      wake()
    },
    offerAll: (more) => {
      for (const item of more) items.push(item)
      if (items.length > 0) wake()
    },
    takeAll,
    size: () => items.length
  }
}

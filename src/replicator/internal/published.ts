/**
 * A value the decision loop publishes after every batch (the `Status`), and the stream of
 * its changes. A `SubscriptionRef` does the same under a semaphore, which costs a permit's
 * acquire and release on every set: per decided batch, on the filter's hot path. Here the
 * one writer is the loop (and `stop`, which runs on a stage's fiber), so no lock is needed.
 */
import { Effect, PubSub, Stream } from "effect"

export interface Published<A> {
  /** The last value set. */
  readonly get: () => A
  readonly set: (value: A) => Effect.Effect<void>
  /**
   * The value now, then every value set after it. A value set between the subscription
   * and the read of the current one may come twice in a row; none is missed.
   */
  readonly changes: Stream.Stream<A>
}

export const make = <A>(initial: A): Effect.Effect<Published<A>> =>
  Effect.map(PubSub.unbounded<A>(), (pubsub) => {
    let current = initial
    return {
      get: () => current,
      set: (value) =>
        Effect.suspend(() => {
          current = value
          return PubSub.publish(pubsub, value)
        }),
      changes: Stream.unwrapScoped(
        Effect.map(PubSub.subscribe(pubsub), (subscription) =>
          Stream.concat(Stream.succeed(current), Stream.fromQueue(subscription))
        )
      )
    }
  })

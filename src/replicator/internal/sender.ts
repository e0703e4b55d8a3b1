/**
 * The sender: records in seq order, and checksum requests in their place among them, on
 * the connection of the session they were decided in. What an older session decided
 * (before a link loss or a gap) is dropped. A request goes into `requests` as it is sent,
 * so the loop can match its answer.
 */
import { Clock, Effect, Either, Metric } from "effect"
import type { Metrics } from "./metrics.js"
import { type Shared, stop } from "./shared.js"

export const sender = (shared: Shared, metrics: Metrics): Effect.Effect<never> =>
  Effect.gen(function* () {
    for (;;) {
      const batch = yield* shared.outbox.takeAll
      const now = yield* Clock.currentTimeMillis
      let bytes = 0
      for (const out of batch) {
        if ("comparisons" in out) {
          if (out.session !== shared.session) continue
          const { request, compared } = yield* out.comparisons.pipe(
            Effect.tapError((e) => stop(shared, "a block read failed", e)),
            Effect.orDie
          )
          const conn = shared.connection
          if (conn === undefined || out.session !== shared.session) continue
          // Before it can be answered; in the same step as the session check, so a loss or
          // gap the loop decides meanwhile clears it.
          shared.requests.set(request.id, compared)
          const sent = yield* Effect.either(conn.requestChecksums(request))
          if (Either.isLeft(sent))
            shared.inbox.offer({ _tag: "Disconnected", reason: "connection-lost", link: shared.link })
          continue
        }
        // Decided before a link loss or gap: never sent, so its copy is done with.
        if (out.session !== shared.session) {
          out.release?.()
          continue
        }
        const record =
          out.record ??
          (yield* out.read!.pipe(
            Effect.tapError((e) => stop(shared, "a block read failed", e)),
            Effect.orDie
          ))
        const conn = shared.connection
        if (conn === undefined || out.session !== shared.session) {
          out.release?.()
          continue
        }
        shared.sentAt.set(out.seq, now)
        // The data is the filter's own: a fresh block read, never changed again, or a
        // pooled copy of the guest's buffer, lent until the connection has written it.
        // A lost connection may never hand a copy back: the collector takes its slab.
        const sent = yield* Effect.either(conn.sendOwned(record, out.release))
        if (Either.isLeft(sent)) {
          // The supervisor sees the loss too; make sure the loop hears of it once.
          shared.inbox.offer({ _tag: "Disconnected", reason: "connection-lost", link: shared.link })
          continue
        }
        if (record._tag === "Write" || record._tag === "Block") bytes += record.data.length
      }
      if (bytes > 0) yield* Metric.incrementBy(metrics.bytesSent, bytes)
    }
  })

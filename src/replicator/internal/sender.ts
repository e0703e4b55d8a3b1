/**
 * The sender: records in seq order, and checksum requests in their place among them, on
 * the connection of the session they were decided in. What an older session decided
 * (before a link loss or a gap) is dropped. A request goes into `requests` as it is sent,
 * so the loop can match its answer; it does not wait for the disk's digests of its
 * blocks. The records of a batch go out as runs, one `sendAll` per run (an effect per
 * record was a share of the filter's CPU per 4 KiB write), a run ending at a checksum
 * request, a change of connection, or a block read to wait for.
 */
import { Clock, Effect, Either, Metric } from "effect"
import type { Connection, OutRecord } from "../../adapters/LogReceiver.js"
import type { Metrics } from "./metrics.js"
import { type Shared, stop } from "./shared.js"

/** A run of records for one connection, and the copies to hand back once it has written them. */
interface Run {
  conn: Connection | undefined
  records: Array<OutRecord>
  releases: Array<() => void>
  bytes: number
}

const releaseAll = (releases: ReadonlyArray<() => void>) => () => {
  for (let i = 0; i < releases.length; i++) releases[i]!()
}

export const sender = (shared: Shared, metrics: Metrics): Effect.Effect<never> =>
  Effect.gen(function* () {
    const run: Run = { conn: undefined, records: [], releases: [], bytes: 0 }
    /** Sends the run; a lost connection is the loop's to hear of, once. */
    const flush = Effect.suspend(() => {
      const { conn, records, releases, bytes } = run
      if (conn === undefined || records.length === 0) return Effect.void
      run.records = []
      run.releases = []
      run.bytes = 0
      // The data is the filter's own: a fresh block read, never changed again, or a
      // pooled copy of the guest's buffer, lent until the connection has written it.
      // A lost connection may never hand a copy back: the collector takes its slab.
      return Effect.flatMap(
        Effect.either(conn.sendAll(records, releases.length === 0 ? undefined : releaseAll(releases))),
        (sent) => {
          if (Either.isLeft(sent)) {
            // The supervisor sees the loss too; make sure the loop hears of it once.
            shared.inbox.offer({ _tag: "Disconnected", reason: "connection-lost", link: shared.link })
            return Effect.void
          }
          return bytes > 0 ? Metric.incrementBy(metrics.bytesSent, bytes) : Effect.void
        }
      )
    })
    for (;;) {
      const batch = yield* shared.outbox.takeAll
      const now = yield* Clock.currentTimeMillis
      for (const out of batch) {
        if ("comparisons" in out) {
          if (out.session !== shared.session) continue
          // Every record decided before the request goes out before it.
          yield* flush
          const conn = shared.connection
          if (conn === undefined || out.session !== shared.session) continue
          // Not waiting for the disk's digests (the loop waits for them with the answer):
          // the receiver hashes its versions while the journal stage hashes the disk's.
          // Set before it can be answered; in the same step as the session check, so a
          // loss or gap the loop decides meanwhile clears it.
          const { request } = out.comparisons
          shared.requests.set(request.id, out.comparisons)
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
        // A block still being read: what is ready goes first, so the socket is not idle
        // while the disk reads (the drain's pipelining, as with a send per record).
        if (out.record === undefined && run.records.length > 0) yield* flush
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
        if (conn !== run.conn) {
          yield* flush
          run.conn = conn
        }
        shared.sentAt.set(out.seq, now)
        run.records.push(record)
        if (out.release !== undefined) run.releases.push(out.release)
        if (record._tag === "Write" || record._tag === "Block") run.bytes += record.data.length
      }
      yield* flush
    }
  })

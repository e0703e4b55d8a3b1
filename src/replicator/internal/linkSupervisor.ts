/**
 * The link supervisor: while the model says the link is down, it connects (capped
 * exponential backoff with jitter), hands the connection to the loop, turns acks and
 * gaps into inputs and checksum answers into commands, and watches for an ack timeout
 * (records unacked or comparisons unanswered for too long). A refusal no retry can heal stops
 * the replicator.
 */
import { Clock, Deferred, Duration, Effect, FiberId, type Schedule, Stream } from "effect"
import type { ConnectError, LogReceiver } from "../../adapters/LogReceiver.js"
import type { Config } from "../../domain/Config.js"
import * as Input from "../../domain/Input.js"
import { orStopped } from "./admission.js"
import { type Command, noteError, type Shared, stop, untilState } from "./shared.js"

export interface LinkSettings {
  readonly diskId: string
  readonly config: Config
  /** No ack for this long while records are in flight: the link is declared lost. */
  readonly ackTimeout: Duration.Duration
  readonly reconnect: Schedule.Schedule<unknown, unknown>
}

/** Until the model says the link is down. */
const linkDown = (shared: Shared): Effect.Effect<void> => untilState(shared, (s) => s.link === "down")

/** One connection, from the handshake until it is lost, times out, or the loop lets it go; says why it ended. */
export const runConnection = (shared: Shared, receiver: LogReceiver.Service, settings: LinkSettings) =>
  Effect.scoped(
    Effect.gen(function* () {
      const conn = yield* receiver.connect({
        diskId: settings.diskId,
        blockSize: settings.config.blockSize,
        blockCount: settings.config.blockCount,
        watermark: shared.state.watermark
      })
      const adopted = Deferred.unsafeMake<number | undefined>(FiberId.none)
      shared.inbox.offer({ _tag: "Connected", connection: conn, adopted })
      // The loop answers every handshake it takes. Not raced with anything: a loop that
      // stopped takes the supervisor down with it, and a race set up just as an
      // interruption arrives can miss it (closing once waited out a 5 s timeout here).
      const myLink = yield* Deferred.await(adopted)
      if (myLink === undefined) return "handshake-not-adopted"
      // Acks are cumulative: of a run of acks read together only the last is news.
      const messages = conn.messages.pipe(
        Stream.runForEachChunk((chunk) => {
          const commands: Array<Command> = []
          let ack: number | undefined
          for (const m of chunk) {
            if (m._tag === "Ack") {
              ack = m.seq
              continue
            }
            // A gap or a checksum answer comes after the acks before it (an answer's records are acked first).
            if (ack !== undefined)
              commands.push({ _tag: "Message", link: myLink, input: Input.ackReceived(ack) })
            ack = undefined
            commands.push(
              m._tag === "Gap"
                ? { _tag: "Message", link: myLink, input: Input.gapReceived(m.expected) }
                : { _tag: "Answer", link: myLink, answer: m }
            )
          }
          if (ack !== undefined)
            commands.push({ _tag: "Message", link: myLink, input: Input.ackReceived(ack) })
          return Effect.sync(() => shared.inbox.offerAll(commands))
        }),
        Effect.as("connection-lost"),
        Effect.catchAll(() => Effect.succeed("connection-lost"))
      )
      const timeout = Duration.toMillis(settings.ackTimeout)
      const watchdog = Effect.gen(function* () {
        for (;;) {
          yield* Effect.sleep(Duration.millis(Math.max(10, timeout / 4)))
          if (shared.link !== myLink) return "superseded"
          const now = yield* Clock.currentTimeMillis
          // Records waiting for their ack, or comparisons for their answer.
          const waiting = shared.state.flight.size > 0 || shared.state.comparing.length > 0
          if (waiting && now - shared.lastProgress > timeout) return "ack-timeout"
        }
      })
      const closedByFilter = shared.connectionRef.changes.pipe(
        Stream.filter((c) => c?.link !== myLink),
        Stream.take(1),
        Stream.runDrain,
        Effect.as("closed-by-filter")
      )
      const reason = yield* Effect.raceAll([messages, watchdog, closedByFilter])
      shared.inbox.offer({ _tag: "Disconnected", reason, link: myLink })
      return reason
    })
  )

/** Between two warnings of the same connect failure; the attempts in between are logged at debug. */
const CONNECT_WARNING_EVERY_MILLIS = 30_000

/**
 * A refusal no retry can heal stops the replicator; any other is retried, and said at WARN
 * with its cause: an operator must see that the filter cannot reach its receiver, without a
 * line per backoff step (a new cause warns at once, the same one again after 30 s).
 */
const connectErrors = () => {
  let lastMessage = ""
  let lastAt = 0
  let repeated = 0
  const onError = (e: ConnectError) =>
    e._tag === "ReceiverRefused"
      ? e.permanent
        ? Effect.void
        : Effect.logWarning(`the receiver refused the connection (${e.reason}), retrying: ${e.detail}`)
      : Effect.flatMap(Clock.currentTimeMillis, (now) => {
          if (e.message === lastMessage && now - lastAt < CONNECT_WARNING_EVERY_MILLIS) {
            repeated++
            return Effect.logDebug(`connect failed: ${e.message}`)
          }
          const since = repeated > 0 ? ` (${repeated} more failed attempts since the last warning)` : ""
          lastMessage = e.message
          lastAt = now
          repeated = 0
          return Effect.logWarning(`cannot reach the receiver, retrying with backoff: ${e.message}${since}`)
        })
  /** After a connection: the next failure warns at once. */
  const reset = Effect.sync(() => {
    lastMessage = ""
    repeated = 0
  })
  return { onError, reset }
}

export const linkSupervisor = (
  shared: Shared,
  receiver: LogReceiver.Service,
  settings: LinkSettings
): Effect.Effect<void> =>
  Effect.gen(function* () {
    const connectError = connectErrors()
    // A stopped replicator connects no more (a refusal would only be met again). Checked
    // here too, not only by the race below: `linkDown` returns at once when the link is
    // already down, so the loop may go round without yielding to that race.
    while (!shared.hasStopped) {
      // Connect only while the model says the link is down.
      yield* linkDown(shared)
      yield* runConnection(shared, receiver, settings).pipe(
        Effect.tap(() => connectError.reset),
        Effect.tapError((e) =>
          Effect.zipRight(noteError(shared, `connect: ${e.message}`), connectError.onError(e))
        ),
        Effect.retry({
          schedule: settings.reconnect,
          while: (e) => !(e._tag === "ReceiverRefused" && e.permanent)
        }),
        Effect.catchAll((e) =>
          e._tag === "ReceiverRefused" && e.permanent
            ? stop(shared, "the receiver refuses this disk", e)
            : Effect.logWarning("giving up a connection attempt", e)
        )
      )
      // Wait for the loop to hear of the loss before connecting again.
      yield* linkDown(shared)
    }
  }).pipe(
    // A stopped replicator connects no more (a refusal would only be met again).
    (connecting) => orStopped(connecting, shared.stopped),
    Effect.ignore
  )

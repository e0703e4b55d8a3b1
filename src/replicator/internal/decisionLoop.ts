/**
 * The decision loop: the one fiber that owns the state. It takes every command queued
 * since its last turn as one batch, decides and folds each input (each event folded
 * once, by the decider), hands the batch to the journal stage, and publishes the state.
 * It decides the next batch while the journal syncs the last.
 */
import { Clock, Deferred, Effect, Either, Exit, Metric, SubscriptionRef } from "effect"
import type { Lease } from "../../internal/slab.js"
import type { Config } from "../../domain/Config.js"
import * as Decider from "../../domain/Decider.js"
import * as Event from "../../domain/Event.js"
import * as Geometry from "../../domain/Geometry.js"
import * as Input from "../../domain/Input.js"
import * as State from "../../domain/State.js"
import * as Wire from "../../protocol/Wire.js"
import { ReceiverAheadOfJournal } from "./errors.js"
import type { Metrics } from "./metrics.js"
import {
  type Command,
  type Decided,
  noteError,
  type Shared,
  statusNow,
  stop,
  touch,
  useSha256
} from "./shared.js"
import { noteBatch } from "./status.js"
import { switchover } from "./switchover.js"

export interface LoopSettings {
  readonly diskId: string
  readonly config: Config
  /** The switchover hold, in milliseconds (0: off). */
  readonly holdMillis: number
  /** This disk's series (`forDisk`). */
  readonly metrics: Metrics
  /** The mutant (internal/mutants.ts): a reply's digests are compared whatever algorithm it echoes. */
  readonly ignoreDigestEcho?: boolean | undefined
}

/** What an event puts on the wire, decided in `session` against `before`, the state it met. */
export const recordOf = (
  session: number,
  event: Event.Event,
  before: State.State,
  data: Lease | undefined
): Decided | undefined => {
  switch (event.type) {
    // Records in one shape (the sender's), with every field set: the loop, the journal
    // stage and the sender pass the same object along.
    case "WriteStreamed":
      return {
        session,
        seq: event.seq,
        record: {
          _tag: "Write",
          seq: event.seq,
          epoch: before.epoch,
          offset: event.offset,
          data: data!.bytes
        },
        read: undefined,
        release: data!.release
      }
    case "BlockSent":
      // Read once the event is durable (the journal stage); the sender waits for it in seq order.
      return { session, seq: event.seq, block: event.block, epoch: before.epoch }
    case "ResyncBegun":
      return {
        session,
        seq: event.seq,
        record: { _tag: "ResyncBegin", seq: event.seq, epoch: event.epoch, base: Decider.markerBase(before) },
        read: undefined,
        release: undefined
      }
    case "SyncActivated":
      return {
        session,
        seq: event.seq,
        record: { _tag: "ResyncEnd", seq: event.seq, epoch: event.epoch },
        read: undefined,
        release: undefined
      }
    case "BlockCompared":
      // Read and hashed once the event is durable (the journal stage); its request goes in this place.
      return { session, compared: event.id, block: event.block }
    case "RunCompared":
      // The same, one request for the run.
      return { session, run: event.id, blocks: event.blocks }
    default:
      return undefined
  }
}

/**
 * Whether a pump tick could drain now: the marker, blocks within the window (block
 * records in flight and comparisons waiting share it), or the switch back to sync.
 * While comparisons wait for their answers (each frees many slots), the window refills
 * once an eighth of it is free: the few mismatched blocks acked between two answers would
 * otherwise each be a tick and a checksum request of 2–3 blocks (docs/performance.md, "Session 11").
 */
export const needsPump = (s: State.State, window: number): boolean =>
  s.mode === "resync" &&
  s.link === "up" &&
  s.owed === null &&
  (!s.markerSent || (State.hasObligations(s) && hasRoom(s, window)) || Decider.canResumeSync(s))

const hasRoom = (s: State.State, window: number): boolean => {
  const free = window - s.flight.blockRecords - s.comparing.length
  return free > 0 && (s.comparing.length === 0 || free >= Math.ceil(window / 8))
}

/**
 * The outcomes of a checksum answer: one per block of its request, in request order, or,
 * for a run's request (`run`), one for the whole run; matched when the receiver's digest
 * equals the disk's as read, with the reply's `through`.
 * A refusal (the receiver could not check its bytes, or cannot compute the algorithm asked:
 * `unsupported`) is a mismatch of every block; its `through` is the watermark, so it acks
 * nothing. So is a reply whose algorithm is not the one asked (a receiver from before the
 * code answers SHA-256 with 0 whatever was asked): its digests prove nothing. Either of the
 * last two has the filter ask SHA-256 from then on (`useSha256`). `undefined` for an answer
 * whose request was forgotten at a link loss or gap (its comparisons were re-marked): stale.
 */
const outcomesOf = (
  shared: Shared,
  answer: Wire.ChecksumReply | Wire.ChecksumRefused,
  watermark: number,
  ignoreDigestEcho: boolean
): Effect.Effect<ReadonlyArray<Input.Input> | undefined> =>
  Effect.gen(function* () {
    const asked = shared.requests.get(answer.id)
    if (asked === undefined) return undefined
    shared.requests.delete(answer.id)
    shared.checksumsAnswered = true
    const { ids, request } = asked
    const sendAll = () =>
      asked.run
        ? [
            Input.runCompleted(
              ids[0]!,
              request.blocks,
              request.blocks.map(() => false),
              watermark
            )
          ]
        : ids.map((id, k) => Input.comparisonCompleted(id, request.blocks[k]!, false, watermark))
    if (answer._tag === "ChecksumRefused") {
      if (answer.reason === "unsupported" && request.algorithm !== Wire.DigestCode.sha256)
        yield* useSha256(shared, `refused digest code ${request.algorithm} (${answer.detail})`)
      else
        yield* Effect.logWarning(
          `the receiver refused checksum request ${answer.id} (${answer.reason}): ${answer.detail}; its ${ids.length} block(s) are sent`
        )
      return sendAll()
    }
    if (answer.algorithm !== request.algorithm && !ignoreDigestEcho) {
      yield* useSha256(
        shared,
        `answered checksum request ${answer.id} with digest code ${answer.algorithm}, asked ${request.algorithm} (a receiver from before the code?)`
      )
      return sendAll()
    }
    // A reply of another size answers another question: believe none of it, send the blocks.
    const whole = answer.digests.byteLength === ids.length * Wire.DIGEST_BYTES
    if (!whole)
      yield* Effect.logWarning(
        `checksum reply ${answer.id} holds ${answer.digests.byteLength / Wire.DIGEST_BYTES} digest(s) for ${ids.length} block(s); its blocks are sent`
      )
    // The disk's digests: usually ready (hashed while the receiver hashed), else soon (the
    // journal stage hashes requests in the order they are answered). A failed read has
    // stopped the replicator: the answer is dropped.
    const digests = yield* Effect.either(asked.digests)
    if (Either.isLeft(digests)) return undefined
    // Compared in place: no view per block of either side's digests.
    const disk = Buffer.from(digests.right.buffer, digests.right.byteOffset, digests.right.byteLength)
    const D = Wire.DIGEST_BYTES
    if (asked.run)
      return [
        Input.runCompleted(
          ids[0]!,
          request.blocks,
          request.blocks.map(
            (_, k) => whole && disk.compare(answer.digests, k * D, (k + 1) * D, k * D, (k + 1) * D) === 0
          ),
          answer.through
        )
      ]
    return ids.map((id, k) =>
      Input.comparisonCompleted(
        id,
        request.blocks[k]!,
        whole && disk.compare(answer.digests, k * D, (k + 1) * D, k * D, (k + 1) * D) === 0,
        answer.through
      )
    )
  })

/** After this many connections closed by the receiver on an unanswered request (none answered), comparisons stop. */
const CLOSES_BEFORE_COMPARE_OFF = 2

/**
 * At a link loss: a receiver from before checksum requests closes the connection on
 * every one (docs/wire.md, "An older peer"). Two connections it closed with a request
 * unanswered, when none was ever answered, turn comparisons off for this run. A loss by
 * the filter's own ack timeout is no such sign (a receiver slow to open its index for
 * the first request times out so): it turned a checksum resync of 1 GiB into a full one.
 */
const forgetRequests = (shared: Shared, reason: string): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (shared.requests.size === 0 || shared.checksumsAnswered || shared.compareOff) return Effect.void
    if (reason !== "connection-lost" || ++shared.closedOnRequest < CLOSES_BEFORE_COMPARE_OFF)
      return Effect.void
    shared.compareOff = true
    return Effect.logWarning(
      "the connection closed with a checksum request unanswered, and the receiver never answered one (a receiver from before checksums?): owed blocks are sent, not compared, from now on"
    )
  })

/** Decides one batch of commands, hands it to the journal stage and publishes the state. */
export const decideBatch = (shared: Shared, settings: LoopSettings, commands: ReadonlyArray<Command>) =>
  Effect.gen(function* () {
    const extentBytes = shared.activity?.extentBytes ?? 0
    const events: Array<Event.Event> = []
    const outgoing: Array<Decided> = []
    const barriers: Array<Deferred.Deferred<void>> = []
    let writes = 0
    let writtenBytes = 0
    const extents: Array<number> | undefined = shared.activity === undefined ? undefined : []
    const adoptions: Array<Deferred.Deferred<number | undefined>> = []
    const before = shared.state
    let s = shared.state
    // A command's one input, in an array used again for each (it is read before the next):
    // a fresh array per guest write was garbage for nothing.
    const one: Array<Input.Input> = []
    for (const command of commands) {
      let inputs: ReadonlyArray<Input.Input>
      let data: Lease | undefined
      switch (command._tag) {
        case "Barrier":
          barriers.push(command.done)
          continue
        case "Input": {
          const input = command.input
          one[0] = input
          inputs = one
          data = command.data
          if (input._tag === "PumpTick") shared.pumpPending = false
          else if (input._tag === "WriteCompleted") {
            writes++
            writtenBytes += input.length
            if (extents !== undefined)
              extents.push(
                Math.floor(input.offset / extentBytes),
                Math.floor((input.offset + input.length - 1) / extentBytes)
              )
          }
          break
        }
        case "Connected":
          // Answered whatever happens below: adopted (a link number) or not.
          adoptions.push(command.adopted)
          if (s.link === "up") continue // a stale handshake; the supervisor will retry
          inputs = [Input.linkReestablished(command.connection.durableSeq)]
          break
        case "Message":
          if (command.link !== shared.link || s.link === "down") continue // from a connection already given up
          inputs = [command.input]
          break
        case "Answer": {
          if (command.link !== shared.link || s.link === "down") continue
          const waiter = shared.verifying?.answers.get(command.answer.id)
          if (waiter !== undefined) {
            shared.verifying!.answers.delete(command.answer.id)
            Deferred.unsafeDone(waiter, Exit.succeed(command.answer))
            continue
          }
          const outcomes = yield* outcomesOf(
            shared,
            command.answer,
            s.watermark,
            settings.ignoreDigestEcho === true
          )
          if (outcomes === undefined) continue // its comparisons were re-marked by a loss or gap
          inputs = outcomes
          break
        }
        case "Disconnected":
          if (command.link !== shared.link) continue
          inputs = [Input.linkFailed(command.reason)]
          break
      }
      for (const input of inputs) {
        let decided = Decider.decideFolded(s, input)
        if (Either.isLeft(decided)) {
          if (command._tag === "Input") {
            // Checked before the disk write, so this is a bug; the disk already holds the write.
            yield* stop(shared, "a completed guest write was rejected", decided.left)
            continue
          }
          if (decided.left._tag === "ReceiverAhead") {
            // Another history of this disk at the receiver: resending from this journal
            // would be taken for records it has. The model refuses it; so does the filter.
            yield* stop(
              shared,
              "the receiver's log does not come from this journal",
              new ReceiverAheadOfJournal({
                diskId: settings.diskId,
                receiverSeq: decided.left.receiverSeq,
                lastSent: decided.left.nextSeq - 1
              })
            )
            continue
          }
          if (command._tag !== "Message" || input._tag !== "GapReceived") {
            yield* stop(shared, "the receiver contradicts the journal", decided.left)
            continue
          }
          // A gap we cannot place: the receiver lost acked data mid-connection. Start over.
          decided = Decider.decideFolded(s, Input.linkFailed("protocol-error"))
          if (Either.isLeft(decided)) continue
        }
        // Folded once, by the decider: each event comes with the state it was decided against.
        const folded = decided.right
        let streamed = false
        for (let i = 0; i < folded.events.length; i++) {
          const event = folded.events[i]!
          const out = recordOf(shared.session, event, folded.before[i]!, data)
          if (out !== undefined) outgoing.push(out)
          if (event.type === "WriteStreamed") streamed = true
          const seq = Event.recordSeq(event)
          if (seq !== undefined) shared.lastDecided = seq
          if (
            shared.verifying !== undefined &&
            (event.type === "WriteStreamed" || event.type === "WriteTracked")
          )
            touch(
              shared.verifying,
              Geometry.firstBlock(settings.config, event.offset),
              Geometry.lastBlock(settings.config, event.offset, event.length)
            )
          events.push(event)
          if (event.type === "LinkLost" || event.type === "DiscontinuityReported") {
            shared.session++
            if (event.type === "LinkLost") yield* forgetRequests(shared, event.reason)
            // Their comparisons are re-marked: answers still to come are stale.
            shared.requests.clear()
            // A verify's batch on this session cannot be judged: it asks again.
            if (shared.verifying !== undefined) {
              for (const waiter of shared.verifying.answers.values())
                Deferred.unsafeDone(waiter, Exit.succeed(undefined))
              shared.verifying.answers.clear()
            }
          }
          if (event.type === "LinkRestored" && command._tag === "Connected") {
            shared.session++
            shared.link++
            shared.connection = command.connection
            yield* SubscriptionRef.set(shared.connectionRef, { link: shared.link, conn: command.connection })
            Deferred.unsafeDone(command.adopted, Exit.succeed(shared.link))
          }
          if (event.type === "LinkLost") {
            // The only event that takes the link down. The supervisor sees this and closes the connection.
            shared.connection = undefined
            yield* SubscriptionRef.set(shared.connectionRef, undefined)
          }
        }
        s = folded.state
        // Only tracked in the bitmap (resync): the copy is not needed.
        if (data !== undefined && !streamed) data.release()
      }
    }
    shared.state = s
    // Not adopted (a stale handshake, or one the model refused): the supervisor retries.
    for (const adopted of adoptions) Deferred.unsafeDone(adopted, Exit.succeed(undefined))
    if (events.length > 0 || barriers.length > 0 || writes > 0)
      shared.decisions.offer({ events, outgoing, barriers, writes, writtenBytes, extents, after: s })
    if (writtenBytes > 0) yield* Metric.incrementBy(settings.metrics.bytesWritten, writtenBytes)
    yield* afterBatch(shared, settings, before, s, events)
  })

/** The gauges published per batch, in the order of `Shared.gaugesSet`. */
const gaugeOrder = (m: Metrics) => [m.mode, m.epoch, m.dirtyBlocks, m.dirtyBytes, m.lagRecords, m.lagSeconds]

/**
 * Where a congestion pull-ahead found the unacked live bytes (records in flight stay in
 * flight at a pull-ahead): sent and waiting for acks, or still waiting for the filter's
 * journal. Says whether the receiver's round trip or the filter's own commit fell behind.
 */
const congestionDetail = (shared: Shared, after: State.State, now: number): string => {
  const oldest: number | undefined = shared.sentAt.values().next().value
  const sent = shared.sentAt.size
  const bytes = after.flight.liveBytes
  const amount = bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(0)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`
  return ` (${amount} unacked in ${after.flight.size} records: ${sent} sent${oldest === undefined ? "" : `, the oldest ${now - oldest} ms ago`}, ${after.flight.size - sent} not sent yet)`
}

/** Records in flight and comparisons waiting: what the watchdog waits on. */
const outstanding = (s: State.State): number => s.flight.size + s.comparing.length

/** Publishes a decided batch: lag bookkeeping, log lines, metrics, the hold, and a pump tick if one could drain. */
const afterBatch = (
  shared: Shared,
  settings: LoopSettings,
  before: State.State,
  after: State.State,
  events: ReadonlyArray<Event.Event>
) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const sentAt = shared.sentAt
    for (const e of events) {
      if (e.type === "Acked") {
        // Sent in seq order, so the acked ones come first: stop at the first unacked.
        for (const seq of sentAt.keys()) {
          if (seq > e.seq) break
          sentAt.delete(seq)
        }
        shared.lastProgress = now
      }
      if (e.type === "LinkLost" || e.type === "DiscontinuityReported") sentAt.clear()
      if (e.type === "ResyncActivated")
        yield* Effect.logWarning(
          `resync activated: epoch ${e.epoch}, reason ${e.reason}${e.reason === "congestion" ? congestionDetail(shared, after, now) : ""}`
        )
      if (e.type === "SyncActivated")
        yield* Effect.logInfo(`sync resumed: epoch ${e.epoch}, marker seq ${e.seq}`)
      if (e.type === "LinkLost") {
        yield* Effect.logWarning(`link lost: ${e.reason}`)
        yield* noteError(shared, `link lost: ${e.reason}`)
      }
      if (e.type === "LinkRestored")
        yield* Effect.logInfo(`link restored: receiver durable seq ${e.receiverSeq}`)
      if (e.type === "BlockSent") yield* Metric.increment(settings.metrics.drainSent)
      // An answer is progress, like an ack: the watchdog waits for both.
      if (e.type === "BlockMatched" || e.type === "BlockMismatched" || e.type === "RunMatched")
        shared.lastProgress = now
    }
    if (outstanding(before) === 0 && outstanding(after) > 0) shared.lastProgress = now
    const counted = { ...shared.book.checksums }
    noteBatch(shared.book, events, after, now)
    const { compared, matched, sent } = shared.book.checksums
    if (compared > counted.compared)
      yield* Metric.incrementBy(settings.metrics.blocksCompared, compared - counted.compared)
    if (matched > counted.matched)
      yield* Metric.incrementBy(settings.metrics.blocksMatched, matched - counted.matched)
    if (sent > counted.sent) yield* Metric.incrementBy(settings.metrics.checksumSent, sent - counted.sent)
    const status = statusNow(shared, now)
    yield* shared.statusRef.set(status)
    shared.decided.fire()
    const order = gaugeOrder(settings.metrics)
    const gauges = [
      after.mode === "sync" ? 0 : 1,
      after.epoch,
      status.dirtyBlocks,
      status.dirtyBlocks * settings.config.blockSize,
      status.lagRecords,
      status.lagMillis / 1000
    ]
    // Only the gauges that changed: in a live stream most stay as they were, batch after batch.
    for (let i = 0; i < gauges.length; i++) {
      const value = gauges[i]!
      if (value === shared.gaugesSet[i]) continue
      shared.gaugesSet[i] = value
      yield* Metric.set(order[i]!, value)
    }
    yield* switchover(shared, { holdMillis: settings.holdMillis, window: settings.config.window }, after, now)
    if (!shared.pumpPending && needsPump(after, settings.config.window)) {
      shared.pumpPending = true
      yield* shared.pumpSignal.offer(undefined)
    }
  })

/** The loop: every command queued since the last turn is one batch. */
export const decisionLoop = (shared: Shared, settings: LoopSettings): Effect.Effect<never> =>
  Effect.gen(function* () {
    for (;;) yield* decideBatch(shared, settings, yield* shared.inbox.takeAll)
  })

/**
 * Events: the facts the filter records, exactly the trace events of design §5.
 * Plain objects discriminated by `type` so they are cheap to build on the hot path
 * and identical to their JSON Lines form.
 */
import { Schema } from "effect"

/** A non-negative safe integer (sequence numbers, offsets, lengths, blocks, epochs). */
export const Count = Schema.NonNegativeInt.pipe(
  Schema.filter((n) => Number.isSafeInteger(n) || "must be a safe integer")
)

/** `Count` checked by hand, for the fast paths that skip a Schema pass. */
export const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0

/** Why the stream went down; an open set (`connection-lost`, `ack-timeout`, …). */
export const LinkLossReason = Schema.String.pipe(Schema.minLength(1))

export const ResyncReason = Schema.Literal(
  "interruption",
  "discontinuity",
  "congestion",
  "receiver-rollback",
  "initial",
  // Trace version 2: an online verify found a block that differs (`BlockDiffered`).
  "verify"
)
export type ResyncReason = typeof ResyncReason.Type

export const WriteStreamed = Schema.Struct({
  type: Schema.Literal("WriteStreamed"),
  seq: Count,
  offset: Count,
  length: Count
})
export type WriteStreamed = typeof WriteStreamed.Type

export const WriteTracked = Schema.Struct({
  type: Schema.Literal("WriteTracked"),
  offset: Count,
  length: Count
})
export type WriteTracked = typeof WriteTracked.Type

export const Acked = Schema.Struct({ type: Schema.Literal("Acked"), seq: Count })
export type Acked = typeof Acked.Type

export const LinkLost = Schema.Struct({ type: Schema.Literal("LinkLost"), reason: LinkLossReason })
export type LinkLost = typeof LinkLost.Type

export const LinkRestored = Schema.Struct({ type: Schema.Literal("LinkRestored"), receiverSeq: Count })
export type LinkRestored = typeof LinkRestored.Type

export const ResyncActivated = Schema.Struct({
  type: Schema.Literal("ResyncActivated"),
  epoch: Count,
  reason: ResyncReason
})
export type ResyncActivated = typeof ResyncActivated.Type

export const ResyncBegun = Schema.Struct({ type: Schema.Literal("ResyncBegun"), epoch: Count, seq: Count })
export type ResyncBegun = typeof ResyncBegun.Type

export const PassStarted = Schema.Struct({ type: Schema.Literal("PassStarted"), epoch: Count, blocks: Count })
export type PassStarted = typeof PassStarted.Type

export const BlockSent = Schema.Struct({ type: Schema.Literal("BlockSent"), seq: Count, block: Count })
export type BlockSent = typeof BlockSent.Type

export const SyncActivated = Schema.Struct({
  type: Schema.Literal("SyncActivated"),
  epoch: Count,
  seq: Count
})
export type SyncActivated = typeof SyncActivated.Type

export const DiscontinuityReported = Schema.Struct({
  type: Schema.Literal("DiscontinuityReported"),
  expected: Count
})
export type DiscontinuityReported = typeof DiscontinuityReported.Type

// Trace version 2: checksum-based resync (docs/model.md, "Comparisons").

/**
 * Instead of sending an obligated block, the filter compares it: comparison `id` asks
 * the receiver for a strong checksum of its newest version of `block` (not a record: it
 * takes no seq), to compare with the disk's block as read after this decision. The block
 * leaves the obligations here, as with `BlockSent`; a write completing afterwards marks
 * it again.
 */
export const BlockCompared = Schema.Struct({
  type: Schema.Literal("BlockCompared"),
  id: Count,
  block: Count
})
export type BlockCompared = typeof BlockCompared.Type

/** Comparison `id` matched: the receiver durably holds the block as read. */
export const BlockMatched = Schema.Struct({ type: Schema.Literal("BlockMatched"), id: Count, block: Count })
export type BlockMatched = typeof BlockMatched.Type

/** Comparison `id` did not match: the block is an obligation again. */
export const BlockMismatched = Schema.Struct({
  type: Schema.Literal("BlockMismatched"),
  id: Count,
  block: Count
})
export type BlockMismatched = typeof BlockMismatched.Type

/** An online verify found the replica's `block` differs from the disk's: an obligation again (resync mode). */
export const BlockDiffered = Schema.Struct({ type: Schema.Literal("BlockDiffered"), block: Count })
export type BlockDiffered = typeof BlockDiffered.Type

// Trace version 3: a checksum request's comparisons as one event each way (docs/model.md, "Runs").

/** The most blocks one run compares: one checksum request's most (the wire's `MAX_CHECKSUM_BLOCKS`). */
export const MAX_RUN_BLOCKS = 1024

/** Whether `xs` counts strictly up (so no block or id is named twice). */
const strictlyIncreasing = (xs: ReadonlyArray<number>): boolean => {
  for (let k = 1; k < xs.length; k++) if (xs[k]! <= xs[k - 1]!) return false
  return true
}

/**
 * `BlockCompared` for each of `blocks` at once, one checksum request: comparison
 * `id + k` is of `blocks[k]`. The blocks count strictly up (at most `MAX_RUN_BLOCKS`);
 * each leaves the obligations here and is read after this is journaled, as one
 * `BlockCompared` would.
 */
export const RunCompared = Schema.Struct({
  type: Schema.Literal("RunCompared"),
  id: Count,
  blocks: Schema.Array(Count).pipe(
    Schema.minItems(1),
    Schema.maxItems(MAX_RUN_BLOCKS),
    Schema.filter((bs) => strictlyIncreasing(bs) || "must count strictly up")
  )
})
export type RunCompared = typeof RunCompared.Type

/**
 * Comparisons `id … id + count − 1` matched, but those in `except` (strictly increasing,
 * inside that range): `BlockMatched` for each at once. Those excepted did not match (or
 * were answered before): each mismatched one has its own `BlockMismatched` next.
 */
export const RunMatched = Schema.Struct({
  type: Schema.Literal("RunMatched"),
  id: Count,
  count: Count.pipe(Schema.positive(), Schema.lessThanOrEqualTo(MAX_RUN_BLOCKS)),
  except: Schema.Array(Count).pipe(
    Schema.maxItems(MAX_RUN_BLOCKS),
    Schema.filter((xs) => strictlyIncreasing(xs) || "must count strictly up")
  )
}).pipe(
  Schema.filter(
    (e) =>
      e.except.every((x) => x >= e.id && x < e.id + e.count) ||
      "except: every id must be one of the run's (id … id + count − 1)"
  )
)
export type RunMatched = typeof RunMatched.Type

export const Event = Schema.Union(
  WriteStreamed,
  WriteTracked,
  Acked,
  LinkLost,
  LinkRestored,
  ResyncActivated,
  ResyncBegun,
  PassStarted,
  BlockSent,
  SyncActivated,
  DiscontinuityReported,
  BlockCompared,
  BlockMatched,
  BlockMismatched,
  BlockDiffered,
  RunCompared,
  RunMatched
)
export type Event = typeof Event.Type
export type EventType = Event["type"]

/** The event types of trace version 1 (design §5). */
export const eventTypesV1: ReadonlyArray<EventType> = [
  "WriteStreamed",
  "WriteTracked",
  "Acked",
  "LinkLost",
  "LinkRestored",
  "ResyncActivated",
  "ResyncBegun",
  "PassStarted",
  "BlockSent",
  "SyncActivated",
  "DiscontinuityReported"
]

/** The event types version 2 adds: checksum-based resync and online verify. */
export const comparisonEventTypes: ReadonlyArray<EventType> = [
  "BlockCompared",
  "BlockMatched",
  "BlockMismatched",
  "BlockDiffered"
]

/** The event types version 3 adds: a checksum request's comparisons as one event each way. */
export const runEventTypes: ReadonlyArray<EventType> = ["RunCompared", "RunMatched"]

/** Every event type (the newest trace version). */
export const eventTypes: ReadonlyArray<EventType> = [
  ...eventTypesV1,
  ...comparisonEventTypes,
  ...runEventTypes
]

/** The trace versions this model reads. */
export type TraceVersion = 1 | 2 | 3
export const latestTraceVersion: TraceVersion = 3

/** The first trace version that has events of this type. */
export const versionOf = (type: EventType): TraceVersion =>
  type === "RunCompared" || type === "RunMatched"
    ? 3
    : type === "BlockCompared" ||
        type === "BlockMatched" ||
        type === "BlockMismatched" ||
        type === "BlockDiffered"
      ? 2
      : 1

/** The first trace version that has this event (a type, or a `ResyncActivated` reason, it introduced). */
export const versionOfEvent = (event: Event): TraceVersion =>
  event.type === "ResyncActivated" ? (event.reason === "verify" ? 2 : 1) : versionOf(event.type)

/** The schema of one event type, for decoding with precise errors once the type is known. */
export const schemaOf: { readonly [K in EventType]: Schema.Schema<Extract<Event, { type: K }>> } = {
  WriteStreamed,
  WriteTracked,
  Acked,
  LinkLost,
  LinkRestored,
  ResyncActivated,
  ResyncBegun,
  PassStarted,
  BlockSent,
  SyncActivated,
  DiscontinuityReported,
  BlockCompared,
  BlockMatched,
  BlockMismatched,
  BlockDiffered,
  RunCompared,
  RunMatched
}

/** Whether the event is a record on the wire (it consumes a sequence number). */
export const recordSeq = (event: Event): number | undefined => {
  switch (event.type) {
    case "WriteStreamed":
    case "ResyncBegun":
    case "BlockSent":
    case "SyncActivated":
      return event.seq
    default:
      return undefined
  }
}

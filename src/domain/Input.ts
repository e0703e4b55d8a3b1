/**
 * Inputs: what the filter observes. `decide` turns each into events.
 */
import { Schema } from "effect"
import { Count, LinkLossReason, MAX_RUN_BLOCKS } from "./Event.js"

/** A guest write completed on the disk (folded post-op, design §3). */
export const WriteCompleted = Schema.TaggedStruct("WriteCompleted", { offset: Count, length: Count })
export type WriteCompleted = typeof WriteCompleted.Type

/** The receiver acked every record through `seq` durably (cumulative). */
export const AckReceived = Schema.TaggedStruct("AckReceived", { seq: Count })
export type AckReceived = typeof AckReceived.Type

/** The stream failed: connection error, ack timeout, receiver gone. */
export const LinkFailed = Schema.TaggedStruct("LinkFailed", { reason: LinkLossReason })
export type LinkFailed = typeof LinkFailed.Type

/** The receiver saw a gap in the sequence and expects `expected`. */
export const GapReceived = Schema.TaggedStruct("GapReceived", { expected: Count })
export type GapReceived = typeof GapReceived.Type

/** A new connection's handshake completed; `receiverSeq` is the receiver's durable seq. */
export const LinkReestablished = Schema.TaggedStruct("LinkReestablished", { receiverSeq: Count })
export type LinkReestablished = typeof LinkReestablished.Type

/**
 * Drain capacity is available: the send buffer can take `budget` more block records.
 * With `compareFrom`, while at least that many blocks are owed the drain compares
 * blocks (checksum-based resync) instead of sending them.
 */
export const PumpTick = Schema.TaggedStruct("PumpTick", {
  budget: Count,
  compareFrom: Schema.optional(Count.pipe(Schema.positive())),
  /**
   * With it, the blocks compared go in runs of at most this many, one `RunCompared` each
   * (trace version 3; one checksum request each); without it, one `BlockCompared` per block.
   */
  compareRun: Schema.optional(Count.pipe(Schema.positive(), Schema.lessThanOrEqualTo(MAX_RUN_BLOCKS)))
})
export type PumpTick = typeof PumpTick.Type

/**
 * The receiver's checksum for comparison `id` (of `block`) arrived and was compared
 * with the checksum of the disk's block as read after the comparison was decided.
 * `through`: the receiver's log held every record through it, durably, and none after
 * it, when it answered (it acked them first).
 */
export const ComparisonCompleted = Schema.TaggedStruct("ComparisonCompleted", {
  id: Count,
  block: Count,
  matched: Schema.Boolean,
  through: Count
})
export type ComparisonCompleted = typeof ComparisonCompleted.Type

/**
 * The receiver's checksums for the run of comparisons from `id` (of `blocks`, one
 * request) arrived: `matched[k]` says whether comparison `id + k`'s equals the disk's
 * block as read after the run was decided. `through` as for `ComparisonCompleted`.
 */
export const RunCompleted = Schema.TaggedStruct("RunCompleted", {
  id: Count,
  blocks: Schema.Array(Count).pipe(Schema.minItems(1), Schema.maxItems(MAX_RUN_BLOCKS)),
  matched: Schema.Array(Schema.Boolean),
  through: Count
})
export type RunCompleted = typeof RunCompleted.Type

/**
 * An online verify found that the receiver's version of `block` differs from the disk's
 * at a point where they must match: the block is to be sent again.
 */
export const DifferenceFound = Schema.TaggedStruct("DifferenceFound", { block: Count })
export type DifferenceFound = typeof DifferenceFound.Type

export const Input = Schema.Union(
  WriteCompleted,
  AckReceived,
  LinkFailed,
  GapReceived,
  LinkReestablished,
  PumpTick,
  ComparisonCompleted,
  RunCompleted,
  DifferenceFound
)
export type Input = typeof Input.Type

export const writeCompleted = (offset: number, length: number): Input => ({
  _tag: "WriteCompleted",
  offset,
  length
})
export const ackReceived = (seq: number): Input => ({ _tag: "AckReceived", seq })
export const linkFailed = (reason: string): Input => ({ _tag: "LinkFailed", reason })
export const gapReceived = (expected: number): Input => ({ _tag: "GapReceived", expected })
export const linkReestablished = (receiverSeq: number): Input => ({ _tag: "LinkReestablished", receiverSeq })
export const pumpTick = (budget: number, compareFrom?: number, compareRun?: number): Input =>
  compareFrom === undefined
    ? { _tag: "PumpTick", budget }
    : compareRun === undefined
      ? { _tag: "PumpTick", budget, compareFrom }
      : { _tag: "PumpTick", budget, compareFrom, compareRun }
export const comparisonCompleted = (id: number, block: number, matched: boolean, through: number): Input => ({
  _tag: "ComparisonCompleted",
  id,
  block,
  matched,
  through
})
export const runCompleted = (
  id: number,
  blocks: ReadonlyArray<number>,
  matched: ReadonlyArray<boolean>,
  through: number
): Input => ({ _tag: "RunCompleted", id, blocks, matched, through })
export const differenceFound = (block: number): Input => ({ _tag: "DifferenceFound", block })

/**
 * The filter's state (design §3): immutable; every change is `evolve(state, event)`.
 */
import { Schema } from "effect"
import * as Bitmap from "./Bitmap.js"
import { Config } from "./Config.js"
import { Count, isCount, ResyncReason } from "./Event.js"
import { Flight, type FlightRecord } from "./Flight.js"
import { type Comparison, Comparisons } from "./Comparisons.js"

export { type Comparison, Comparisons } from "./Comparisons.js"

export type Mode = "sync" | "resync"

export type Link = "up" | "down"

export interface State {
  readonly config: Config
  readonly mode: Mode
  readonly link: Link
  /** Count of resync activations. */
  readonly epoch: number
  /** Seq of the next record sent. */
  readonly nextSeq: number
  /** Every record with `seq <= watermark` is acked. */
  readonly watermark: number
  /**
   * The filter relies on the receiver holding every record through this seq: the
   * watermark, or 0 after a receiver rollback (everything is sent again).
   */
  readonly relied: number
  /** Records sent and not acked that are still assumed to be on their way. */
  readonly flight: Flight
  /** The passive bitmap: writes tracked since the current pass began (obligations). */
  readonly dirty: Bitmap.Bitmap
  /** The active bitmap: blocks of the current pass not yet sent (obligations). */
  readonly draining: Bitmap.Bitmap
  /** Where the drain looks next in the active bitmap. */
  readonly cursor: number
  /** Whether the resync-begin marker was sent since resync was (re)entered or the link came back. */
  readonly markerSent: boolean
  /** A `ResyncActivated` the next event must be (forced by a loss in sync mode or a receiver rollback). */
  readonly owed: ResyncReason | null
  /**
   * Comparisons decided whose outcome has not arrived, in id order. Their blocks count
   * as covered (like blocks of unacked records) until the outcome settles them.
   */
  readonly comparing: Comparisons
  /** Comparisons decided so far: the next one's id. */
  readonly compared: number
}

export const make = (fields: State): State => ({
  config: fields.config,
  mode: fields.mode,
  link: fields.link,
  epoch: fields.epoch,
  nextSeq: fields.nextSeq,
  watermark: fields.watermark,
  relied: fields.relied,
  flight: fields.flight,
  dirty: fields.dirty,
  draining: fields.draining,
  cursor: fields.cursor,
  markerSent: fields.markerSent,
  owed: fields.owed,
  comparing: fields.comparing,
  compared: fields.compared
})

export const noComparisons: Comparisons = Comparisons.none

/** Design §5 "Legality rules": the initial state for a configuration. */
export const initial = (config: Config): State =>
  make({
    config,
    mode: config.initial === "in-sync" ? "sync" : "resync",
    link: "up",
    epoch: config.initial === "in-sync" ? 0 : 1,
    nextSeq: 1,
    watermark: 0,
    relied: 0,
    flight: Flight.empty(1),
    dirty: config.initial === "in-sync" ? Bitmap.empty(config.blockCount) : Bitmap.full(config.blockCount),
    draining: Bitmap.empty(config.blockCount),
    cursor: 0,
    markerSent: false,
    owed: null,
    comparing: noComparisons,
    compared: 0
  })

/** The obligations: blocks the receiver may lack that no unacked record will deliver. */
export const obligationCount = (state: State): number =>
  state.draining.count === 0
    ? state.dirty.count
    : state.dirty.count === 0
      ? state.draining.count
      : Bitmap.union(state.dirty, state.draining).count

export const hasObligations = (state: State): boolean => state.dirty.count > 0 || state.draining.count > 0

export const isObligation = (state: State, block: number): boolean =>
  Bitmap.has(state.dirty, block) || Bitmap.has(state.draining, block)

/** In sync, link up, nothing in flight: the replica equals the disk. */
export const isQuiescent = (state: State): boolean =>
  state.mode === "sync" &&
  state.link === "up" &&
  state.flight.size === 0 &&
  state.owed === null &&
  state.comparing.length === 0

/** The pending comparison `id`, if any. */
export const comparisonAt = (state: State, id: number): Comparison | undefined => state.comparing.find(id)

// ---------------------------------------------------------------------------
// Snapshots: a JSON-able encoding, so a journal can start from one.

const Runs = Schema.Array(Schema.Tuple(Count, Count))

const FlightRecordSchema = Schema.Union(
  Schema.Struct({ kind: Schema.Literal("write"), first: Count, last: Count, bytes: Count }),
  Schema.Struct({ kind: Schema.Literal("block"), block: Count }),
  Schema.Struct({ kind: Schema.Literal("marker") })
)

const fieldsV1 = {
  version: Schema.Literal(1),
  config: Config,
  mode: Schema.Literal("sync", "resync"),
  link: Schema.Literal("up", "down"),
  epoch: Count,
  nextSeq: Count,
  watermark: Count,
  relied: Count,
  flightFirstSeq: Count,
  flight: Schema.Array(FlightRecordSchema),
  dirty: Runs,
  draining: Runs,
  cursor: Count,
  markerSent: Schema.Boolean,
  owed: Schema.NullOr(ResyncReason)
}

/**
 * Version 2 holds comparisons (checksum-based resync): those waiting as `[id, block,
 * after]`, and the count decided. A state that never compared is written as version 1,
 * byte for byte as before, so journals that never compare do not change.
 */
export const Snapshot = Schema.Union(
  Schema.Struct(fieldsV1),
  Schema.Struct({
    ...fieldsV1,
    version: Schema.Literal(2),
    comparing: Schema.Array(Schema.Tuple(Count, Count, Count)),
    compared: Count
  })
)
export type Snapshot = typeof Snapshot.Type

/** The version 1 fields. */
const toSnapshotV1 = (state: State) => ({
  version: 1 as const,
  // Fixed key order: snapshots of equal states are equal as JSON text.
  config: {
    blockSize: state.config.blockSize,
    blockCount: state.config.blockCount,
    window: state.config.window,
    congestionLimit: state.config.congestionLimit,
    initial: state.config.initial
  },
  mode: state.mode,
  link: state.link,
  epoch: state.epoch,
  nextSeq: state.nextSeq,
  watermark: state.watermark,
  relied: state.relied,
  flightFirstSeq: state.flight.firstSeq,
  flight: state.flight.toArray(),
  dirty: Bitmap.runs(state.dirty),
  draining: Bitmap.runs(state.draining),
  cursor: state.cursor,
  markerSent: state.markerSent,
  owed: state.owed
})

export const toSnapshot = (state: State): Snapshot => {
  const v1 = toSnapshotV1(state)
  if (state.compared === 0) return v1 as Snapshot & { readonly version: 1 }
  return {
    ...v1,
    version: 2,
    comparing: state.comparing.map((c) => [c.id, c.block, c.after] as const),
    compared: state.compared
  }
}

export const fromSnapshot = (snapshot: Snapshot): State =>
  make({
    config: snapshot.config,
    mode: snapshot.mode,
    link: snapshot.link,
    epoch: snapshot.epoch,
    nextSeq: snapshot.nextSeq,
    watermark: snapshot.watermark,
    relied: snapshot.relied,
    flight: Flight.fromArray(snapshot.flightFirstSeq, snapshot.flight as ReadonlyArray<FlightRecord>),
    dirty: Bitmap.fromRuns(snapshot.config.blockCount, snapshot.dirty),
    draining: Bitmap.fromRuns(snapshot.config.blockCount, snapshot.draining),
    cursor: snapshot.cursor,
    markerSent: snapshot.markerSent,
    owed: snapshot.owed,
    comparing:
      snapshot.version === 1 || snapshot.comparing.length === 0
        ? noComparisons
        : Comparisons.fromArray(snapshot.comparing.map(([id, block, after]) => ({ id, block, after }))),
    compared: snapshot.version === 1 ? 0 : snapshot.compared
  })

const isConfig = Schema.is(Config)
const isResyncReason = Schema.is(ResyncReason)

/** `value` is an object with exactly `keys` as its own keys. */
const hasExactly = (value: unknown, keys: number): value is Record<string, unknown> => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false
  let n = 0
  for (const key in value) if (Object.hasOwn(value, key)) n++
  return n === keys
}

const isFlightRecord = (r: unknown): boolean => {
  if (typeof r !== "object" || r === null) return false
  switch ((r as { readonly kind?: unknown }).kind) {
    case "write":
      return hasExactly(r, 4) && isCount(r.first) && isCount(r.last) && isCount(r.bytes)
    case "block":
      return hasExactly(r, 2) && isCount(r.block)
    case "marker":
      return hasExactly(r, 1)
    default:
      return false
  }
}

const isRuns = (runs: unknown): boolean =>
  Array.isArray(runs) &&
  runs.every((run) => Array.isArray(run) && run.length === 2 && isCount(run[0]) && isCount(run[1]))

const SNAPSHOT_KEYS = 15

const isComparisons = (triples: unknown): boolean =>
  Array.isArray(triples) &&
  triples.every((t) => Array.isArray(t) && t.length === 3 && isCount(t[0]) && isCount(t[1]) && isCount(t[2]))

/**
 * Whether `snapshot` is what the `Snapshot` schema accepts, with no key it would drop:
 * then its JSON decodes back to an equal snapshot, and a journal can skip the Schema
 * pass (tens of milliseconds with thousands of records in flight). Yes or no only; the
 * schema explains a no.
 */
export const isWellFormedSnapshot = (snapshot: Snapshot): boolean => {
  const s: unknown = snapshot
  const version = (s as { readonly version?: unknown }).version
  if (version !== 1 && version !== 2) return false
  return (
    hasExactly(s, version === 1 ? SNAPSHOT_KEYS : SNAPSHOT_KEYS + 2) &&
    (version === 1 || (isComparisons(s.comparing) && isCount(s.compared))) &&
    hasExactly(s.config, 5) &&
    isConfig(s.config) &&
    (s.mode === "sync" || s.mode === "resync") &&
    (s.link === "up" || s.link === "down") &&
    isCount(s.epoch) &&
    isCount(s.nextSeq) &&
    isCount(s.watermark) &&
    isCount(s.relied) &&
    isCount(s.flightFirstSeq) &&
    Array.isArray(s.flight) &&
    s.flight.every(isFlightRecord) &&
    isRuns(s.dirty) &&
    isRuns(s.draining) &&
    isCount(s.cursor) &&
    typeof s.markerSent === "boolean" &&
    (s.owed === null || isResyncReason(s.owed))
  )
}

/** Structural equality of two states (for replay checks). */
export const equals = (a: State, b: State): boolean =>
  JSON.stringify(toSnapshot(a)) === JSON.stringify(toSnapshot(b))

/**
 * The filter as a decider (design §3): `initialState`, `decide`, `evolve`.
 *
 * `evolve` keeps the *least* obligation set a correct filter must honour, so the
 * same fold serves the legality checker for other implementations (Legality.ts).
 *
 * Over 600 lines on purpose: `evolve` of every event and `decide` of every input read
 * one state and its rules side by side (a rule split across files is one read wrong);
 * the rejections (the first 90 lines) are the seam to split next.
 */
import { Data, Either } from "effect"
import * as Bitmap from "./Bitmap.js"
import type { Config } from "./Config.js"
import type * as Event from "./Event.js"
import { Flight, blockRecord, markerRecord, writeRecord } from "./Flight.js"
import * as Geometry from "./Geometry.js"
import type { Input } from "./Input.js"
import * as State from "./State.js"

// ---------------------------------------------------------------------------
// Rejections: inputs the filter refuses, as values.

export class AckBeyondSent extends Data.TaggedError("AckBeyondSent")<{
  readonly seq: number
  readonly nextSeq: number
}> {
  override get message() {
    return `ack for seq ${this.seq}, but the last record sent is ${this.nextSeq - 1}`
  }
}

export class GapOutOfRange extends Data.TaggedError("GapOutOfRange")<{
  readonly expected: number
  readonly watermark: number
  readonly nextSeq: number
}> {
  override get message() {
    return `gap report expects seq ${this.expected}, outside the unacked range (${this.watermark}, ${this.nextSeq})`
  }
}

export class ReceiverAhead extends Data.TaggedError("ReceiverAhead")<{
  readonly receiverSeq: number
  readonly nextSeq: number
}> {
  override get message() {
    return `receiver claims durable seq ${this.receiverSeq}, but the last record sent is ${this.nextSeq - 1}`
  }
}

export class LinkAlreadyUp extends Data.TaggedError("LinkAlreadyUp")<{}> {
  override get message() {
    return "link reestablished while it is up"
  }
}

export class ComparisonBeyondDecided extends Data.TaggedError("ComparisonBeyondDecided")<{
  readonly id: number
  readonly compared: number
}> {
  override get message() {
    return `outcome of comparison ${this.id}, but only ${this.compared} comparison(s) were decided`
  }
}

export class ComparisonWrongBlock extends Data.TaggedError("ComparisonWrongBlock")<{
  readonly id: number
  readonly block: number
  readonly compared: number
}> {
  override get message() {
    return `outcome of comparison ${this.id} names block ${this.block}, but that comparison is of block ${this.compared}`
  }
}

export type Rejection =
  | Geometry.InvalidRange
  | AckBeyondSent
  | GapOutOfRange
  | ReceiverAhead
  | LinkAlreadyUp
  | ComparisonBeyondDecided
  | ComparisonWrongBlock

// ---------------------------------------------------------------------------
// evolve

/** `onto` with the blocks of every record in `flight` set. */
export const markFlight = (flight: Flight, onto: Bitmap.Bitmap): Bitmap.Bitmap => {
  if (flight.size === 0) return onto
  return Bitmap.mutate(onto, (m) => {
    flight.forEach((r) => {
      if (r.kind === "write") m.setRange(r.first, r.last)
      else if (r.kind === "block") m.set(r.block)
    })
  })
}

/**
 * The blocks the model counts as covered although they are not obligations: those of
 * unacked records and of comparisons still waiting for their outcome. Every block whose replica may differ from the disk is an obligation or here.
 */
export const covered = (state: State.State): Bitmap.Bitmap => {
  const flight = markFlight(state.flight, Bitmap.empty(state.config.blockCount))
  if (state.comparing.length === 0) return flight
  return Bitmap.mutate(flight, (m) => {
    for (const c of state.comparing) m.set(c.block)
  })
}

/**
 * The blocks of every record in flight and of every comparison without an outcome,
 * added to `dirty`: they are assumed lost (a match on a dead link proves nothing).
 */
const remarkFlight = (state: State.State): Bitmap.Bitmap => {
  const dirty = markFlight(state.flight, state.dirty)
  if (state.comparing.length === 0) return dirty
  return Bitmap.mutate(dirty, (m) => {
    for (const c of state.comparing) m.set(c.block)
  })
}

const withoutComparison = (state: State.State, id: number): State.Comparisons => state.comparing.without(id)

const geometryOf = (state: State.State): Geometry.Geometry => state.config

export const evolve = (state: State.State, event: Event.Event): State.State => {
  switch (event.type) {
    case "WriteStreamed": {
      const g = geometryOf(state)
      return State.make({
        ...state,
        nextSeq: event.seq + 1,
        flight: state.flight.push(
          writeRecord(
            Geometry.firstBlock(g, event.offset),
            Geometry.lastBlock(g, event.offset, event.length),
            event.length
          )
        )
      })
    }
    case "WriteTracked": {
      const g = geometryOf(state)
      const first = Geometry.firstBlock(g, event.offset)
      const last = Geometry.lastBlock(g, event.offset, event.length)
      const dirty =
        first === last ? Bitmap.set(state.dirty, first) : Bitmap.setRange(state.dirty, first, last)
      return dirty === state.dirty ? state : State.make({ ...state, dirty })
    }
    case "Acked":
      return State.make({
        ...state,
        watermark: event.seq,
        relied: event.seq,
        flight: state.flight.ackThrough(event.seq)
      })
    case "LinkLost":
      return State.make({
        ...state,
        link: "down",
        dirty: remarkFlight(state),
        flight: Flight.empty(state.nextSeq),
        markerSent: false,
        owed: state.mode === "sync" ? "interruption" : state.owed,
        comparing: State.noComparisons
      })
    case "DiscontinuityReported":
      return State.make({
        ...state,
        dirty: remarkFlight(state),
        flight: Flight.empty(state.nextSeq),
        markerSent: false,
        owed: state.mode === "sync" ? "discontinuity" : state.owed,
        comparing: State.noComparisons
      })
    case "ResyncActivated": {
      const rollback = event.reason === "receiver-rollback"
      return State.make({
        ...state,
        mode: "resync",
        epoch: event.epoch,
        relied: rollback ? 0 : state.relied,
        dirty: rollback ? Bitmap.full(state.config.blockCount) : state.dirty,
        draining: rollback ? Bitmap.empty(state.config.blockCount) : state.draining,
        cursor: rollback ? 0 : state.cursor,
        markerSent: false,
        owed: null,
        comparing: rollback ? State.noComparisons : state.comparing
      })
    }
    case "LinkRestored":
      return State.make({
        ...state,
        link: "up",
        markerSent: false,
        owed: event.receiverSeq < state.watermark ? "receiver-rollback" : state.owed
      })
    case "ResyncBegun":
      return State.make({
        ...state,
        nextSeq: event.seq + 1,
        flight: state.flight.push(markerRecord),
        markerSent: true
      })
    case "PassStarted":
      return State.make({
        ...state,
        dirty: Bitmap.empty(state.config.blockCount),
        draining: state.draining.count === 0 ? state.dirty : Bitmap.union(state.draining, state.dirty),
        cursor: 0
      })
    case "BlockSent":
      // Cleared when the send is decided, before the read: a write completing later marks it again.
      return State.make({
        ...state,
        nextSeq: event.seq + 1,
        flight: state.flight.push(blockRecord(event.block)),
        dirty: Bitmap.clear(state.dirty, event.block),
        draining: Bitmap.clear(state.draining, event.block),
        cursor: event.block + 1
      })
    case "SyncActivated":
      return State.make({
        ...state,
        mode: "sync",
        nextSeq: event.seq + 1,
        flight: state.flight.push(markerRecord)
      })
    case "BlockCompared":
      // Cleared as for BlockSent: the disk's block is read after this, and a later write marks it again.
      return State.make({
        ...state,
        dirty: Bitmap.clear(state.dirty, event.block),
        draining: Bitmap.clear(state.draining, event.block),
        cursor: event.block + 1,
        comparing: state.comparing.push({ id: event.id, block: event.block, after: state.nextSeq - 1 }),
        compared: event.id + 1
      })
    case "BlockMatched":
      // Proven without a data record: the receiver durably holds what the disk held when read.
      return State.make({ ...state, comparing: withoutComparison(state, event.id) })
    case "BlockMismatched":
      return State.make({
        ...state,
        dirty: Bitmap.set(state.dirty, event.block),
        comparing: withoutComparison(state, event.id)
      })
    case "BlockDiffered":
      return State.make({ ...state, dirty: Bitmap.set(state.dirty, event.block) })
    case "RunCompared": {
      // As BlockCompared for each block, folded at once: one edit of each bitmap.
      const { blocks, id } = event
      const after = state.nextSeq - 1
      const clear = (m: Bitmap.MutableBitmap) => {
        for (const b of blocks) m.clear(b)
      }
      return State.make({
        ...state,
        dirty: state.dirty.count === 0 ? state.dirty : Bitmap.mutate(state.dirty, clear),
        draining: state.draining.count === 0 ? state.draining : Bitmap.mutate(state.draining, clear),
        cursor: blocks[blocks.length - 1]! + 1,
        comparing: state.comparing.pushAll(blocks.map((block, k) => ({ id: id + k, block, after }))),
        compared: id + blocks.length
      })
    }
    case "RunMatched":
      // As BlockMatched for each one not excepted: the marks of later writes stay.
      return State.make({
        ...state,
        comparing: state.comparing.withoutRun(event.id, event.count, event.except)
      })
  }
}

/**
 * Folds a batch of events. Equivalent to `events.reduce(evolve, state)`, but runs of
 * `WriteTracked` mark a private transient bitmap that is frozen once.
 */
export const evolveAll = (state: State.State, events: Iterable<Event.Event>): State.State => {
  let mutable: Bitmap.MutableBitmap | undefined
  const g = geometryOf(state)
  for (const event of events) {
    if (event.type === "WriteTracked") {
      if (mutable === undefined) mutable = Bitmap.beginMutation(state.dirty)
      mutable.setRange(
        Geometry.firstBlock(g, event.offset),
        Geometry.lastBlock(g, event.offset, event.length)
      )
      continue
    }
    if (mutable !== undefined) {
      state = State.make({ ...state, dirty: Bitmap.endMutation(mutable) })
      mutable = undefined
    }
    state = evolve(state, event)
  }
  if (mutable !== undefined) {
    const dirty = Bitmap.endMutation(mutable)
    if (dirty !== state.dirty) state = State.make({ ...state, dirty })
  }
  return state
}

/**
 * What a resync-begin marker tells the receiver: it must hold every record through
 * this seq, and everything after it up to the marker is superseded. Records still in
 * flight (a congestion pull-ahead keeps them) must arrive, so then nothing is skipped.
 */
export const markerBase = (state: State.State): number =>
  state.flight.size > 0 ? state.nextSeq - 1 : state.relied

// ---------------------------------------------------------------------------
// decide

const none: ReadonlyArray<Event.Event> = []

/**
 * The resync-complete rule (design §3): nothing dirty, nothing left in the pass, no block
 * record unacked; and no comparison without its outcome.
 */
export const canResumeSync = (state: State.State): boolean =>
  state.mode === "resync" &&
  state.link === "up" &&
  state.markerSent &&
  state.owed === null &&
  !State.hasObligations(state) &&
  state.flight.blockRecords === 0 &&
  state.comparing.length === 0

const syncActivated = (state: State.State): Event.Event => ({
  type: "SyncActivated",
  epoch: state.epoch,
  seq: state.nextSeq
})

/**
 * A decision with the states it folded through: what `decideFolded` hands back, so a
 * caller that keeps the state (the replicator's decision loop) folds no event again.
 */
export interface Folded {
  readonly events: ReadonlyArray<Event.Event>
  /** `before[i]` is the state `events[i]` was decided against and folded onto. */
  readonly before: ReadonlyArray<State.State>
  /** The state after every event: `evolveAll(state, events)`. */
  readonly state: State.State
}

/** Decides and folds as it goes, so each event is decided against the state it will meet. */
class Batch implements Folded {
  readonly events: Array<Event.Event> = []
  readonly before: Array<State.State> = []
  constructor(public state: State.State) {}
  emit(event: Event.Event): void {
    this.events.push(event)
    this.before.push(this.state)
    this.state = evolve(this.state, event)
  }
}

const decideWrite = (
  state: State.State,
  offset: number,
  length: number
): Either.Either<ReadonlyArray<Event.Event>, Rejection> => {
  const invalid = Geometry.validateRange(state.config, offset, length)
  if (invalid !== undefined) return Either.left(invalid)
  if (state.mode === "resync") return Either.right([{ type: "WriteTracked", offset, length }])
  // Sync mode implies link up: a loss in sync always activates resync at once.
  if (state.flight.liveBytes + length > state.config.congestionLimit) {
    // Pull-ahead (DRBD's Ahead/Behind): records already in flight stay in flight.
    return Either.right([
      { type: "ResyncActivated", epoch: state.epoch + 1, reason: "congestion" },
      { type: "WriteTracked", offset, length }
    ])
  }
  return Either.right([{ type: "WriteStreamed", seq: state.nextSeq, offset, length }])
}

/**
 * Drains the active bitmap, swapping in the passive one when it empties. With
 * `compareFrom`, while at least that many blocks are owed, a block is compared
 * instead of sent. The window bounds block records in flight plus comparisons
 * waiting for their outcome (a mismatch turns one into the other).
 */
const pump = (
  batch: Batch,
  budget: number,
  compareFrom: number | undefined,
  compareRun: number | undefined
): void => {
  let state = batch.state
  if (state.mode !== "resync" || state.link === "down" || state.owed !== null) return
  if (!state.markerSent) {
    batch.emit({ type: "ResyncBegun", epoch: state.epoch, seq: state.nextSeq })
    state = batch.state
  }
  let room = Math.min(budget, state.config.window - state.flight.blockRecords - state.comparing.length)
  // Counted once (a union is not free), then down by one per block decided.
  let owed = compareFrom === undefined || room <= 0 ? 0 : State.obligationCount(state)
  // With `compareRun`: the blocks of the run being gathered (not folded yet), strictly increasing.
  const run: Array<number> = []
  const flush = () => {
    if (run.length === 0) return
    batch.emit({ type: "RunCompared", id: state.compared, blocks: run.splice(0) })
    state = batch.state
  }
  while (room > 0) {
    if (state.draining.count - run.length === 0) {
      flush()
      if (state.dirty.count === 0) break
      batch.emit({ type: "PassStarted", epoch: state.epoch, blocks: state.dirty.count })
      state = batch.state
    }
    let block = Bitmap.findNext(state.draining, run.length > 0 ? run[run.length - 1]! + 1 : state.cursor)
    if (block < 0) {
      // Wrapped: a run's blocks count up, so it ends here.
      flush()
      block = Bitmap.findNext(state.draining, 0)
    }
    if (compareFrom !== undefined && owed >= compareFrom) {
      if (compareRun === undefined) batch.emit({ type: "BlockCompared", id: state.compared, block })
      else {
        run.push(block)
        if (run.length >= compareRun) flush()
      }
    } else {
      flush()
      batch.emit({ type: "BlockSent", seq: state.nextSeq, block })
    }
    owed--
    state = batch.state
    room--
  }
  flush()
  if (canResumeSync(state)) batch.emit(syncActivated(state))
}

/**
 * A comparison's outcome. The reply's `through` is an ack (the receiver acked it first).
 * A match proves the block only if the receiver's answer covered every record sent before
 * the request (`through` reaches the comparison's `after`: not so if one was lost on the
 * way); otherwise, or on a mismatch, the block is owed again and sent at once, in the
 * comparison's window slot, so a block that differs is never compared again in a loop.
 */
const compared = (
  batch: Batch,
  input: Extract<Input, { readonly _tag: "ComparisonCompleted" }>
): Rejection | undefined => {
  const state = batch.state
  if (state.link === "down") return undefined // from a dead connection: the comparison was re-marked
  if (input.id >= state.compared)
    return new ComparisonBeyondDecided({ id: input.id, compared: state.compared })
  const pending = State.comparisonAt(state, input.id)
  if (pending === undefined) return undefined // stale: re-marked by a gap, or already answered
  if (pending.block !== input.block)
    return new ComparisonWrongBlock({ id: input.id, block: input.block, compared: pending.block })
  if (input.through >= state.nextSeq) return new AckBeyondSent({ seq: input.through, nextSeq: state.nextSeq })
  if (input.through > state.watermark) batch.emit({ type: "Acked", seq: input.through })
  if (input.matched && input.through >= pending.after)
    batch.emit({ type: "BlockMatched", id: input.id, block: input.block })
  else {
    batch.emit({ type: "BlockMismatched", id: input.id, block: input.block })
    // A pending comparison implies resync, link up and the marker sent (a loss or gap clears them all).
    batch.emit({ type: "BlockSent", seq: batch.state.nextSeq, block: input.block })
  }
  if (canResumeSync(batch.state)) batch.emit(syncActivated(batch.state))
  return undefined
}

/**
 * A run's outcomes, as `compared` for each of its comparisons: one `RunMatched` for those
 * matched and believed (`through` reaches their `after`), then, for each other one still
 * waiting, `BlockMismatched` and its `BlockSent`. A run none of whose comparisons waits is
 * stale (its comparisons were re-marked by a loss or gap).
 */
const runCompared = (
  batch: Batch,
  input: Extract<Input, { readonly _tag: "RunCompleted" }>
): Rejection | undefined => {
  const state = batch.state
  if (state.link === "down") return undefined
  const { id, blocks, matched, through } = input
  const n = blocks.length
  if (id + n > state.compared)
    return new ComparisonBeyondDecided({ id: id + n - 1, compared: state.compared })
  const pending = state.comparing.run(id, n)
  if (pending.every((c) => c === undefined)) return undefined
  for (let k = 0; k < n; k++) {
    const c = pending[k]
    if (c !== undefined && c.block !== blocks[k])
      return new ComparisonWrongBlock({ id: id + k, block: blocks[k]!, compared: c.block })
  }
  if (through >= state.nextSeq) return new AckBeyondSent({ seq: through, nextSeq: state.nextSeq })
  if (through > state.watermark) batch.emit({ type: "Acked", seq: through })
  const except: Array<number> = []
  for (let k = 0; k < n; k++) {
    const c = pending[k]
    if (c === undefined || matched[k] !== true || through < c.after) except.push(id + k)
  }
  if (except.length < n) batch.emit({ type: "RunMatched", id, count: n, except })
  for (const x of except) {
    if (pending[x - id] === undefined) continue
    batch.emit({ type: "BlockMismatched", id: x, block: blocks[x - id]! })
    batch.emit({ type: "BlockSent", seq: batch.state.nextSeq, block: blocks[x - id]! })
  }
  if (canResumeSync(batch.state)) batch.emit(syncActivated(batch.state))
  return undefined
}

/** The inputs whose events are decided against the states they fold through, into `batch`. */
const decideFolding = (
  batch: Batch,
  input: Extract<
    Input,
    {
      readonly _tag: "AckReceived" | "LinkReestablished" | "PumpTick" | "ComparisonCompleted" | "RunCompleted"
    }
  >
): Rejection | undefined => {
  const state = batch.state
  switch (input._tag) {
    case "AckReceived": {
      if (state.link === "down") return undefined // from a dead connection: its records are re-marked
      if (input.seq >= state.nextSeq) return new AckBeyondSent({ seq: input.seq, nextSeq: state.nextSeq })
      if (input.seq <= state.watermark) return undefined // stale or duplicate
      batch.emit({ type: "Acked", seq: input.seq })
      if (canResumeSync(batch.state)) batch.emit(syncActivated(batch.state))
      return undefined
    }
    case "LinkReestablished": {
      if (state.link === "up") return new LinkAlreadyUp()
      if (input.receiverSeq >= state.nextSeq)
        return new ReceiverAhead({ receiverSeq: input.receiverSeq, nextSeq: state.nextSeq })
      batch.emit({ type: "LinkRestored", receiverSeq: input.receiverSeq })
      if (batch.state.owed === "receiver-rollback")
        batch.emit({ type: "ResyncActivated", epoch: state.epoch + 1, reason: "receiver-rollback" })
      return undefined
    }
    case "PumpTick":
      pump(batch, input.budget, input.compareFrom, input.compareRun)
      return undefined
    case "ComparisonCompleted":
      return compared(batch, input)
    case "RunCompleted":
      return runCompared(batch, input)
  }
}

export const decide = (
  state: State.State,
  input: Input
): Either.Either<ReadonlyArray<Event.Event>, Rejection> => {
  switch (input._tag) {
    case "WriteCompleted":
      return decideWrite(state, input.offset, input.length)
    case "LinkFailed": {
      if (state.link === "down") return Either.right(none)
      const lost: Event.Event = { type: "LinkLost", reason: input.reason }
      if (state.mode === "resync") return Either.right([lost])
      return Either.right([lost, { type: "ResyncActivated", epoch: state.epoch + 1, reason: "interruption" }])
    }
    case "GapReceived": {
      if (state.link === "down") return Either.right(none)
      if (input.expected <= state.watermark || input.expected >= state.nextSeq)
        return Either.left(
          new GapOutOfRange({ expected: input.expected, watermark: state.watermark, nextSeq: state.nextSeq })
        )
      const gap: Event.Event = { type: "DiscontinuityReported", expected: input.expected }
      if (state.mode === "resync") return Either.right([gap])
      return Either.right([gap, { type: "ResyncActivated", epoch: state.epoch + 1, reason: "discontinuity" }])
    }
    case "DifferenceFound": {
      const g = state.config
      const invalid = Geometry.validateRange(g, input.block * g.blockSize, g.blockSize)
      if (invalid !== undefined) return Either.left(invalid)
      if (State.isObligation(state, input.block)) return Either.right(none)
      const differed: Event.Event = { type: "BlockDiffered", block: input.block }
      if (state.mode === "resync") return Either.right([differed])
      // As a congestion pull-ahead: records in flight stay in flight.
      return Either.right([{ type: "ResyncActivated", epoch: state.epoch + 1, reason: "verify" }, differed])
    }
    default: {
      const batch = new Batch(state)
      const rejected = decideFolding(batch, input)
      if (rejected !== undefined) return Either.left(rejected)
      return Either.right(batch.events.length === 0 ? none : batch.events)
    }
  }
}

/**
 * `decide`, with the states its events fold through: the same events (or rejection),
 * each folded exactly once, so `state` equals `evolveAll(state, events)` and the caller
 * need not fold them again.
 */
export const decideFolded = (state: State.State, input: Input): Either.Either<Folded, Rejection> => {
  const batch = new Batch(state)
  switch (input._tag) {
    case "AckReceived":
    case "LinkReestablished":
    case "PumpTick":
    case "ComparisonCompleted":
    case "RunCompleted": {
      const rejected = decideFolding(batch, input)
      return rejected === undefined ? Either.right(batch) : Either.left(rejected)
    }
    default:
      // Decided without folding: fold them here, once.
      return Either.map(decide(state, input), (events) => {
        for (const event of events) batch.emit(event)
        return batch
      })
  }
}

/** The decider, as one value (emmett / fmodel shape). */
export interface Decider<S, I, E, R> {
  readonly initialState: S
  readonly decide: (state: S, input: I) => Either.Either<ReadonlyArray<E>, R>
  readonly evolve: (state: S, event: E) => S
}

export const make = (config: Config): Decider<State.State, Input, Event.Event, Rejection> => ({
  initialState: State.initial(config),
  decide,
  evolve
})

export const initialState = State.initial

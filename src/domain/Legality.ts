/**
 * The legality rules of design §5: which events a correct filter may record next.
 * Used to check traces from other implementations, and to prove `decide` only
 * emits legal events. The model keeps the least obligation set, so redundant
 * sends are legal and missing ones are not.
 */
import { Data } from "effect"
import * as Bitmap from "./Bitmap.js"
import { evolve } from "./Decider.js"
import type * as Event from "./Event.js"
import * as Geometry from "./Geometry.js"
import * as State from "./State.js"

export type Rule =
  | "owed-resync"
  | "mode-not-sync"
  | "mode-not-resync"
  | "link-down"
  | "link-up"
  | "seq-not-next"
  | "range-invalid"
  | "ack-regress"
  | "ack-unsent"
  | "gap-out-of-range"
  | "epoch-not-next"
  | "epoch-not-current"
  | "receiver-ahead"
  | "marker-not-needed"
  | "marker-not-sent"
  | "block-invalid"
  | "obligations-left"
  | "block-record-unacked"
  | "owed-at-end"
  | "not-quiescent"
  // trace version 2: checksum-based resync (version 3's runs break the same rules)
  | "comparison-id-not-next"
  | "comparison-unknown"
  | "comparison-outstanding"
  | "comparison-unacked"

/** Why an event (or the end of a trace) is not allowed, with the model state that says so. */
export class Violation extends Data.TaggedError("Violation")<{
  readonly rule: Rule
  readonly reason: string
  readonly event: Event.Event | undefined
  readonly context: Readonly<Record<string, unknown>>
}> {
  override get message() {
    return `${this.rule}: ${this.reason}`
  }
}

/** A short picture of the model state that explains a violation. */
export const describeState = (state: State.State): Record<string, unknown> => {
  const unackedBlocks: Array<number> = []
  state.flight.forEach((r, seq) => {
    if (r.kind === "block" && unackedBlocks.length < 16) unackedBlocks.push(seq)
  })
  const sample: Array<number> = []
  for (
    let b = Bitmap.findNext(state.dirty, 0);
    b >= 0 && sample.length < 16;
    b = Bitmap.findNext(state.dirty, b + 1)
  )
    sample.push(b)
  for (
    let b = Bitmap.findNext(state.draining, 0);
    b >= 0 && sample.length < 32;
    b = Bitmap.findNext(state.draining, b + 1)
  )
    if (!sample.includes(b)) sample.push(b)
  const picture: Record<string, unknown> = {
    mode: state.mode,
    link: state.link,
    epoch: state.epoch,
    nextSeq: state.nextSeq,
    watermark: state.watermark,
    inFlight: state.flight.size,
    blockRecordsUnacked: state.flight.blockRecords,
    unackedBlockRecordSeqs: unackedBlocks,
    obligations: State.obligationCount(state),
    obligationSample: sample.sort((a, b) => a - b),
    markerSent: state.markerSent,
    owed: state.owed
  }
  // Only where comparisons happened (trace version 2): a version 1 picture is as it was.
  if (state.compared > 0) {
    picture.compared = state.compared
    picture.comparing = state.comparing.slice(0, 16).map((c) => [c.id, c.block, c.after])
  }
  return picture
}

const violation = (
  rule: Rule,
  reason: string,
  event: Event.Event | undefined,
  state: State.State,
  extra: Record<string, unknown> = {}
) => new Violation({ rule, reason, event, context: { ...describeState(state), ...extra } })

const rangeProblem = (state: State.State, offset: number, length: number): string | undefined =>
  Geometry.validateRange(state.config, offset, length)?.message

// The checks below run once per event of a trace (millions per second): plain
// functions and early returns, no closures built per call.

const seqNotNext = (state: State.State, event: Event.Event, seq: number): Violation | undefined =>
  seq === state.nextSeq
    ? undefined
    : violation("seq-not-next", `seq ${seq} but the next record is ${state.nextSeq}`, event, state)

const linkDown = (state: State.State, event: Event.Event): Violation | undefined =>
  state.link === "up"
    ? undefined
    : violation("link-down", `${event.type} while the link is down`, event, state)

const notResync = (state: State.State, event: Event.Event): Violation | undefined =>
  state.mode === "resync"
    ? undefined
    : violation("mode-not-resync", `${event.type} while in sync mode`, event, state)

const epochNotCurrent = (state: State.State, event: Event.Event, epoch: number): Violation | undefined =>
  epoch === state.epoch
    ? undefined
    : violation("epoch-not-current", `epoch ${epoch} but the current epoch is ${state.epoch}`, event, state)

const rangeInvalid = (
  state: State.State,
  event: Event.Event,
  offset: number,
  length: number
): Violation | undefined => {
  const bad = rangeProblem(state, offset, length)
  return bad === undefined ? undefined : violation("range-invalid", bad, event, state)
}

const blockInvalid = (state: State.State, event: Event.Event, block: number): Violation | undefined =>
  Geometry.isBlock(state.config, block)
    ? undefined
    : violation(
        "block-invalid",
        `block ${block} is not on a disk of ${state.config.blockCount} blocks`,
        event,
        state
      )

/**
 * Deciding comparisons (a `BlockCompared` or a `RunCompared`): in a resync, the link up, after
 * the resync-begin marker, the first id the next to decide, the blocks on the disk (`last`:
 * the largest of them). `what` names them in the marker's message.
 */
const comparedIllegal = (
  state: State.State,
  event: Event.BlockCompared | Event.RunCompared,
  what: string,
  last: number
): Violation | undefined =>
  notResync(state, event) ??
  linkDown(state, event) ??
  (state.markerSent
    ? undefined
    : violation("marker-not-sent", `${what} before the resync-begin marker`, event, state)) ??
  (event.id === state.compared
    ? undefined
    : violation(
        "comparison-id-not-next",
        `comparison id ${event.id}, but ${state.compared} comparison(s) were decided (ids count up from 0)`,
        event,
        state
      )) ??
  blockInvalid(state, event, last)

/** An outcome must answer a comparison decided and not yet answered, of the same block. */
const comparisonUnknown = (
  state: State.State,
  event: Event.BlockMatched | Event.BlockMismatched
): Violation | undefined => {
  const pending = State.comparisonAt(state, event.id)
  if (pending === undefined)
    return violation(
      "comparison-unknown",
      `no comparison ${event.id} is waiting for its outcome (never decided, already answered, or re-marked by a loss or gap)`,
      event,
      state
    )
  if (pending.block !== event.block)
    return violation(
      "comparison-unknown",
      `comparison ${event.id} is of block ${pending.block}, not block ${event.block}`,
      event,
      state
    )
  // The receiver answers from durable records only, after acking them: a match ahead of that ack is believed too early.
  return event.type === "BlockMatched" && state.watermark < pending.after
    ? violation(
        "comparison-unacked",
        `comparison ${event.id} matched while record ${pending.after}, sent before it, is unacked (watermark ${state.watermark})`,
        event,
        state
      )
    : undefined
}

/** Each comparison a run's match covers (not excepted) must wait, and be acked as `BlockMatched`'s. */
const runUnknown = (state: State.State, event: Event.RunMatched): Violation | undefined => {
  const pending = state.comparing.run(event.id, event.count)
  let x = 0
  for (let k = 0; k < event.count; k++) {
    const id = event.id + k
    if (x < event.except.length && event.except[x] === id) {
      x++
      continue
    }
    const c = pending[k]
    if (c === undefined)
      return violation(
        "comparison-unknown",
        `no comparison ${id} is waiting for its outcome (never decided, already answered, or re-marked by a loss or gap)`,
        event,
        state
      )
    if (state.watermark < c.after)
      return violation(
        "comparison-unacked",
        `comparison ${id} matched while record ${c.after}, sent before it, is unacked (watermark ${state.watermark})`,
        event,
        state
      )
  }
  return undefined
}

/** `undefined` when `event` may follow `state`; otherwise the first rule it breaks. */
export const check = (state: State.State, event: Event.Event): Violation | undefined => {
  if (state.owed !== null && !(event.type === "ResyncActivated" && event.reason === state.owed))
    return violation(
      "owed-resync",
      `a ResyncActivated with reason "${state.owed}" must come next, not ${event.type}`,
      event,
      state
    )
  switch (event.type) {
    case "WriteStreamed":
      if (state.mode !== "sync")
        return violation("mode-not-sync", "a write was streamed live while in resync mode", event, state)
      return (
        linkDown(state, event) ??
        seqNotNext(state, event, event.seq) ??
        rangeInvalid(state, event, event.offset, event.length)
      )
    case "WriteTracked":
      if (state.mode !== "resync")
        return violation("mode-not-resync", "a write was only marked while in sync mode", event, state)
      return rangeInvalid(state, event, event.offset, event.length)
    case "Acked":
      return (
        linkDown(state, event) ??
        (event.seq < state.watermark
          ? violation(
              "ack-regress",
              `ack ${event.seq} is below the watermark ${state.watermark}`,
              event,
              state
            )
          : event.seq >= state.nextSeq
            ? violation(
                "ack-unsent",
                `ack ${event.seq} but the last record sent is ${state.nextSeq - 1}`,
                event,
                state
              )
            : undefined)
      )
    case "LinkLost":
      return state.link === "up"
        ? undefined
        : violation("link-down", "LinkLost while the link is already down", event, state)
    case "DiscontinuityReported":
      return (
        linkDown(state, event) ??
        (event.expected > state.watermark && event.expected < state.nextSeq
          ? undefined
          : violation(
              "gap-out-of-range",
              `expected ${event.expected} is outside the unacked range (${state.watermark}, ${state.nextSeq})`,
              event,
              state
            ))
      )
    case "ResyncActivated":
      return event.epoch === state.epoch + 1
        ? undefined
        : violation(
            "epoch-not-next",
            `epoch ${event.epoch} but the next epoch is ${state.epoch + 1}`,
            event,
            state
          )
    case "LinkRestored":
      if (state.link === "up") return violation("link-up", "LinkRestored while the link is up", event, state)
      return event.receiverSeq < state.nextSeq
        ? undefined
        : violation(
            "receiver-ahead",
            `receiver seq ${event.receiverSeq} but the last record sent is ${state.nextSeq - 1}`,
            event,
            state
          )
    case "ResyncBegun":
      return (
        notResync(state, event) ??
        linkDown(state, event) ??
        epochNotCurrent(state, event, event.epoch) ??
        seqNotNext(state, event, event.seq) ??
        (state.markerSent
          ? violation("marker-not-needed", "a resync-begin marker was already sent", event, state)
          : undefined)
      )
    case "PassStarted":
      return notResync(state, event)
    case "BlockSent":
      return (
        notResync(state, event) ??
        linkDown(state, event) ??
        (state.markerSent
          ? undefined
          : violation("marker-not-sent", "a block was sent before the resync-begin marker", event, state)) ??
        seqNotNext(state, event, event.seq) ??
        blockInvalid(state, event, event.block)
      )
    case "BlockCompared":
      return comparedIllegal(state, event, "a block was compared", event.block)
    case "BlockMatched":
    case "BlockMismatched":
      return linkDown(state, event) ?? comparisonUnknown(state, event)
    case "BlockDiffered":
      return notResync(state, event) ?? blockInvalid(state, event, event.block)
    case "RunCompared":
      // Strictly increasing (the format says so): the last is the largest.
      return comparedIllegal(state, event, "blocks were compared", event.blocks[event.blocks.length - 1]!)
    case "RunMatched":
      return linkDown(state, event) ?? runUnknown(state, event)
    case "SyncActivated":
      return (
        notResync(state, event) ??
        linkDown(state, event) ??
        (state.markerSent
          ? undefined
          : violation("marker-not-sent", "sync resumed without a resync-begin marker", event, state)) ??
        epochNotCurrent(state, event, event.epoch) ??
        seqNotNext(state, event, event.seq) ??
        (State.hasObligations(state)
          ? violation(
              "obligations-left",
              `sync resumed with ${State.obligationCount(state)} block(s) still owed`,
              event,
              state
            )
          : undefined) ??
        (state.flight.blockRecords > 0
          ? violation(
              "block-record-unacked",
              `sync resumed with ${state.flight.blockRecords} block record(s) unacked`,
              event,
              state
            )
          : undefined) ??
        (state.comparing.length > 0
          ? violation(
              "comparison-outstanding",
              `sync resumed with ${state.comparing.length} comparison(s) waiting for their outcome`,
              event,
              state
            )
          : undefined)
      )
  }
}

/** What a trace may not end with: an owed event, or (with `quiescent`) anything but a quiet sync. */
export const checkEnd = (
  state: State.State,
  options: { readonly quiescent: boolean }
): Violation | undefined => {
  if (state.owed !== null)
    return violation(
      "owed-at-end",
      `the trace ends while a ResyncActivated ("${state.owed}") is owed`,
      undefined,
      state
    )
  if (options.quiescent && !State.isQuiescent(state))
    return violation(
      "not-quiescent",
      "the trace must end in sync mode, link up, nothing in flight",
      undefined,
      state
    )
  return undefined
}

// ---------------------------------------------------------------------------
// A running check: fold events one at a time, stop at the first violation.

export interface Summary {
  readonly events: number
  readonly epochs: number
  readonly modeChanges: number
  readonly finalMode: State.Mode
  readonly finalLink: State.Link
}

export class Checker {
  state: State.State
  events = 0
  modeChanges = 0
  constructor(initial: State.State) {
    this.state = initial
  }
  /** Checks and folds one event; the violation if it is illegal (the state is then left as it was). */
  step(event: Event.Event): Violation | undefined {
    const bad = check(this.state, event)
    if (bad !== undefined) return bad
    const before = this.state.mode
    this.state = evolve(this.state, event)
    this.events++
    if (this.state.mode !== before) this.modeChanges++
    return undefined
  }
  end(options: { readonly quiescent: boolean }): Violation | undefined {
    return checkEnd(this.state, options)
  }
  summary(): Summary {
    return {
      events: this.events,
      epochs: this.state.epoch,
      modeChanges: this.modeChanges,
      finalMode: this.state.mode,
      finalLink: this.state.link
    }
  }
}

/** Checks a whole sequence of events from `initial`; the index of the first illegal one. */
export const checkAll = (
  initial: State.State,
  events: Iterable<Event.Event>,
  options: { readonly quiescent: boolean } = { quiescent: false }
): { readonly index: number; readonly violation: Violation } | undefined => {
  const checker = new Checker(initial)
  let index = 0
  for (const event of events) {
    const bad = checker.step(event)
    if (bad !== undefined) return { index, violation: bad }
    index++
  }
  const bad = checker.end(options)
  return bad === undefined ? undefined : { index, violation: bad }
}

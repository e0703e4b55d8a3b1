/**
 * A gallery of deliberately broken filters, written as a foreign implementation
 * would be: an object that is fed inputs and reports the events it recorded (the
 * conformance kit's `Implementation`). Each wraps the reference decider in a
 * mutable box and breaks exactly one rule; the kit and `cdp-sync check-trace`
 * must both catch every one (gallery.test.ts proves it).
 */
import { Either } from "effect"
import type { Implementation } from "../../src/conformance/index.js"
import * as Bitmap from "../../src/domain/Bitmap.js"
import type { Config } from "../../src/domain/Config.js"
import * as Decider from "../../src/domain/Decider.js"
import type * as Event from "../../src/domain/Event.js"
import { Flight } from "../../src/domain/Flight.js"
import type { Input } from "../../src/domain/Input.js"
import type { Rule } from "../../src/domain/Legality.js"
import * as State from "../../src/domain/State.js"

/** The filter's state, kept inside like any implementation's, plus whatever the bug needs. */
interface Box {
  state: State.State
  /** clear-on-read-completion: blocks sent whose read it assumes still running. */
  readonly reading: Set<number>
}

const start = (config: Config): Box => ({ state: Decider.initialState(config), reading: new Set() })

/** The reference behaviour: decide, fold, report (an input it refuses records nothing). */
const decideAndFold = (box: Box, input: Input): ReadonlyArray<Event.Event> => {
  const decided = Decider.decide(box.state, input)
  if (Either.isLeft(decided)) return []
  box.state = Decider.evolveAll(box.state, decided.right)
  return decided.right
}

/** Records `events` as its own decision: folds them into the box and reports them. */
const emit = (box: Box, events: ReadonlyArray<Event.Event>): ReadonlyArray<Event.Event> => {
  box.state = Decider.evolveAll(box.state, events)
  return events
}

export interface Broken extends Implementation<Box> {
  /** What it gets wrong, in a sentence. */
  readonly bug: string
  /** The legality rules `cdp-sync check-trace` may name on its trace (the first is the usual one). */
  readonly rules: ReadonlyArray<Rule>
}

/**
 * Believes a block stays dirty until its read completes. It has no read hook, so
 * it assumes the read is done by the next pump and clears the block's marks then:
 * a write that lands on the block between its send and that pump is forgotten.
 */
export const clearOnReadCompletion: Broken = {
  name: "clear-on-read-completion",
  bug: "clears a sent block's marks when it assumes the read completed (the next pump), forgetting writes that landed meanwhile",
  rules: ["obligations-left"],
  start,
  feed: (box, input) => {
    if (input._tag === "PumpTick" && box.reading.size > 0) {
      const s = box.state
      let dirty = s.dirty
      let draining = s.draining
      for (const b of box.reading) {
        dirty = Bitmap.clear(dirty, b)
        draining = Bitmap.clear(draining, b)
      }
      box.reading.clear()
      box.state = State.make({ ...s, dirty, draining })
    }
    const events = decideAndFold(box, input)
    for (const e of events) if (e.type === "BlockSent") box.reading.add(e.block)
    return events
  }
}

/** On link loss or a gap, forgets the records in flight instead of marking their blocks dirty. */
export const noRemarkOnLinkLoss: Broken = {
  name: "no-remark-on-link-loss",
  bug: "drops the unacked records on link loss or a gap without marking their blocks dirty",
  rules: ["obligations-left"],
  start,
  feed: (box, input) => {
    if ((input._tag === "LinkFailed" || input._tag === "GapReceived") && box.state.link === "up") {
      const decided = Decider.decide(box.state, input)
      if (Either.isLeft(decided)) return []
      box.state = State.make({ ...box.state, flight: Flight.empty(box.state.nextSeq) })
      return emit(box, decided.right)
    }
    return decideAndFold(box, input)
  }
}

/** Resumes sync as soon as nothing is dirty, while block records are still unacked. */
export const syncWithBlockUnacked: Broken = {
  name: "sync-with-block-unacked",
  bug: "resumes sync when nothing is dirty, without waiting for the block records' acks",
  rules: ["block-record-unacked"],
  start,
  feed: (box, input) => {
    const events = decideAndFold(box, input)
    const s = box.state
    if (
      s.mode === "resync" &&
      s.link === "up" &&
      s.markerSent &&
      s.owed === null &&
      !State.hasObligations(s) &&
      s.flight.blockRecords > 0
    )
      return [...events, ...emit(box, [{ type: "SyncActivated", epoch: s.epoch, seq: s.nextSeq }])]
    return events
  }
}

/** Streams a completed write live while in resync mode, once the drain has begun. */
export const streamDuringResync: Broken = {
  name: "stream-during-resync",
  bug: "streams writes live during a resync instead of marking them in the bitmap",
  rules: ["mode-not-sync"],
  start,
  feed: (box, input) => {
    const s = box.state
    if (input._tag === "WriteCompleted" && s.mode === "resync" && s.link === "up" && s.markerSent)
      return emit(box, [
        { type: "WriteStreamed", seq: s.nextSeq, offset: input.offset, length: input.length }
      ])
    return decideAndFold(box, input)
  }
}

/** Takes every ack at its word, so a stale one (after a reconnect) moves the watermark back. */
export const watermarkRegression: Broken = {
  name: "watermark-regression",
  bug: "records a stale ack below the watermark, moving the watermark backwards",
  rules: ["ack-regress"],
  start,
  feed: (box, input) => {
    const s = box.state
    if (input._tag === "AckReceived" && s.link === "up" && input.seq < s.watermark)
      return emit(box, [{ type: "Acked", seq: input.seq }])
    return decideAndFold(box, input)
  }
}

/** Ignores a receiver rollback: the link comes back and the drain carries on as if nothing was lost. */
export const skipRollbackResync: Broken = {
  name: "skip-rollback-resync",
  bug: "does not restart a full resync when the receiver comes back behind the watermark (it lost acked data)",
  // The next event breaks the owed resync; or the trace ends owing it (the world stops at the data loss).
  rules: ["owed-resync", "owed-at-end"],
  start,
  feed: (box, input) => {
    const s = box.state
    if (input._tag === "LinkReestablished" && s.link === "down" && input.receiverSeq < s.watermark) {
      box.state = State.make({ ...s, link: "up", markerSent: false })
      return [{ type: "LinkRestored", receiverSeq: input.receiverSeq }]
    }
    return decideAndFold(box, input)
  }
}

/** After a reconnect, carries on draining without a new resync-begin marker. */
export const blocksBeforeMarker: Broken = {
  name: "blocks-before-marker",
  bug: "keeps draining after a reconnect without sending a new resync-begin marker",
  rules: ["marker-not-sent"],
  start,
  feed: (box, input) => {
    const events = decideAndFold(box, input)
    if (input._tag === "LinkReestablished" && box.state.mode === "resync" && box.state.owed === null)
      box.state = State.make({ ...box.state, markerSent: true })
    return events
  }
}

/** Returns to sync once the active bitmap is drained and acked, forgetting the writes tracked meanwhile (the passive one). */
export const syncIgnoringPassive: Broken = {
  name: "sync-ignoring-passive",
  bug: "resumes sync when the active bitmap is drained and acked, ignoring writes tracked in the passive one",
  rules: ["obligations-left"],
  start,
  feed: (box, input) => {
    const events = decideAndFold(box, input)
    const s = box.state
    if (
      s.mode === "resync" &&
      s.link === "up" &&
      s.markerSent &&
      s.owed === null &&
      s.draining.count === 0 &&
      s.dirty.count > 0 &&
      s.flight.blockRecords === 0
    ) {
      const sync = emit(box, [{ type: "SyncActivated", epoch: s.epoch, seq: s.nextSeq }])
      // It believes it is clean: it only ever looked at the active bitmap.
      box.state = State.make({ ...box.state, dirty: Bitmap.empty(s.config.blockCount) })
      return [...events, ...sync]
    }
    return events
  }
}

export const gallery: ReadonlyArray<Broken> = [
  clearOnReadCompletion,
  noRemarkOnLinkLoss,
  syncWithBlockUnacked,
  streamDuringResync,
  watermarkRegression,
  skipRollbackResync,
  blocksBeforeMarker,
  syncIgnoringPassive
]

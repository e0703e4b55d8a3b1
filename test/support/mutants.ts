/**
 * Deliberately broken filters. Each breaks one rule of design §3; the property
 * suite must catch every one (test/properties/mutants.test.ts proves it does).
 */
import { Either } from "effect"
import * as Bitmap from "../../src/domain/Bitmap.js"
import * as Decider from "../../src/domain/Decider.js"
import type * as Event from "../../src/domain/Event.js"
import { Flight, blockRecord } from "../../src/domain/Flight.js"
import type { Filter } from "../../src/conformance/Simulation.js"
import { reference } from "../../src/conformance/Simulation.js"
import * as State from "../../src/domain/State.js"

const stateFilter = (name: string, overrides: Partial<Filter<State.State>>): Filter<State.State> => ({
  ...reference,
  name,
  ...overrides
})

/** Clears a block's dirty mark when its read completes, not when its send is decided. */
export const clearOnReadCompletion = stateFilter("clear-on-read-completion", {
  evolve: (state, event) =>
    event.type === "BlockSent"
      ? State.make({
          ...state,
          nextSeq: event.seq + 1,
          flight: state.flight.push(blockRecord(event.block)),
          // the active bit goes (so the pump moves on), the passive mark waits for the read
          draining: Bitmap.clear(state.draining, event.block),
          cursor: event.block + 1
        })
      : Decider.evolve(state, event),
  readCompleted: (state, block) => State.make({ ...state, dirty: Bitmap.clear(state.dirty, block) })
})

/** Forgets the records in flight on link loss or a gap instead of marking their blocks dirty. */
export const noRemarkOnLinkLoss = stateFilter("no-remark-on-link-loss", {
  evolve: (state, event) =>
    event.type === "LinkLost" || event.type === "DiscontinuityReported"
      ? Decider.evolve(State.make({ ...state, flight: Flight.empty(state.nextSeq) }), event)
      : Decider.evolve(state, event)
})

const foldAll = (state: State.State, events: ReadonlyArray<Event.Event>) =>
  events.reduce(Decider.evolve, state)

/** Resumes sync as soon as nothing is dirty, while block records are still unacked. */
export const syncWithBlockUnacked = stateFilter("sync-with-block-unacked", {
  decide: (state, input) =>
    Either.map(Decider.decide(state, input), (events) => {
      const after = foldAll(state, events)
      const early =
        after.mode === "resync" &&
        after.link === "up" &&
        after.markerSent &&
        after.owed === null &&
        !State.hasObligations(after) &&
        after.flight.blockRecords > 0
      return early
        ? [...events, { type: "SyncActivated" as const, epoch: after.epoch, seq: after.nextSeq }]
        : events
    })
})

/** Streams a completed write live while in resync mode (when the link is up). */
export const streamDuringResync = stateFilter("stream-during-resync", {
  decide: (state, input) =>
    input._tag === "WriteCompleted" && state.mode === "resync" && state.link === "up" && state.markerSent
      ? Either.right([
          { type: "WriteStreamed" as const, seq: state.nextSeq, offset: input.offset, length: input.length }
        ])
      : Decider.decide(state, input)
})

/** Takes every ack at its word, so a stale one moves the watermark backwards. */
export const watermarkRegression = stateFilter("watermark-regression", {
  decide: (state, input) =>
    input._tag === "AckReceived" && state.link === "up" && input.seq < state.watermark
      ? Either.right([{ type: "Acked" as const, seq: input.seq }])
      : Decider.decide(state, input)
})

/** Ignores a receiver rollback: the link comes back and the drain carries on as if nothing was lost. */
export const skipRollbackResync = stateFilter("skip-rollback-resync", {
  decide: (state, input) =>
    input._tag === "LinkReestablished" && state.link === "down" && input.receiverSeq < state.nextSeq
      ? Either.right([{ type: "LinkRestored" as const, receiverSeq: input.receiverSeq }])
      : Decider.decide(state, input),
  evolve: (state, event) =>
    event.type === "LinkRestored"
      ? State.make({ ...state, link: "up", markerSent: false })
      : Decider.evolve(state, event)
})

/**
 * Takes a mismatch for the end of the matter: the block leaves the comparison and is
 * neither owed again nor sent, so its difference stays on the replica.
 */
export const clearOnMismatch = stateFilter("clear-on-mismatch", {
  decide: (state, input) => {
    if (input._tag !== "ComparisonCompleted" || input.matched || state.link === "down")
      return Decider.decide(state, input)
    const pending = State.comparisonAt(state, input.id)
    if (pending === undefined || pending.block !== input.block) return Decider.decide(state, input)
    return Either.right([{ type: "BlockMismatched" as const, id: input.id, block: input.block }])
  },
  evolve: (state, event) =>
    event.type === "BlockMismatched"
      ? State.make({ ...state, comparing: state.comparing.filter((c) => c.id !== event.id) })
      : Decider.evolve(state, event)
})

/**
 * Believes a match for the block's content now: the match also clears the mark of a
 * write that completed after the comparison's read, which the match says nothing about.
 */
export const matchClearsLaterWrites = stateFilter("match-clears-later-writes", {
  evolve: (state, event) => {
    const next = Decider.evolve(state, event)
    return event.type === "BlockMatched"
      ? State.make({
          ...next,
          dirty: Bitmap.clear(next.dirty, event.block),
          draining: Bitmap.clear(next.draining, event.block)
        })
      : next
  }
})

// Trace version 3: the same breaks in the run form (one event per checksum request).

/**
 * `matchClearsLaterWrites` for runs: a `RunMatched` clears the marks of the run's matched
 * blocks, also those a write re-marked after the `RunCompared` (read later than the match proves).
 */
export const runMatchClearsLaterWrites = stateFilter("run-match-clears-later-writes", {
  evolve: (state, event) => {
    const next = Decider.evolve(state, event)
    if (event.type !== "RunMatched") return next
    const blocks = state.comparing
      .run(event.id, event.count)
      .flatMap((c) => (c === undefined || event.except.includes(c.id) ? [] : [c.block]))
    const clear = (m: Bitmap.MutableBitmap) => {
      for (const b of blocks) m.clear(b)
    }
    return State.make({
      ...next,
      dirty: Bitmap.mutate(next.dirty, clear),
      draining: Bitmap.mutate(next.draining, clear)
    })
  }
})

/** Reads a run's answer one block off: comparison `k`'s outcome is the next block's (a shifted bitmap). */
export const runMatchShifted = stateFilter("run-match-shifted", {
  decide: (state, input) =>
    input._tag === "RunCompleted"
      ? Decider.decide(state, {
          ...input,
          matched: input.matched.map((_, k) => input.matched[(k + 1) % input.matched.length]!)
        })
      : Decider.decide(state, input)
})

/** Says matched for every block of a run, those whose checksums differ too: their differences stay. */
export const runClearOnMismatch = stateFilter("run-clear-on-mismatch", {
  decide: (state, input) =>
    input._tag === "RunCompleted"
      ? Decider.decide(state, { ...input, matched: input.matched.map(() => true) })
      : Decider.decide(state, input)
})

export const all = [
  clearOnReadCompletion,
  noRemarkOnLinkLoss,
  syncWithBlockUnacked,
  streamDuringResync,
  watermarkRegression,
  skipRollbackResync
] as const

/**
 * The worked example of docs/conformance.md, verbatim but for the import paths: an
 * adapter around the reference decider passes the kit; an eager variant that
 * resumes sync before its block records are acked is caught and reported.
 */
import { Either } from "effect"
import { expect, it } from "vitest"
import * as Conformance from "../../src/conformance/index.js"
import { Decider, type Event, State } from "../../src/domain/index.js"

// --- from the docs ---------------------------------------------------------

/** The implementation's own state, behind a handle: here a box around the model's. */
interface Box {
  state: State.State
}

const mine: Conformance.Implementation<Box> = {
  name: "reference",
  start: (config) => ({ state: Decider.initialState(config) }),
  feed: (box, input) => {
    const decided = Decider.decide(box.state, input)
    if (Either.isLeft(decided)) return [] // an input it refuses (a stale gap report) records nothing
    box.state = Decider.evolveAll(box.state, decided.right)
    return decided.right
  }
}

/** A bug: resumes sync as soon as nothing is dirty, without waiting for the block records' acks. */
const eager: Conformance.Implementation<Box> = {
  name: "eager-sync",
  start: mine.start,
  feed: (box, input) => {
    const events = mine.feed(box, input)
    const s = box.state
    const drained =
      s.mode === "resync" && s.link === "up" && s.markerSent && s.owed === null && !State.hasObligations(s)
    if (drained && s.flight.blockRecords > 0) {
      const sync: Event.Event = { type: "SyncActivated", epoch: s.epoch, seq: s.nextSeq }
      box.state = Decider.evolve(s, sync)
      return [...events, sync]
    }
    return events
  }
}

// ---------------------------------------------------------------------------

it("the reference adapter passes", () => {
  expect(Conformance.check(mine, { numRuns: 500 })).toMatchObject({ ok: true, runs: 500 })
  Conformance.assert(mine)
})

it("the eager one is caught: block-record-unacked, with a short counterexample and its trace", () => {
  const report = Conformance.check(eager)
  expect(report.ok).toBe(false)
  if (report.ok) return
  expect(report.verdict?.rule).toBe("block-record-unacked")
  expect(report.counterexample.steps.length).toBeLessThanOrEqual(6)
  expect(report.trace.trimEnd().split("\n").at(-1)).toMatch(/"type":"SyncActivated"/)
  expect(() => Conformance.assert(eager)).toThrow(/eager-sync does not conform/)
})

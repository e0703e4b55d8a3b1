/**
 * Trace version 3: the comparisons of one checksum request as one event each way
 * (`RunCompared`, `RunMatched`). Every per-block rule of version 2 holds for each block
 * inside a run; the invariants of design §4 are checked with runs of 1 to 4 blocks, the
 * replay through a snapshot, the codec (a version 2 header stops at the first run event),
 * and the decider's answers to a run (beyond, wrong block, unsent, stale, unbelieved).
 */
import { Either, Schema } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { reference, run } from "../../src/conformance/Simulation.js"
import * as Decider from "../../src/domain/Decider.js"
import type * as Event from "../../src/domain/Event.js"
import * as Input from "../../src/domain/Input.js"
import * as Legality from "../../src/domain/Legality.js"
import * as State from "../../src/domain/State.js"
import * as Trace from "../../src/domain/Trace.js"
import { type ComparingScenario, numRuns, runScenario, stepsOf } from "../support/arbitraries.js"
import { comparingInvariantHolds } from "../support/properties.js"

const runsBudget = { numRuns: numRuns(250) }
const runRun = (s: ComparingScenario) =>
  run(s.config, reference, stepsOf(s), {
    checks: [],
    compareFrom: s.compareFrom,
    ...(s.compareRun === undefined ? {} : { compareRun: s.compareRun })
  })

describe("runs of comparisons (trace version 3, reference filter)", () => {
  it("1. no write is lost when runs are compared, matched in part and mismatched, with writes racing their reads", () => {
    fc.assert(comparingInvariantHolds(reference, ["no-write-lost"], undefined, true), runsBudget)
  })

  it("4. coverage: each block of a run counts as covered until its outcome is settled by an ack", () => {
    fc.assert(comparingInvariantHolds(reference, ["coverage"], undefined, true), runsBudget)
  })

  it("2, 3, legality and liveness hold with runs", () => {
    fc.assert(
      comparingInvariantHolds(
        reference,
        ["sync-only-when-clean", "sequence", "legality", "rejected-input", "convergence"],
        undefined,
        true
      ),
      runsBudget
    )
  })

  it("the scenarios reach what the properties are about: runs of several blocks, matched in part, writes racing a run, runs lost with the link", () => {
    const seen = { longRuns: 0, partial: 0, wholeMatch: 0, raced: 0, lostPending: 0 }
    fc.assert(
      fc.property(runScenario, (s) => {
        const world = runRun(s)
        let state = State.initial(s.config)
        for (const e of world.events) {
          expect(e.type === "BlockCompared" || e.type === "BlockMatched").toBe(false)
          if (e.type === "RunCompared" && e.blocks.length > 1) seen.longRuns++
          if (e.type === "RunMatched" && e.except.length > 0) seen.partial++
          if (e.type === "RunMatched" && e.except.length === 0 && e.count > 1) seen.wholeMatch++
          if (e.type === "WriteTracked" && state.comparing.length > 1) seen.raced++
          if ((e.type === "LinkLost" || e.type === "DiscontinuityReported") && state.comparing.length > 0)
            seen.lostPending++
          state = Decider.evolve(state, e)
        }
      }),
      { numRuns: 200, seed: 13 }
    )
    for (const [what, n] of Object.entries(seen)) expect(n, what).toBeGreaterThan(10)
  })

  it("5. replay with runs: fold = live state, through a snapshot midway", () => {
    fc.assert(
      fc.property(runScenario, fc.double({ min: 0, max: 1, noNaN: true }), (s, cut) => {
        const world = runRun(s)
        const events = world.events
        const initial = State.initial(s.config)
        expect(State.equals(Decider.evolveAll(initial, events), world.fs)).toBe(true)
        const k = Math.floor(cut * events.length)
        const mid = events.slice(0, k).reduce(Decider.evolve, initial)
        const json = JSON.stringify(Schema.encodeSync(State.Snapshot)(State.toSnapshot(mid)))
        const restored = State.fromSnapshot(Schema.decodeUnknownSync(State.Snapshot)(JSON.parse(json)))
        expect(State.equals(restored, mid)).toBe(true)
        expect(State.equals(events.slice(k).reduce(Decider.evolve, restored), world.fs)).toBe(true)
      }),
      runsBudget
    )
  })

  it("a version 3 trace of decide checks clean through the codec; under a version 2 header it stops at the first run event", () => {
    fc.assert(
      fc.property(runScenario, (s) => {
        const world = runRun(s)
        const lines = (v: Event.TraceVersion) => [
          Trace.encodeHeader({ ...s.config, version: v }),
          ...world.events.map(Trace.encodeEvent)
        ]
        const decode = (text: ReadonlyArray<string>) => {
          const decoder = new Trace.Decoder()
          return [...decoder.push(text.join("\n")), ...decoder.end()]
        }
        const v3 = decode(lines(3)).map(Either.getOrThrow)
        const events = v3.flatMap((d) => (d._tag === "Event" ? [d.event] : []))
        expect(events).toEqual(world.events)
        for (const e of world.events) expect(Trace.isWellFormedEvent(e)).toBe(true)
        expect(Legality.checkAll(State.initial(s.config), events)).toBeUndefined()
        const first = world.events.findIndex((e) => e.type.startsWith("Run"))
        const version = Trace.versionFor(world.events)
        if (first >= 0) expect(version).toBe(3)
        else expect(version).toBeLessThan(3)
        const bad = decode(lines(2)).find(Either.isLeft)
        if (first < 0) expect(bad).toBeUndefined()
        else
          expect(bad?.left).toMatchObject({
            line: first + 2,
            kind: "unknown-type",
            detail: expect.stringContaining("needs trace version 3")
          })
      }),
      runsBudget
    )
  })

  it("an answer to a run beyond those decided, naming another block, or acking unsent records is rejected; a stale one records nothing; a match unbelieved is a mismatch", () => {
    fc.assert(
      fc.property(runScenario, fc.nat({ max: 5 }), fc.boolean(), (s, extra, matched) => {
        const state = runRun(s).fs
        if (state.link === "down") return
        const through = state.watermark
        const beyond = Decider.decide(
          state,
          Input.runCompleted(state.compared + extra, [0], [matched], through)
        )
        expect(Either.isLeft(beyond) && beyond.left._tag).toBe("ComparisonBeyondDecided")
        const waiting = state.comparing.toArray()
        if (waiting.length > 0) {
          const first = waiting[0]!
          // The run of every comparison waiting from the oldest, as far as ids are consecutive.
          let n = 1
          while (n < waiting.length && waiting[n]!.id === first.id + n) n++
          const blocks = waiting.slice(0, n).map((c) => c.block)
          const all = (m: boolean) => blocks.map(() => m)
          const wrong = Decider.decide(
            state,
            Input.runCompleted(first.id, [...blocks.slice(0, -1), blocks[n - 1]! + 1], all(matched), through)
          )
          expect(Either.isLeft(wrong) && wrong.left._tag).toBe("ComparisonWrongBlock")
          const unsent = Decider.decide(
            state,
            Input.runCompleted(first.id, blocks, all(matched), state.nextSeq)
          )
          expect(Either.isLeft(unsent) && unsent.left._tag).toBe("AckBeyondSent")
          const after = Math.max(...waiting.slice(0, n).map((c) => c.after))
          const outcome = (t: number, m: ReadonlyArray<boolean>) =>
            Either.getOrThrow(Decider.decide(state, Input.runCompleted(first.id, blocks, m, t)))
          // All matched and believed: one RunMatched, nothing sent.
          expect(
            outcome(after, all(true)).filter((e) => e.type !== "Acked" && e.type !== "SyncActivated")
          ).toEqual([{ type: "RunMatched", id: first.id, count: n, except: [] }])
          // One mismatched: excepted, then its own BlockMismatched and BlockSent.
          const one = blocks.map((_, k) => k !== n - 1)
          const types = outcome(after, one).map((e) => e.type)
          expect(types).toEqual(
            expect.arrayContaining(
              n > 1 ? ["RunMatched", "BlockMismatched", "BlockSent"] : ["BlockMismatched", "BlockSent"]
            )
          )
          // Unbelieved (the answer does not reach a record sent before the request): none matched.
          if (after > state.watermark)
            expect(outcome(after - 1, all(true)).map((e) => e.type)).not.toContain("RunMatched")
        }
        const stale = [...Array(state.compared).keys()].find(
          (q) => State.comparisonAt(state, q) === undefined
        )
        if (stale !== undefined)
          expect(Decider.decide(state, Input.runCompleted(stale, [0], [matched], through))).toEqual(
            Either.right([])
          )
      }),
      runsBudget
    )
  })
})

/**
 * `Decider.decideFolded` (issue 14: each event folded once): on every state the simulated
 * world reaches and every input it feeds (rejected ones included), plus extra inputs
 * drawn at random against each of those states, it hands back exactly `decide`'s events
 * or rejection, the state `evolveAll` folds them to, and before each event the state
 * the events ahead of it fold to. The replicator's decision loop keeps these states
 * instead of folding the events a second time.
 */
import { Either } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Decider from "../../src/domain/Decider.js"
import type * as Event from "../../src/domain/Event.js"
import * as Input from "../../src/domain/Input.js"
import { type Filter, reference, run } from "../../src/conformance/Simulation.js"
import * as State from "../../src/domain/State.js"
import { comparingScenario, numRuns, runScenario, scenario, stepsOf } from "../support/arbitraries.js"

/** Inputs the world would not send here: acks, gaps and handshakes anywhere around the seqs in use. */
const extraInput: fc.Arbitrary<Input.Input> = fc.oneof(
  fc.nat({ max: 60 }).map(Input.ackReceived),
  fc.nat({ max: 60 }).map(Input.gapReceived),
  fc.nat({ max: 60 }).map(Input.linkReestablished),
  fc.constantFrom("connection-lost", "ack-timeout").map(Input.linkFailed),
  fc.integer({ min: 1, max: 8 }).map((budget) => Input.pumpTick(budget)),
  fc
    .record({ budget: fc.integer({ min: 1, max: 8 }), from: fc.integer({ min: 1, max: 6 }) })
    .map((p) => Input.pumpTick(p.budget, p.from)),
  fc
    .record({
      id: fc.nat({ max: 60 }),
      block: fc.nat({ max: 12 }),
      matched: fc.boolean(),
      through: fc.nat({ max: 60 })
    })
    .map((c) => Input.comparisonCompleted(c.id, c.block, c.matched, c.through)),
  fc.nat({ max: 12 }).map(Input.differenceFound),
  fc
    .record({ sector: fc.nat({ max: 400 }), sectors: fc.integer({ min: 1, max: 40 }) })
    .map((w) => Input.writeCompleted(w.sector * 512, w.sectors * 512))
)

/** Why `decideFolded(state, input)` differs from `decide` + `evolveAll`, or `undefined`. */
const mismatch = (state: State.State, input: Input.Input): string | undefined => {
  const plain = Decider.decide(state, input)
  const folded = Decider.decideFolded(state, input)
  if (Either.isLeft(plain) || Either.isLeft(folded)) {
    if (Either.isRight(plain) || Either.isRight(folded)) return `one rejects, the other does not`
    return plain.left.message === folded.left.message && plain.left._tag === folded.left._tag
      ? undefined
      : `rejections differ: ${plain.left.message} / ${folded.left.message}`
  }
  const events: ReadonlyArray<Event.Event> = plain.right
  if (JSON.stringify(folded.right.events) !== JSON.stringify(events)) return "events differ"
  if (folded.right.before.length !== events.length) return "not one state before each event"
  let s = state
  for (let i = 0; i < events.length; i++) {
    if (!State.equals(folded.right.before[i]!, s)) return `the state before event ${i} differs`
    s = Decider.evolve(s, events[i]!)
  }
  if (!State.equals(folded.right.state, Decider.evolveAll(state, events))) return "the state after differs"
  return undefined
}

describe("Decider.decideFolded", () => {
  it("hands back decide's events (or rejection) with the states they fold through", () => {
    fc.assert(
      fc.property(scenario, fc.array(extraInput, { maxLength: 4 }), (s, extras) => {
        const found: Array<string> = []
        const checking: Filter<State.State> = {
          ...reference,
          name: "checking",
          decide: (state, input) => {
            for (const i of [input, ...extras]) {
              const why = mismatch(state, i)
              if (why !== undefined) found.push(`${why} (${JSON.stringify(i)})`)
            }
            return Decider.decide(state, input)
          }
        }
        run(s.config, checking, stepsOf(s), { checks: [], recordEvents: false })
        expect(found).toEqual([])
      }),
      { numRuns: numRuns(300) }
    )
  })

  it("does so with comparisons too (pending ones answered, mismatches sent at once)", () => {
    fc.assert(
      fc.property(comparingScenario, fc.array(extraInput, { maxLength: 4 }), (s, extras) => {
        const found: Array<string> = []
        const checking: Filter<State.State> = {
          ...reference,
          name: "checking",
          decide: (state, input) => {
            // The outcomes of the comparisons waiting, both ways, besides the drawn inputs.
            const outcomes = state.comparing.flatMap((c) => [
              Input.comparisonCompleted(c.id, c.block, true, Math.max(state.watermark, c.after)),
              Input.comparisonCompleted(c.id, c.block, false, state.watermark)
            ])
            for (const i of [input, ...extras, ...outcomes]) {
              const why = mismatch(state, i)
              if (why !== undefined) found.push(`${why} (${JSON.stringify(i)})`)
            }
            return Decider.decide(state, input)
          }
        }
        run(s.config, checking, stepsOf(s), { checks: [], recordEvents: false, compareFrom: s.compareFrom })
        expect(found).toEqual([])
      }),
      { numRuns: numRuns(200) }
    )
  })

  it("does so with runs too (trace version 3: runs answered whole, in part, stale or beyond)", () => {
    const runInput: fc.Arbitrary<Input.Input> = fc.oneof(
      fc
        .record({
          budget: fc.integer({ min: 1, max: 8 }),
          from: fc.integer({ min: 1, max: 6 }),
          run: fc.integer({ min: 1, max: 4 })
        })
        .map((p) => Input.pumpTick(p.budget, p.from, p.run)),
      fc
        .record({
          id: fc.nat({ max: 60 }),
          blocks: fc.uniqueArray(fc.nat({ max: 12 }), { minLength: 1, maxLength: 4 }),
          matched: fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
          through: fc.nat({ max: 60 })
        })
        .map((c) =>
          Input.runCompleted(
            c.id,
            c.blocks.sort((a, b) => a - b),
            c.matched.slice(0, c.blocks.length),
            c.through
          )
        )
    )
    fc.assert(
      fc.property(runScenario, fc.array(fc.oneof(extraInput, runInput), { maxLength: 4 }), (s, extras) => {
        const found: Array<string> = []
        const checking: Filter<State.State> = {
          ...reference,
          name: "checking",
          decide: (state, input) => {
            // The oldest waiting comparisons as one run, answered all matched and half matched.
            const waiting = state.comparing.toArray().slice(0, 4)
            const outcomes =
              waiting.length === 0
                ? []
                : [
                    Input.runCompleted(
                      waiting[0]!.id,
                      waiting.map((c) => c.block),
                      waiting.map(() => true),
                      Math.max(state.watermark, ...waiting.map((c) => c.after))
                    ),
                    Input.runCompleted(
                      waiting[0]!.id,
                      waiting.map((c) => c.block),
                      waiting.map((_, k) => k % 2 === 0),
                      state.watermark
                    )
                  ]
            for (const i of [input, ...extras, ...outcomes]) {
              const why = mismatch(state, i)
              if (why !== undefined) found.push(`${why} (${JSON.stringify(i)})`)
            }
            return Decider.decide(state, input)
          }
        }
        run(s.config, checking, stepsOf(s), {
          checks: [],
          recordEvents: false,
          compareFrom: s.compareFrom,
          ...(s.compareRun === undefined ? {} : { compareRun: s.compareRun })
        })
        expect(found).toEqual([])
      }),
      { numRuns: numRuns(200) }
    )
  })

  it("folds a pump's events once each: the batch it emits is the states it passed through", () => {
    const config = {
      blockSize: 4096,
      blockCount: 8,
      window: 4,
      congestionLimit: 65536,
      initial: "full-sync" as const
    }
    const folded = Decider.decideFolded(State.initial(config), Input.pumpTick(4))
    expect(Either.isRight(folded)).toBe(true)
    const { events, before, state } = Either.getOrThrow(folded)
    // The marker, a pass, then four blocks: each decided against the state the previous one left.
    expect(events.map((e) => e.type)).toEqual([
      "ResyncBegun",
      "PassStarted",
      "BlockSent",
      "BlockSent",
      "BlockSent",
      "BlockSent"
    ])
    expect(before.map((b) => b.nextSeq)).toEqual([1, 2, 2, 3, 4, 5])
    expect(state.nextSeq).toBe(6)
    expect(state.cursor).toBe(4)
  })
})

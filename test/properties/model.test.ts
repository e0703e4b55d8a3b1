/**
 * The invariants of design §4 over the pure core, against a simulated world with
 * faults drawn by fast-check. See docs/model.md for the map from invariant to test.
 */
import { Either, Schema } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Decider from "../../src/domain/Decider.js"
import * as Legality from "../../src/domain/Legality.js"
import { reference, run } from "../../src/conformance/Simulation.js"
import * as State from "../../src/domain/State.js"
import * as Trace from "../../src/domain/Trace.js"
import * as Input from "../../src/domain/Input.js"
import { comparingScenario, numRuns, scenario, stepsOf } from "../support/arbitraries.js"
import { comparingInvariantHolds, invariantHolds } from "../support/properties.js"

const runs = { numRuns: numRuns(400) }

describe("design §4 invariants (reference filter)", () => {
  it("1. no write is lost: whenever quiescent in sync, the replica equals the disk, block for block", () => {
    fc.assert(invariantHolds(reference, ["no-write-lost"]), runs)
  })

  it("2. sync only when clean: no live write in resync, no marked-only write in sync, no early sync", () => {
    fc.assert(invariantHolds(reference, ["sync-only-when-clean"]), runs)
  })

  it("3. sequence: contiguous seqs, a watermark that never decreases nor passes the last record", () => {
    fc.assert(invariantHolds(reference, ["sequence"]), runs)
  })

  it("4. coverage: every block that may differ on the replica is dirty or covered by an unacked record", () => {
    fc.assert(invariantHolds(reference, ["coverage"]), runs)
  })

  it("legality: every event decide emits is allowed by the rules of design §5", () => {
    fc.assert(invariantHolds(reference, ["legality", "rejected-input"]), runs)
  })

  it("liveness: once the link is healthy the filter converges back to sync", () => {
    fc.assert(invariantHolds(reference, ["convergence"]), runs)
  })

  it("3. an ack for an unsent record is rejected", () => {
    fc.assert(
      fc.property(scenario, fc.nat({ max: 5 }), (s, extra) => {
        const world = run(s.config, reference, stepsOf(s), { checks: [] })
        const state = world.fs
        if (state.link === "down") return
        const decided = Decider.decide(state, { _tag: "AckReceived", seq: state.nextSeq + extra })
        expect(Either.isLeft(decided) && decided.left._tag).toBe("AckBeyondSent")
      }),
      runs
    )
  })
})

describe("5. replay", () => {
  it("folding the journal from the initial state yields the live state, with or without a snapshot midway", () => {
    fc.assert(
      fc.property(scenario, fc.double({ min: 0, max: 1, noNaN: true }), (s, cut) => {
        const world = run(s.config, reference, stepsOf(s), { checks: [] })
        const events = world.events
        const initial = State.initial(s.config)
        expect(State.equals(events.reduce(Decider.evolve, initial), world.fs)).toBe(true)
        expect(State.equals(Decider.evolveAll(initial, events), world.fs)).toBe(true)
        // A snapshot taken midway, through its encoded JSON form, then the rest of the journal.
        const k = Math.floor(cut * events.length)
        const mid = events.slice(0, k).reduce(Decider.evolve, initial)
        const snapshot = State.toSnapshot(mid)
        const json = JSON.stringify(Schema.encodeSync(State.Snapshot)(snapshot))
        // The journal writes snapshots without the Schema pass: their encoded form is their own.
        expect(JSON.stringify(snapshot)).toBe(json)
        const restored = State.fromSnapshot(Schema.decodeUnknownSync(State.Snapshot)(JSON.parse(json)))
        expect(State.equals(restored, mid)).toBe(true)
        expect(State.equals(events.slice(k).reduce(Decider.evolve, restored), world.fs)).toBe(true)
        expect(State.equals(Decider.evolveAll(restored, events.slice(k)), world.fs)).toBe(true)
      }),
      runs
    )
  })

  it("old states never change when later events are folded", () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const world = run(s.config, reference, stepsOf(s), { checks: [] })
        const states: Array<State.State> = [State.initial(s.config)]
        for (const e of world.events) states.push(Decider.evolve(states[states.length - 1]!, e))
        const pictures = states.map((st) => JSON.stringify(State.toSnapshot(st)))
        // Branch from every old state (the append-only flight log must not leak between versions).
        for (const st of states) Decider.evolveAll(st, world.events.slice(0, 5))
        for (const [i, st] of states.entries()) expect(JSON.stringify(State.toSnapshot(st))).toBe(pictures[i])
      }),
      { numRuns: numRuns(60) }
    )
  })
})

describe("traces of decide check clean", () => {
  it("through the trace codec: encode, decode line by line in random chunks, check", () => {
    fc.assert(
      fc.property(scenario, fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1 }), (s, chunkSizes) => {
        const world = run(s.config, reference, stepsOf(s), { checks: [] })
        const text = [Trace.encodeHeader(s.config), ...world.events.map(Trace.encodeEvent)].join("\n")
        const decoder = new Trace.Decoder()
        const decoded: Array<Trace.Decoded> = []
        let at = 0
        for (let i = 0; at < text.length; i++) {
          const n = chunkSizes[i % chunkSizes.length]!
          for (const d of decoder.push(text.slice(at, at + n))) decoded.push(Either.getOrThrow(d))
          at += n
        }
        for (const d of decoder.end()) decoded.push(Either.getOrThrow(d))
        const events = decoded.flatMap((d) => (d._tag === "Event" ? [d.event] : []))
        expect(events).toEqual(world.events)
        expect(Legality.checkAll(State.initial(s.config), events)).toBeUndefined()
      }),
      runs
    )
  })

  it("the journal's fast check: an event the decider emits is well formed and reads back as itself; a damaged one is not", () => {
    // The journal skips the encode-decode round trip for well-formed events, so the two must agree.
    const damage = fc.oneof(
      fc.constant((e: Record<string, unknown>) => ({ ...e, extra: 1 })),
      fc.constant((e: Record<string, unknown>) => ({ ...e, type: "NoSuchEvent" })),
      fc.constant((e: Record<string, unknown>) => {
        const { type, ...rest } = e
        const [first] = Object.keys(rest)
        if (first === undefined) return { ...e, type: 7 }
        const { [first]: _dropped, ...kept } = rest
        return { type, ...kept }
      }),
      fc.constant((e: Record<string, unknown>) => {
        const key = Object.keys(e).find((k) => typeof e[k] === "number")
        return key === undefined ? { ...e, reason: 42 } : { ...e, [key]: -1 }
      })
    )
    fc.assert(
      fc.property(scenario, damage, (s, damaged) => {
        const world = run(s.config, reference, stepsOf(s), { checks: [] })
        for (const [i, event] of world.events.entries()) {
          expect(Trace.isWellFormedEvent(event)).toBe(true)
          expect(Either.getOrThrow(Trace.decodeEvent(Trace.encodeEvent(event), i + 1))).toEqual(event)
          const bad = damaged(event as unknown as Record<string, unknown>) as unknown as typeof event
          expect(Trace.isWellFormedEvent(bad)).toBe(false)
          expect(Either.isLeft(Trace.decodeEvent(Trace.encodeEvent(bad), i + 1)) || "extra" in bad).toBe(true)
        }
      }),
      { numRuns: numRuns(100) }
    )
  })

  it("the journal's fast snapshot check: a snapshot of any reachable state is well formed and decodes back to itself; a damaged one is not", () => {
    // The file journal saves a well-formed snapshot without a Schema pass, so the two must agree.
    type Damage = (s: Record<string, unknown>) => Record<string, unknown>
    // Each with whether the schema refuses it too (it accepts and drops an unknown key).
    const damage = fc.constantFrom<readonly [Damage, boolean]>(
      [(s) => ({ ...s, extra: 1 }), false],
      [(s) => ({ ...s, epoch: -1 }), true],
      [(s) => ({ ...s, nextSeq: 1.5 }), true],
      [(s) => ({ ...s, mode: "paused" }), true],
      [(s) => ({ ...s, owed: "boredom" }), true],
      [(s) => ({ ...s, markerSent: 0 }), true],
      [(s) => ({ ...s, version: 2 }), true],
      [(s) => ({ ...s, config: { ...(s.config as object), window: 0 } }), true],
      [(s) => ({ ...s, config: { ...(s.config as object), colour: "red" } }), false],
      [
        (s) => ({ ...s, flight: [...(s.flight as Array<unknown>), { kind: "write", first: 0, last: 0 }] }),
        true
      ],
      [(s) => ({ ...s, flight: [...(s.flight as Array<unknown>), { kind: "block", block: -3 }] }), true],
      [(s) => ({ ...s, flight: [...(s.flight as Array<unknown>), { kind: "marker", block: 1 }] }), false],
      [(s) => ({ ...s, dirty: [[0, 1, 2]] }), true],
      [(s) => ({ ...s, draining: [[0, "1"]] }), true],
      [
        (s) => {
          const { cursor: _dropped, ...rest } = s
          return rest
        },
        true
      ]
    )
    const decode = Schema.decodeUnknownEither(State.Snapshot)
    fc.assert(
      fc.property(scenario, damage, (s, [damaged, schemaRefuses]) => {
        const world = run(s.config, reference, stepsOf(s), { checks: [] })
        let state = State.initial(s.config)
        const states = [state]
        for (const event of world.events) {
          state = Decider.evolve(state, event)
          states.push(state)
        }
        for (const reached of states.filter((_, i) => i % 7 === 0 || i === states.length - 1)) {
          const snapshot = State.toSnapshot(reached)
          expect(State.isWellFormedSnapshot(snapshot)).toBe(true)
          expect(Either.getOrThrow(decode(JSON.parse(JSON.stringify(snapshot))))).toEqual(snapshot)
          const bad = damaged(snapshot as unknown as Record<string, unknown>) as unknown as State.Snapshot
          expect(State.isWellFormedSnapshot(bad)).toBe(false)
          expect(Either.isLeft(decode(JSON.parse(JSON.stringify(bad))))).toBe(schemaRefuses)
        }
      }),
      { numRuns: numRuns(100) }
    )
  })
})

describe("checksum-based resync (trace version 2, reference filter)", () => {
  const comparingRuns = { numRuns: numRuns(300) }
  const comparingRun = (s: typeof comparingScenario extends fc.Arbitrary<infer T> ? T : never) =>
    run(s.config, reference, stepsOf(s), { checks: [], compareFrom: s.compareFrom })

  it("1. no write is lost when blocks are compared, matched and mismatched, with writes racing them", () => {
    fc.assert(comparingInvariantHolds(reference, ["no-write-lost"]), comparingRuns)
  })

  it("4. coverage: a block under comparison counts as covered until its outcome is settled by an ack", () => {
    fc.assert(comparingInvariantHolds(reference, ["coverage"]), comparingRuns)
  })

  it("2, 3, legality and liveness hold with comparisons", () => {
    fc.assert(
      comparingInvariantHolds(reference, [
        "sync-only-when-clean",
        "sequence",
        "legality",
        "rejected-input",
        "convergence"
      ]),
      comparingRuns
    )
  })

  it("the scenarios reach what the properties are about: matches, mismatches, writes racing comparisons, comparisons lost with the link", () => {
    const seen = { matched: 0, mismatched: 0, raced: 0, lostPending: 0, v2Snapshots: 0 }
    fc.assert(
      fc.property(comparingScenario, (s) => {
        const world = comparingRun(s)
        let state = State.initial(s.config)
        for (const e of world.events) {
          if (e.type === "BlockMatched") seen.matched++
          if (e.type === "BlockMismatched") seen.mismatched++
          if (e.type === "WriteTracked" && state.comparing.length > 0) seen.raced++
          if ((e.type === "LinkLost" || e.type === "DiscontinuityReported") && state.comparing.length > 0)
            seen.lostPending++
          state = Decider.evolve(state, e)
          if (State.toSnapshot(state).version === 2) seen.v2Snapshots++
        }
      }),
      { numRuns: 200, seed: 18 }
    )
    for (const [what, n] of Object.entries(seen)) expect(n, what).toBeGreaterThan(10)
  })

  it("a verify difference makes the block owed (resync `verify` in sync), the drain sends it, and the trace is legal", () => {
    fc.assert(
      fc.property(scenario, fc.nat(), (s, pick) => {
        const world = run(s.config, reference, stepsOf(s), { checks: [] })
        const state = world.fs
        const block = pick % s.config.blockCount
        const decided = Decider.decide(state, Input.differenceFound(block))
        const events = Either.getOrThrow(decided)
        if (State.isObligation(state, block)) expect(events).toEqual([])
        else if (state.mode === "sync")
          expect(events).toEqual([
            { type: "ResyncActivated", epoch: state.epoch + 1, reason: "verify" },
            { type: "BlockDiffered", block }
          ])
        else expect(events).toEqual([{ type: "BlockDiffered", block }])
        const after = Decider.evolveAll(state, events)
        expect(State.isObligation(after, block)).toBe(true)
        expect(Legality.checkAll(State.initial(s.config), [...world.events, ...events])).toBeUndefined()
        expect(Trace.versionFor(events)).toBe(events.length === 0 ? 1 : 2)
        const off = Decider.decide(state, Input.differenceFound(s.config.blockCount + pick))
        expect(Either.isLeft(off)).toBe(true)
      }),
      runs
    )
  })

  it("5. replay with comparisons: fold = live state, through a version 2 snapshot midway", () => {
    fc.assert(
      fc.property(comparingScenario, fc.double({ min: 0, max: 1, noNaN: true }), (s, cut) => {
        const world = comparingRun(s)
        const events = world.events
        const initial = State.initial(s.config)
        expect(State.equals(Decider.evolveAll(initial, events), world.fs)).toBe(true)
        const k = Math.floor(cut * events.length)
        const mid = events.slice(0, k).reduce(Decider.evolve, initial)
        const snapshot = State.toSnapshot(mid)
        expect(State.isWellFormedSnapshot(snapshot)).toBe(true)
        const json = JSON.stringify(Schema.encodeSync(State.Snapshot)(snapshot))
        expect(JSON.stringify(snapshot)).toBe(json)
        const restored = State.fromSnapshot(Schema.decodeUnknownSync(State.Snapshot)(JSON.parse(json)))
        expect(State.equals(restored, mid)).toBe(true)
        expect(State.equals(events.slice(k).reduce(Decider.evolve, restored), world.fs)).toBe(true)
      }),
      comparingRuns
    )
  })

  it("a version 2 trace of decide checks clean through the codec; the same events under a version 1 header stop at the first new type", () => {
    fc.assert(
      fc.property(comparingScenario, (s) => {
        const world = comparingRun(s)
        const version = Trace.versionFor(world.events)
        const lines = (v: 1 | 2) => [
          Trace.encodeHeader({ ...s.config, version: v }),
          ...world.events.map(Trace.encodeEvent)
        ]
        const decode = (text: ReadonlyArray<string>) => {
          const decoder = new Trace.Decoder()
          return [...decoder.push(text.join("\n")), ...decoder.end()]
        }
        const v2 = decode(lines(2)).map(Either.getOrThrow)
        const events = v2.flatMap((d) => (d._tag === "Event" ? [d.event] : []))
        expect(events).toEqual(world.events)
        expect(Legality.checkAll(State.initial(s.config), events)).toBeUndefined()
        const first = world.events.findIndex((e) => e.type.startsWith("Block") && e.type !== "BlockSent")
        expect(version).toBe(first < 0 ? 1 : 2)
        const v1 = decode(lines(1))
        const bad = v1.find(Either.isLeft)
        if (first < 0) expect(bad).toBeUndefined()
        else expect(bad?.left).toMatchObject({ line: first + 2, kind: "unknown-type" })
      }),
      comparingRuns
    )
  })

  it("an outcome for an unsent comparison, or naming another block, is rejected; a stale one records nothing", () => {
    fc.assert(
      fc.property(comparingScenario, fc.nat({ max: 5 }), fc.boolean(), (s, extra, matched) => {
        const state = comparingRun(s).fs
        if (state.link === "down") return
        const through = state.watermark
        const beyond = Decider.decide(
          state,
          Input.comparisonCompleted(state.compared + extra, 0, matched, through)
        )
        expect(Either.isLeft(beyond) && beyond.left._tag).toBe("ComparisonBeyondDecided")
        for (const c of state.comparing) {
          const wrong = Decider.decide(state, Input.comparisonCompleted(c.id, c.block + 1, matched, through))
          expect(Either.isLeft(wrong) && wrong.left._tag).toBe("ComparisonWrongBlock")
          const unsent = Decider.decide(
            state,
            Input.comparisonCompleted(c.id, c.block, matched, state.nextSeq)
          )
          expect(Either.isLeft(unsent) && unsent.left._tag).toBe("AckBeyondSent")
          // A match proves the block only if the answer covered every record sent before the request.
          const outcome = (t: number) =>
            Either.getOrThrow(Decider.decide(state, Input.comparisonCompleted(c.id, c.block, true, t))).map(
              (e) => e.type
            )
          expect(outcome(c.after)).toContain("BlockMatched")
          if (c.after > state.watermark)
            expect(outcome(c.after - 1)).toEqual(expect.arrayContaining(["BlockMismatched", "BlockSent"]))
        }
        const stale = [...Array(state.compared).keys()].find(
          (q) => State.comparisonAt(state, q) === undefined
        )
        if (stale !== undefined)
          expect(Decider.decide(state, Input.comparisonCompleted(stale, 0, matched, through))).toEqual(
            Either.right([])
          )
      }),
      comparingRuns
    )
  })
})

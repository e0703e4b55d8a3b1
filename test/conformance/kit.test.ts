/**
 * The conformance kit's own contract: it never throws from `check`; what an
 * implementation throws, or reports in a shape that is not an event, or a write
 * it forgets to record, is a failure with a shrunk counterexample; options narrow
 * the search.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Conformance from "../../src/conformance/index.js"
import type * as Event from "../../src/domain/Event.js"
import type { Input } from "../../src/domain/Input.js"

const { reference } = Conformance

/** The reference with one twist on the way out. */
const twisted = (
  name: string,
  twist: (
    input: Input,
    events: ReadonlyArray<Event.Event>,
    box: Conformance.Box
  ) => ReadonlyArray<Event.Event>
): Conformance.Implementation<Conformance.Box> => ({
  name,
  start: reference.start,
  feed: (box, input) => twist(input, reference.feed(box, input), box)
})

describe("the kit reports, never throws", () => {
  it("an exception thrown by feed", () => {
    const impl = twisted("throws-on-gap", (input, events) => {
      if (input._tag === "GapReceived") throw new RangeError(`no idea what seq ${input.expected} is`)
      return events
    })
    const report = Conformance.check(impl, { numRuns: 2000 })
    expect(report.ok).toBe(false)
    if (report.ok) return
    expect(report.invariant).toBe("exception")
    expect(report.detail).toMatch(
      /feed threw on GapReceived \{"expected":\d+\}: RangeError: no idea what seq/
    )
    // Shrunk to the few steps that make the receiver report a gap.
    expect(report.counterexample.steps.length).toBeLessThanOrEqual(8)
    expect(report.counterexample.steps.some((s) => s._tag === "Drop")).toBe(true)
  })

  it("an exception thrown by start", () => {
    const impl: Conformance.Implementation<Conformance.Box> = {
      name: "no-full-sync",
      start: (config) => {
        if (config.initial === "full-sync") throw new Error("full sync is not supported")
        return reference.start(config)
      },
      feed: reference.feed
    }
    const report = Conformance.check(impl)
    expect(report).toMatchObject({
      ok: false,
      invariant: "exception",
      step: 0,
      counterexample: { steps: [] }
    })
    if (!report.ok) expect(report.detail).toContain("start threw")
  })

  it("events that are not events: a bad shape, a wrong field type, not an array", () => {
    const cases: ReadonlyArray<readonly [string, (events: ReadonlyArray<Event.Event>) => unknown, RegExp]> = [
      [
        "drops-a-field",
        (es) => es.map((e) => (e.type === "Acked" ? { type: "Acked" } : e)),
        /missing field "seq"/
      ],
      [
        "string-seq",
        (es) => es.map((e) => (e.type === "WriteStreamed" ? { ...e, seq: String(e.seq) } : e)),
        /field "seq"/
      ],
      [
        "unknown-type",
        (es) => es.map((e) => (e.type === "PassStarted" ? { ...e, type: "PassBegun" } : e)),
        /unknown event type/
      ],
      ["not-an-array", (es) => (es.length > 1 ? new Set(es) : es), /not an array/]
    ]
    for (const [name, twist, detail] of cases) {
      const report = Conformance.check(
        twisted(name, (_i, es) => twist(es) as ReadonlyArray<Event.Event>),
        { numRuns: 2000 }
      )
      expect(report, name).toMatchObject({ ok: false, invariant: "malformed-event" })
      if (!report.ok) expect(report.detail).toMatch(detail)
    }
  })

  it("a completed write recorded twice, with the wrong range, or not at all", () => {
    const cases: ReadonlyArray<
      readonly [string, (input: Input, es: ReadonlyArray<Event.Event>) => ReadonlyArray<Event.Event>]
    > = [
      ["forgets-tracked-writes", (_i, es) => es.filter((e) => e.type !== "WriteTracked")],
      [
        "rounds-to-blocks",
        (_i, es) =>
          es.map((e) => (e.type === "WriteTracked" ? { ...e, offset: e.offset - (e.offset % 4096) } : e))
      ],
      [
        "tracks-twice",
        (_i, es) => es.flatMap((e): Array<Event.Event> => (e.type === "WriteTracked" ? [e, e] : [e]))
      ]
    ]
    for (const [name, twist] of cases) {
      const report = Conformance.check(twisted(name, twist), { numRuns: 2000 })
      expect(report, name).toMatchObject({ ok: false, invariant: "write-recorded" })
    }
  })

  it("without the write-recorded check, a forgotten write is still lost data", () => {
    const forgets = twisted("forgets-tracked-writes", (_i, es) => es.filter((e) => e.type !== "WriteTracked"))
    const report = Conformance.check(forgets, {
      numRuns: 2000,
      invariants: Conformance.allInvariants.filter((i) => i !== "write-recorded")
    })
    expect(report.ok).toBe(false)
    if (report.ok) return
    expect(["coverage", "no-write-lost"]).toContain(report.invariant)
    // The trace itself is legal: only the data shows the loss.
    expect(report.verdict).toBeUndefined()
    expect(Conformance.render(report)).toContain("the trace itself is legal")
  })
})

describe("options", () => {
  it("numRuns, seed: the same seed runs the same scenarios", () => {
    const a = Conformance.check(reference, { numRuns: 25, seed: 42 })
    expect(a).toEqual({ ok: true, implementation: "reference", runs: 25, seed: 42 })
  })

  it("configs and maxSteps narrow the search", () => {
    const seen: Array<number> = []
    const spy: Conformance.Implementation<Conformance.Box> = {
      name: "spy",
      start: (config) => {
        seen.push(config.blockSize)
        return reference.start(config)
      },
      feed: reference.feed
    }
    const configs = fc.record({
      blockSize: fc.constant(65536),
      blockCount: fc.integer({ min: 1, max: 8 }),
      window: fc.constant(4),
      congestionLimit: fc.constant(1 << 20),
      initial: fc.constant("in-sync" as const)
    })
    expect(Conformance.check(spy, { numRuns: 30, configs, maxSteps: 20 }).ok).toBe(true)
    expect(new Set(seen)).toEqual(new Set([65536]))
  })

  it("traceOf writes a design §5 trace the checker reads back", () => {
    const config = {
      blockSize: 4096,
      blockCount: 4,
      window: 2,
      congestionLimit: 1 << 20,
      initial: "in-sync"
    } as const
    const run = Conformance.runSteps(reference, config, [
      { _tag: "Write", offset: 0, length: 4096 },
      { _tag: "Cut", reason: "ack-timeout" }
    ])
    expect(run.failure).toBeUndefined()
    expect(run.trace.split("\n").slice(0, 4)).toEqual([
      '{"type":"header","version":1,"blockSize":4096,"blockCount":4,"initial":"in-sync"}',
      '{"type":"WriteStreamed","seq":1,"offset":0,"length":4096}',
      '{"type":"LinkLost","reason":"ack-timeout"}',
      '{"type":"ResyncActivated","epoch":1,"reason":"interruption"}'
    ])
    expect(Conformance.verdictOf(config, run.events, true)).toBeUndefined()
  })
})

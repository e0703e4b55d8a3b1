/**
 * Trace version 3 (runs): `RunCompared` and `RunMatched` check under a version 3 header
 * by the per-block rules of version 2, applied to each block of the run
 * (docs/conformance.md); a version 3 checker reads version 2's per-block events too;
 * under a version 1 or 2 header the first run event is an `unknown-type` on its line.
 * The format's boundaries: every malformed run is a `wrong-type`, never a crash.
 */
import { describe, expect, it } from "vitest"
import * as CheckTrace from "../../src/conformance/CheckTrace.js"
import * as Conformance from "../../src/conformance/index.js"
import * as Decider from "../../src/domain/Decider.js"
import type * as State from "../../src/domain/State.js"
import * as Event from "../../src/domain/Event.js"
import * as Trace from "../../src/domain/Trace.js"

const header = (version: 1 | 2 | 3) =>
  `{"type":"header","version":${version},"blockSize":65536,"blockCount":1024,"initial":"in-sync"}`

/** Blocks 1–3 compared as one run: 1 and 3 match, 2 differs and is sent. */
const example = [
  header(3),
  '{"type":"WriteStreamed","seq":1,"offset":0,"length":4096}',
  '{"type":"Acked","seq":1}',
  '{"type":"LinkLost","reason":"ack-timeout"}',
  '{"type":"ResyncActivated","epoch":1,"reason":"interruption"}',
  '{"type":"WriteTracked","offset":65536,"length":196608}',
  '{"type":"LinkRestored","receiverSeq":1}',
  '{"type":"ResyncBegun","epoch":1,"seq":2}',
  '{"type":"PassStarted","epoch":1,"blocks":3}',
  '{"type":"RunCompared","id":0,"blocks":[1,2,3]}', // line 10
  '{"type":"Acked","seq":2}',
  '{"type":"RunMatched","id":0,"count":3,"except":[1]}',
  '{"type":"BlockMismatched","id":1,"block":2}',
  '{"type":"BlockSent","seq":3,"block":2}',
  '{"type":"Acked","seq":3}',
  '{"type":"SyncActivated","epoch":1,"seq":4}',
  '{"type":"Acked","seq":4}'
]

/** Lines 1–9 of the example, then `rest`. */
const after9 = (rest: ReadonlyArray<string>, head = example.slice(0, 9)) => [...head, ...rest].join("\n")

async function* once(text: string): AsyncGenerator<string> {
  yield text
}
const checked = (trace: string, quiescent = false) => CheckTrace.checkChunks(once(trace), { quiescent })

describe("trace version 3", () => {
  it("the example checks valid, quiescent", async () => {
    expect(await checked(example.join("\n"), true)).toMatchObject({
      valid: true,
      summary: { events: 16, epochs: 1, finalMode: "sync" },
      lines: 17
    })
  })

  it("reads version 2's per-block events, and mixes them with runs", async () => {
    const mixed = after9([
      '{"type":"BlockCompared","id":0,"block":1}',
      '{"type":"RunCompared","id":1,"blocks":[2,3]}',
      '{"type":"Acked","seq":2}',
      '{"type":"BlockMatched","id":0,"block":1}',
      '{"type":"RunMatched","id":1,"count":2,"except":[]}',
      '{"type":"SyncActivated","epoch":1,"seq":3}',
      '{"type":"Acked","seq":3}'
    ])
    expect(await checked(mixed, true)).toMatchObject({ valid: true })
  })

  it("under a version 1 or 2 header, the first run event is an unknown type on its line", async () => {
    for (const v of [1, 2] as const)
      expect(await checked([header(v), ...example.slice(1)].join("\n"))).toMatchObject({
        valid: false,
        line: 10,
        rule: "unknown-type",
        reason: expect.stringContaining("needs trace version 3")
      })
  })

  it("each block of a run keeps the per-block rules", async () => {
    const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, number, string]> = [
      // A match believed before the ack of a record sent before the request.
      [
        "unacked",
        [
          '{"type":"RunCompared","id":0,"blocks":[1,2,3]}',
          '{"type":"RunMatched","id":0,"count":3,"except":[]}'
        ],
        11,
        "comparison-unacked"
      ],
      // Matched twice, or a comparison never decided.
      [
        "twice",
        [
          '{"type":"RunCompared","id":0,"blocks":[1,2,3]}',
          '{"type":"Acked","seq":2}',
          '{"type":"RunMatched","id":0,"count":3,"except":[]}',
          '{"type":"RunMatched","id":0,"count":1,"except":[]}'
        ],
        13,
        "comparison-unknown"
      ],
      [
        "beyond",
        [
          '{"type":"RunCompared","id":0,"blocks":[1,2,3]}',
          '{"type":"Acked","seq":2}',
          '{"type":"RunMatched","id":0,"count":4,"except":[]}'
        ],
        12,
        "comparison-unknown"
      ],
      // Ids count up from 0 across both forms.
      ["id", ['{"type":"RunCompared","id":1,"blocks":[1,2,3]}'], 10, "comparison-id-not-next"],
      ["off the disk", ['{"type":"RunCompared","id":0,"blocks":[1,1024]}'], 10, "block-invalid"],
      // A write after the run re-marks its block: the match does not clear it.
      [
        "write after",
        [
          '{"type":"RunCompared","id":0,"blocks":[1,2,3]}',
          '{"type":"WriteTracked","offset":131072,"length":512}',
          '{"type":"Acked","seq":2}',
          '{"type":"RunMatched","id":0,"count":3,"except":[]}',
          '{"type":"SyncActivated","epoch":1,"seq":3}'
        ],
        14,
        "obligations-left"
      ],
      // An excepted comparison still waits: sync cannot resume without its outcome.
      [
        "excepted waits",
        [
          '{"type":"RunCompared","id":0,"blocks":[1,2,3]}',
          '{"type":"Acked","seq":2}',
          '{"type":"RunMatched","id":0,"count":3,"except":[2]}',
          '{"type":"SyncActivated","epoch":1,"seq":3}'
        ],
        13,
        "comparison-outstanding"
      ],
      // A lost link re-marks a run's blocks: a late match is of nothing.
      [
        "lost",
        [
          '{"type":"RunCompared","id":0,"blocks":[1,2,3]}',
          '{"type":"LinkLost","reason":"connection-lost"}',
          '{"type":"LinkRestored","receiverSeq":1}',
          '{"type":"RunMatched","id":0,"count":3,"except":[]}'
        ],
        13,
        "comparison-unknown"
      ]
    ]
    for (const [what, rest, line, rule] of cases)
      expect(await checked(after9(rest)), what).toMatchObject({ valid: false, line, rule })
    // Before the marker.
    expect(
      await checked(after9(['{"type":"RunCompared","id":0,"blocks":[1]}'], example.slice(0, 7)))
    ).toMatchObject({ valid: false, line: 8, rule: "marker-not-sent" })
  })

  it("a malformed run is a wrong-type at its line (the format's boundaries)", async () => {
    const max = Event.MAX_RUN_BLOCKS
    const upTo = (n: number) => JSON.stringify([...Array(n).keys()])
    const bad = [
      '{"type":"RunCompared","id":0,"blocks":[]}',
      '{"type":"RunCompared","id":0,"blocks":[2,1]}',
      '{"type":"RunCompared","id":0,"blocks":[1,1]}',
      '{"type":"RunCompared","id":0,"blocks":[-1]}',
      '{"type":"RunCompared","id":0,"blocks":[1.5]}',
      '{"type":"RunCompared","id":0,"blocks":"1"}',
      `{"type":"RunCompared","id":0,"blocks":${upTo(max + 1)}}`,
      '{"type":"RunMatched","id":0,"count":0,"except":[]}',
      `{"type":"RunMatched","id":0,"count":${max + 1},"except":[]}`,
      '{"type":"RunMatched","id":2,"count":3,"except":[1]}',
      '{"type":"RunMatched","id":2,"count":3,"except":[5]}',
      '{"type":"RunMatched","id":2,"count":3,"except":[3,3]}',
      '{"type":"RunMatched","id":2,"count":3}'
    ]
    for (const line of bad) {
      const outcome = await checked(after9([line]))
      expect(outcome, line).toMatchObject({ valid: false, line: 10 })
      expect(["wrong-type", "missing-field"], line).toContain((outcome as { rule: string }).rule)
    }
    // The edges that hold: a run of the most blocks, an except of the run's first and last id.
    const decode = (text: string) => Trace.decodeEvent(text, 2, 3)
    expect(decode(`{"type":"RunCompared","id":0,"blocks":${upTo(max)}}`)._tag).toBe("Right")
    expect(decode('{"type":"RunMatched","id":2,"count":3,"except":[2,4]}')._tag).toBe("Right")
    expect(decode(`{"type":"RunMatched","id":0,"count":${max},"except":${upTo(max)}}`)._tag).toBe("Right")
  })

  it("the writer says version 3 only for a trace with a run event", () => {
    const v2: Event.Event = { type: "BlockCompared", id: 0, block: 1 }
    const v3: Event.Event = { type: "RunCompared", id: 0, blocks: [1, 2] }
    expect(Trace.versionFor([{ type: "Acked", seq: 1 }])).toBe(1)
    expect(Trace.versionFor([v2])).toBe(2)
    expect(Trace.versionFor([v2, v3])).toBe(3)
    expect(Trace.versionFor([v3, v2])).toBe(3)
  })
})

describe("the kit with runs", () => {
  it("the reference conforms with runs", () => {
    expect(Conformance.check(Conformance.reference, { runs: true, numRuns: 150 })).toMatchObject({ ok: true })
  })

  it("a filter that matches a run over a mismatched block is caught, with its compareRun", () => {
    interface Box {
      state: State.State
    }
    // Believes every block of a run matched (the run form of clearing a block on a mismatch).
    const matchAll: Conformance.Implementation<Box> = {
      name: "run-clear-on-mismatch",
      start: (config) => ({ state: Decider.initialState(config) }),
      feed: (box, input) =>
        Conformance.reference.feed(
          box,
          input._tag === "RunCompleted" ? { ...input, matched: input.matched.map(() => true) } : input
        )
    }
    const report = Conformance.check(matchAll, { runs: true, numRuns: 500, seed: 13 })
    expect(report.ok).toBe(false)
    if (report.ok) return
    expect(report.invariant).toMatch(/coverage|no-write-lost/)
    expect(report.counterexample.compareRun).toBeGreaterThan(0)
    expect(Conformance.render(report)).toMatch(/compareRun \d/)
  })
})

/**
 * Trace version 2 (checksum-based resync): `BlockCompared`, `BlockMatched` and
 * `BlockMismatched` check under a version 2 header by the rules of docs/conformance.md;
 * under a version 1 header the first of them is an `unknown-type` on its line, exactly
 * what a version 1 checker says. The kit runs comparing scenarios on request and
 * catches a filter that clears a block on a mismatch.
 */
import { describe, expect, it } from "vitest"
import * as CheckTrace from "../../src/conformance/CheckTrace.js"
import * as Conformance from "../../src/conformance/index.js"
import * as Decider from "../../src/domain/Decider.js"
import type * as Event from "../../src/domain/Event.js"
import * as State from "../../src/domain/State.js"
import { cdpSync, ensureBuilt, tempDir } from "./cli.js"
import { afterAll, beforeAll } from "vitest"

const header = (version: 1 | 2) =>
  `{"type":"header","version":${version},"blockSize":65536,"blockCount":1024,"initial":"in-sync"}`

/** The design example with its two blocks compared: block 1 matches, block 2 differs and is sent. */
const example = [
  header(2),
  '{"type":"WriteStreamed","seq":1,"offset":0,"length":4096}',
  '{"type":"Acked","seq":1}',
  '{"type":"LinkLost","reason":"ack-timeout"}',
  '{"type":"ResyncActivated","epoch":1,"reason":"interruption"}',
  '{"type":"WriteTracked","offset":65536,"length":131072}',
  '{"type":"LinkRestored","receiverSeq":1}',
  '{"type":"ResyncBegun","epoch":1,"seq":2}',
  '{"type":"PassStarted","epoch":1,"blocks":2}',
  '{"type":"BlockCompared","seq":3,"block":1}', // line 10
  '{"type":"BlockCompared","seq":4,"block":2}',
  '{"type":"BlockMatched","seq":3,"block":1}',
  '{"type":"BlockMismatched","seq":4,"block":2}',
  '{"type":"BlockSent","seq":5,"block":2}',
  '{"type":"Acked","seq":5}',
  '{"type":"SyncActivated","epoch":1,"seq":6}',
  '{"type":"WriteStreamed","seq":7,"offset":8192,"length":512}',
  '{"type":"Acked","seq":7}'
]

/** Lines 1–9 of the example, then `rest` (one block, block 1, owed unless the write is widened). */
const after9 = (rest: ReadonlyArray<string>, oneBlock = false) =>
  [
    ...example
      .slice(0, 9)
      .map((l) =>
        oneBlock && l.includes("WriteTracked") ? '{"type":"WriteTracked","offset":65536,"length":4096}' : l
      ),
    ...rest
  ].join("\n")

async function* once(text: string): AsyncGenerator<string> {
  yield text
}
const checked = (trace: string, quiescent = false) => CheckTrace.checkChunks(once(trace), { quiescent })

const files = tempDir()
afterAll(() => files.remove())
beforeAll(ensureBuilt, 120_000)

describe("trace version 2", () => {
  it("the example checks valid, quiescent", async () => {
    expect(await checked(example.join("\n"), true)).toMatchObject({
      valid: true,
      summary: { events: 17, epochs: 1, modeChanges: 2, finalMode: "sync" },
      lines: 18
    })
  })

  it("under a version 1 header the first new event is unknown-type on its line (in-process and the binary)", async () => {
    const v1 = [header(1), ...example.slice(1)].join("\n")
    const outcome = await checked(v1)
    expect(outcome).toMatchObject({ valid: false, line: 10, rule: "unknown-type" })
    expect(!outcome.valid && outcome.reason).toMatch(/"BlockCompared" needs trace version 2.*version 1/)
    const run = await cdpSync(["check-trace", files.write("v1.jsonl", v1), "--json"])
    expect(run.code).toBe(1)
    expect(JSON.parse(run.stdout)).toMatchObject({ valid: false, line: 10, rule: "unknown-type" })
    const ok = await cdpSync(["check-trace", files.write("v2.jsonl", example.join("\n")), "--quiescent"])
    expect(ok.code).toBe(0)
    expect(ok.stdout).toMatch(/^valid: 17 events/)
  }, 60_000)

  const cases: ReadonlyArray<readonly [string, string, number, string]> = [
    [
      "a mismatch makes the block owed again: sync without sending it",
      after9([
        '{"type":"BlockCompared","seq":3,"block":1}',
        '{"type":"BlockCompared","seq":4,"block":2}',
        '{"type":"BlockMatched","seq":3,"block":1}',
        '{"type":"BlockMismatched","seq":4,"block":2}',
        '{"type":"Acked","seq":4}',
        '{"type":"SyncActivated","epoch":1,"seq":5}'
      ]),
      15,
      "obligations-left"
    ],
    [
      "sync while a comparison has no outcome",
      after9([
        '{"type":"BlockCompared","seq":3,"block":1}',
        '{"type":"BlockCompared","seq":4,"block":2}',
        '{"type":"BlockMatched","seq":3,"block":1}',
        '{"type":"Acked","seq":4}',
        '{"type":"SyncActivated","epoch":1,"seq":5}'
      ]),
      14,
      "comparison-outstanding"
    ],
    [
      "sync while a matched comparison is unacked",
      after9(
        [
          '{"type":"BlockCompared","seq":3,"block":1}',
          '{"type":"BlockMatched","seq":3,"block":1}',
          '{"type":"SyncActivated","epoch":1,"seq":4}'
        ],
        true
      ),
      12,
      "comparison-unacked"
    ],
    [
      "a match on an unacked request proves nothing once the link is lost",
      after9(
        [
          '{"type":"BlockCompared","seq":3,"block":1}',
          '{"type":"BlockMatched","seq":3,"block":1}',
          '{"type":"LinkLost","reason":"connection-lost"}',
          '{"type":"LinkRestored","receiverSeq":2}',
          '{"type":"ResyncBegun","epoch":1,"seq":4}',
          '{"type":"Acked","seq":4}',
          '{"type":"SyncActivated","epoch":1,"seq":5}'
        ],
        true
      ),
      16,
      "obligations-left"
    ],
    [
      "an outcome for a comparison never decided",
      after9(['{"type":"BlockCompared","seq":3,"block":1}', '{"type":"BlockMatched","seq":9,"block":1}']),
      11,
      "comparison-unknown"
    ],
    [
      "an outcome naming another block",
      after9(['{"type":"BlockCompared","seq":3,"block":1}', '{"type":"BlockMismatched","seq":3,"block":7}']),
      11,
      "comparison-unknown"
    ],
    [
      "an outcome after a gap re-marked the comparison",
      after9([
        '{"type":"BlockCompared","seq":3,"block":1}',
        '{"type":"BlockSent","seq":4,"block":2}',
        '{"type":"DiscontinuityReported","expected":3}',
        '{"type":"BlockMatched","seq":3,"block":1}'
      ]),
      13,
      "comparison-unknown"
    ],
    [
      "an outcome while the link is down",
      after9([
        '{"type":"BlockCompared","seq":3,"block":1}',
        '{"type":"LinkLost","reason":"ack-timeout"}',
        '{"type":"BlockMatched","seq":3,"block":1}'
      ]),
      12,
      "link-down"
    ],
    [
      "a comparison before the resync-begin marker",
      [...example.slice(0, 7), '{"type":"BlockCompared","seq":2,"block":1}'].join("\n"),
      8,
      "marker-not-sent"
    ],
    [
      "a comparison in sync mode",
      [header(2), '{"type":"BlockCompared","seq":1,"block":1}'].join("\n"),
      2,
      "mode-not-resync"
    ],
    [
      "a comparison that skips a seq",
      after9(['{"type":"BlockCompared","seq":4,"block":1}']),
      10,
      "seq-not-next"
    ],
    [
      "a comparison of a block off the disk",
      after9(['{"type":"BlockCompared","seq":3,"block":1024}']),
      10,
      "block-invalid"
    ]
  ]
  for (const [what, trace, line, rule] of cases)
    it(what, async () => {
      expect(await checked(trace)).toMatchObject({ valid: false, line, rule })
    })

  it("a comparison's picture of the model names the comparisons waiting and unacked", async () => {
    const outcome = await checked(cases[1]![1])
    expect(!outcome.valid && outcome.state).toMatchObject({ comparisonsUnacked: 0, comparing: [[4, 2]] })
    expect(CheckTrace.render(outcome)).toMatch(/comparisons: 0 unacked, 1 waiting \(seq 4: block 2\)/)
  })
})

describe("the kit with comparisons", () => {
  it("the reference conforms, and its traces are version 2", () => {
    expect(Conformance.check(Conformance.reference, { comparisons: true, numRuns: 150 })).toMatchObject({
      ok: true
    })
  })

  it("a filter that clears a block on a mismatch is caught, and check-trace names the rule on its trace", () => {
    interface Box {
      state: State.State
    }
    const clearOnMismatch: Conformance.Implementation<Box> = {
      name: "clear-on-mismatch",
      start: (config) => ({ state: Decider.initialState(config) }),
      feed: (box, input) => {
        const pending =
          input._tag === "ComparisonCompleted" ? State.comparisonAt(box.state, input.seq) : undefined
        if (input._tag === "ComparisonCompleted" && !input.matched && pending?.block === input.block) {
          // Records the mismatch and forgets the block: never owed, never sent.
          box.state = State.make({
            ...box.state,
            comparing: box.state.comparing.filter((c) => c.seq !== input.seq)
          })
          const mismatched: Event.Event = { type: "BlockMismatched", seq: input.seq, block: input.block }
          return [mismatched]
        }
        return Conformance.reference.feed(box, input)
      }
    }
    const report = Conformance.check(clearOnMismatch, { comparisons: true, numRuns: 500, seed: 18 })
    expect(report.ok).toBe(false)
    if (report.ok) return
    expect(report.invariant).toMatch(/coverage|no-write-lost|sync-only-when-clean|legality/)
    expect(report.counterexample.compareFrom).toBeGreaterThan(0)
    expect(report.trace.split("\n")[0]).toContain('"version":2')
    expect(report.verdict?.rule).toBe("obligations-left")
    expect(Conformance.render(report)).toMatch(/compareFrom \d/)
  })
})

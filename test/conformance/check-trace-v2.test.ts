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
  '{"type":"BlockCompared","id":0,"block":1}', // line 10
  '{"type":"BlockCompared","id":1,"block":2}',
  '{"type":"Acked","seq":2}',
  '{"type":"BlockMatched","id":0,"block":1}',
  '{"type":"BlockMismatched","id":1,"block":2}',
  '{"type":"BlockSent","seq":3,"block":2}',
  '{"type":"Acked","seq":3}',
  '{"type":"SyncActivated","epoch":1,"seq":4}',
  '{"type":"WriteStreamed","seq":5,"offset":8192,"length":512}',
  '{"type":"Acked","seq":5}',
  // An online verify finds block 3 differs: resync, the block sent, back to sync.
  '{"type":"ResyncActivated","epoch":2,"reason":"verify"}', // line 20
  '{"type":"BlockDiffered","block":3}',
  '{"type":"ResyncBegun","epoch":2,"seq":6}',
  '{"type":"PassStarted","epoch":2,"blocks":1}',
  '{"type":"BlockSent","seq":7,"block":3}',
  '{"type":"Acked","seq":7}',
  '{"type":"SyncActivated","epoch":2,"seq":8}',
  '{"type":"Acked","seq":8}'
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
      summary: { events: 26, epochs: 2, modeChanges: 4, finalMode: "sync" },
      lines: 27
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
    expect(ok.stdout).toMatch(/^valid: 26 events/)
  }, 60_000)

  const cases: ReadonlyArray<readonly [string, string, number, string]> = [
    [
      "a mismatch makes the block owed again: sync without sending it",
      after9([
        '{"type":"BlockCompared","id":0,"block":1}',
        '{"type":"BlockCompared","id":1,"block":2}',
        '{"type":"Acked","seq":2}',
        '{"type":"BlockMatched","id":0,"block":1}',
        '{"type":"BlockMismatched","id":1,"block":2}',
        '{"type":"SyncActivated","epoch":1,"seq":3}'
      ]),
      15,
      "obligations-left"
    ],
    [
      "sync while a comparison has no outcome",
      after9([
        '{"type":"BlockCompared","id":0,"block":1}',
        '{"type":"BlockCompared","id":1,"block":2}',
        '{"type":"Acked","seq":2}',
        '{"type":"BlockMatched","id":0,"block":1}',
        '{"type":"SyncActivated","epoch":1,"seq":3}'
      ]),
      14,
      "comparison-outstanding"
    ],
    [
      "a match before the records sent ahead of the request are acked",
      after9(['{"type":"BlockCompared","id":0,"block":1}', '{"type":"BlockMatched","id":0,"block":1}'], true),
      11,
      "comparison-unacked"
    ],
    [
      "a match waiting for its outcome proves nothing once the link is lost",
      after9(
        [
          '{"type":"BlockCompared","id":0,"block":1}',
          '{"type":"LinkLost","reason":"connection-lost"}',
          '{"type":"LinkRestored","receiverSeq":2}',
          '{"type":"ResyncBegun","epoch":1,"seq":3}',
          '{"type":"Acked","seq":3}',
          '{"type":"SyncActivated","epoch":1,"seq":4}'
        ],
        true
      ),
      15,
      "obligations-left"
    ],
    [
      "an outcome for a comparison never decided",
      after9(['{"type":"BlockCompared","id":0,"block":1}', '{"type":"BlockMismatched","id":9,"block":1}']),
      11,
      "comparison-unknown"
    ],
    [
      "an outcome naming another block",
      after9(['{"type":"BlockCompared","id":0,"block":1}', '{"type":"BlockMismatched","id":0,"block":7}']),
      11,
      "comparison-unknown"
    ],
    [
      "an outcome after a gap re-marked the comparison",
      after9([
        '{"type":"BlockSent","seq":3,"block":2}',
        '{"type":"BlockCompared","id":0,"block":1}',
        '{"type":"DiscontinuityReported","expected":3}',
        '{"type":"BlockMatched","id":0,"block":1}'
      ]),
      13,
      "comparison-unknown"
    ],
    [
      "an outcome while the link is down",
      after9([
        '{"type":"BlockCompared","id":0,"block":1}',
        '{"type":"LinkLost","reason":"ack-timeout"}',
        '{"type":"BlockMatched","id":0,"block":1}'
      ]),
      12,
      "link-down"
    ],
    [
      "a comparison before the resync-begin marker",
      [...example.slice(0, 7), '{"type":"BlockCompared","id":0,"block":1}'].join("\n"),
      8,
      "marker-not-sent"
    ],
    [
      "a comparison in sync mode",
      [header(2), '{"type":"BlockCompared","id":0,"block":1}'].join("\n"),
      2,
      "mode-not-resync"
    ],
    [
      "a comparison id that does not count up",
      after9(['{"type":"BlockCompared","id":0,"block":1}', '{"type":"BlockCompared","id":2,"block":2}']),
      11,
      "comparison-id-not-next"
    ],
    [
      "a comparison of a block off the disk",
      after9(['{"type":"BlockCompared","id":0,"block":1024}']),
      10,
      "block-invalid"
    ],
    [
      "a verify difference in sync mode, without a resync",
      [header(2), '{"type":"BlockDiffered","block":3}'].join("\n"),
      2,
      "mode-not-resync"
    ],
    [
      "a verify difference marks the block: sync without sending it",
      [
        header(2),
        '{"type":"ResyncActivated","epoch":1,"reason":"verify"}',
        '{"type":"BlockDiffered","block":3}',
        '{"type":"ResyncBegun","epoch":1,"seq":1}',
        '{"type":"SyncActivated","epoch":1,"seq":2}'
      ].join("\n"),
      5,
      "obligations-left"
    ]
  ]
  for (const [what, trace, line, rule] of cases)
    it(what, async () => {
      expect(await checked(trace)).toMatchObject({ valid: false, line, rule })
    })

  it("a comparison's picture of the model names the comparisons waiting", async () => {
    const outcome = await checked(cases[1]![1])
    expect(!outcome.valid && outcome.state).toMatchObject({ compared: 2, comparing: [[1, 2, 2]] })
    expect(CheckTrace.render(outcome)).toMatch(/comparisons: 2 decided, 1 waiting \(1: block 2 after seq 2\)/)
  })

  it("the verify reason under a version 1 header is refused on its line", async () => {
    const v1 = [header(1), '{"type":"ResyncActivated","epoch":1,"reason":"verify"}'].join("\n")
    expect(await checked(v1)).toMatchObject({ valid: false, line: 2 })
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
          input._tag === "ComparisonCompleted" ? State.comparisonAt(box.state, input.id) : undefined
        if (input._tag === "ComparisonCompleted" && !input.matched && pending?.block === input.block) {
          // Records the mismatch and forgets the block: never owed, never sent.
          box.state = State.make({
            ...box.state,
            comparing: box.state.comparing.filter((c) => c.id !== input.id)
          })
          const mismatched: Event.Event = { type: "BlockMismatched", id: input.id, block: input.block }
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

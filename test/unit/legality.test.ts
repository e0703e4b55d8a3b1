import { Either } from "effect"
import { describe, expect, it } from "vitest"
import * as Config from "../../src/domain/Config.js"
import type * as Event from "../../src/domain/Event.js"
import * as Legality from "../../src/domain/Legality.js"
import * as State from "../../src/domain/State.js"
import * as Trace from "../../src/domain/Trace.js"
import { designExample } from "../support/fixtures.js"

const decodeAll = (text: string) => {
  const decoder = new Trace.Decoder()
  const out = [...decoder.push(text), ...decoder.end()].map(Either.getOrThrow)
  const header = out[0]!
  if (header._tag !== "Header") throw new Error("no header")
  const events = out.flatMap((d) => (d._tag === "Event" ? [d.event] : []))
  const config = Either.getOrThrow(
    Config.make({
      blockSize: header.header.blockSize,
      blockCount: header.header.blockCount,
      initial: header.header.initial
    })
  )
  return { config, events }
}

const firstViolation = (
  events: ReadonlyArray<Event.Event>,
  initial: Config.Initial = "in-sync",
  quiescent = false
) => {
  const config = Either.getOrThrow(Config.make({ blockSize: 65536, blockCount: 16, initial }))
  return Legality.checkAll(State.initial(config), events, { quiescent })
}

const ok = (events: ReadonlyArray<Event.Event>, initial: Config.Initial = "in-sync") =>
  expect(firstViolation(events, initial)).toBeUndefined()

const broken = (
  events: ReadonlyArray<Event.Event>,
  rule: Legality.Rule,
  index: number,
  initial: Config.Initial = "in-sync"
) => {
  const found = firstViolation(events, initial)
  expect(found?.violation.rule).toBe(rule)
  expect(found?.index).toBe(index)
}

const W = (seq: number, offset = 0, length = 4096): Event.Event => ({
  type: "WriteStreamed",
  seq,
  offset,
  length
})
const T = (offset = 0, length = 4096): Event.Event => ({ type: "WriteTracked", offset, length })
const A = (seq: number): Event.Event => ({ type: "Acked", seq })
const lost: Event.Event = { type: "LinkLost", reason: "connection-lost" }
const R = (epoch: number, reason: Event.ResyncReason): Event.Event => ({
  type: "ResyncActivated",
  epoch,
  reason
})
const up = (receiverSeq: number): Event.Event => ({ type: "LinkRestored", receiverSeq })
const begin = (epoch: number, seq: number): Event.Event => ({ type: "ResyncBegun", epoch, seq })
const B = (seq: number, block: number): Event.Event => ({ type: "BlockSent", seq, block })
const S = (epoch: number, seq: number): Event.Event => ({ type: "SyncActivated", epoch, seq })

describe("legality rules (design §5)", () => {
  it("accepts the design's example trace", () => {
    const { config, events } = decodeAll(designExample)
    expect(events).toHaveLength(13)
    expect(Legality.checkAll(State.initial(config), events)).toBeUndefined()
  })

  it("accepts a full-sync start that sends every block", () => {
    const blocks = Array.from({ length: 16 }, (_, b) => B(b + 2, b))
    ok([begin(1, 1), ...blocks, A(17), S(1, 18), W(19)], "full-sync")
    const missingOne = Array.from({ length: 15 }, (_, i) => B(i + 2, i + 1))
    broken([begin(1, 1), ...missingOne, A(16), S(1, 17)], "obligations-left", 17, "full-sync")
  })

  it("accepts redundant sends and rejects missing ones", () => {
    ok([R(1, "congestion"), T(0, 4096), T(0, 4096), begin(1, 1), B(2, 0), B(3, 0), B(4, 5), A(4), S(1, 5)])
    broken([R(1, "congestion"), T(0, 2 * 65536), begin(1, 1), B(2, 0), A(2), S(1, 3)], "obligations-left", 5)
  })

  it("write rules: streamed only in sync, tracked only in resync, valid ranges and seqs", () => {
    broken([W(2)], "seq-not-next", 0)
    broken([T()], "mode-not-resync", 0)
    broken([R(1, "congestion"), W(1)], "mode-not-sync", 1)
    broken([W(1, 16 * 65536 - 512, 1024)], "range-invalid", 0)
    broken([W(1, 0, 0)], "range-invalid", 0)
  })

  it("ack rules: no regress, no ack of an unsent record, not while down", () => {
    broken([W(1), W(2), A(2), A(1)], "ack-regress", 3)
    broken([W(1), A(2)], "ack-unsent", 1)
    broken([W(1), lost, R(1, "interruption"), A(1)], "link-down", 3)
  })

  it("forced events: a loss in sync must be followed by ResyncActivated", () => {
    broken([W(1), lost, T()], "owed-resync", 2)
    broken([W(1), lost, R(1, "congestion")], "owed-resync", 2)
    broken([W(1), { type: "DiscontinuityReported", expected: 1 }, R(1, "interruption")], "owed-resync", 2)
    ok([W(1), { type: "DiscontinuityReported", expected: 1 }, R(1, "discontinuity")])
    expect(firstViolation([W(1), lost])?.violation.rule).toBe("owed-at-end")
  })

  it("a receiver rollback must activate a full resync", () => {
    const before = [W(1), W(2), A(2), lost, R(1, "interruption")]
    broken([...before, up(1), begin(1, 3)], "owed-resync", 6)
    const full = Array.from({ length: 16 }, (_, b) => B(b + 4, b))
    ok([...before, up(1), R(2, "receiver-rollback"), begin(2, 3), ...full, A(19), S(2, 20)])
    broken(
      [...before, up(1), R(2, "receiver-rollback"), begin(2, 3), ...full.slice(0, 15), A(18), S(2, 19)],
      "obligations-left",
      24
    )
  })

  it("marker rules: begin once per link session, before any block, in the current epoch", () => {
    const resync = [R(1, "congestion"), T()]
    broken([...resync, B(1, 0)], "marker-not-sent", 2)
    broken([...resync, begin(2, 1)], "epoch-not-current", 2)
    broken([...resync, begin(1, 1), begin(1, 2)], "marker-not-needed", 3)
    broken([...resync, begin(1, 1), B(2, 99)], "block-invalid", 3)
    ok([...resync, begin(1, 1), lost, up(0), begin(1, 2), B(3, 0), A(3), S(1, 4)])
    broken([...resync, begin(1, 1), lost, up(0), B(2, 0)], "marker-not-sent", 5)
  })

  it("sync waits for every block record's ack", () => {
    broken([R(1, "congestion"), T(), begin(1, 1), B(2, 0), S(1, 3)], "block-record-unacked", 4)
    ok([R(1, "congestion"), T(), begin(1, 1), B(2, 0), A(2), S(1, 3)])
  })

  it("link rules", () => {
    broken([lost, R(1, "interruption"), lost], "link-down", 2)
    broken([up(0)], "link-up", 0)
    broken([W(1), lost, R(1, "interruption"), up(5)], "receiver-ahead", 3)
    broken([W(1), { type: "DiscontinuityReported", expected: 2 }], "gap-out-of-range", 1)
    broken([R(2, "congestion")], "epoch-not-next", 0)
  })

  it("--quiescent: the trace must end in sync, link up, nothing in flight", () => {
    expect(firstViolation([W(1)], "in-sync", true)?.violation.rule).toBe("not-quiescent")
    expect(firstViolation([W(1), A(1)], "in-sync", true)).toBeUndefined()
  })

  it("a violation carries the model state that explains it", () => {
    const found = firstViolation([R(1, "congestion"), T(0, 3 * 65536), begin(1, 1), B(2, 1), A(2), S(1, 3)])
    expect(found?.violation.rule).toBe("obligations-left")
    expect(found?.violation.context).toMatchObject({ obligations: 2, obligationSample: [0, 2] })
  })
})

/**
 * Each deliberately broken filter must be caught by the property that guards the
 * rule it breaks. A property that cannot fail proves nothing: these tests fail if
 * a mutant slips through.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import type { Variant } from "../../src/conformance/internal/mutants.js"
import { type Filter, type InvariantName, reference } from "../../src/conformance/Simulation.js"
import * as Mutants from "../support/mutants.js"
import { comparingInvariantHolds, invariantHolds } from "../support/properties.js"

/** fast-check searches for a counterexample; the mutant must not survive this many runs. */
const budget = { numRuns: 5000 }

const caught = <S>(filter: Filter<S>, invariants: ReadonlyArray<InvariantName>) => {
  const details = fc.check(invariantHolds(filter, invariants), budget)
  expect(details.failed, `${filter.name} survived ${details.numRuns} runs of ${invariants.join(", ")}`).toBe(
    true
  )
  return String(details.errorInstance)
}

describe("mutants are caught", () => {
  it("clearing a bit only when the read completes loses a write racing the read", () => {
    expect(caught(Mutants.clearOnReadCompletion, ["no-write-lost"])).toMatch(/no-write-lost/)
    expect(caught(Mutants.clearOnReadCompletion, ["coverage"])).toMatch(/coverage/)
    expect(caught(Mutants.clearOnReadCompletion, ["legality"])).toMatch(/obligations-left/)
  })

  it("not marking in-flight records dirty on link loss breaks coverage and loses writes", () => {
    expect(caught(Mutants.noRemarkOnLinkLoss, ["coverage"])).toMatch(/coverage/)
    expect(caught(Mutants.noRemarkOnLinkLoss, ["no-write-lost"])).toMatch(/no-write-lost/)
    expect(caught(Mutants.noRemarkOnLinkLoss, ["legality"])).toMatch(/obligations-left/)
  })

  it("resuming sync with a block record unacked breaks sync-only-when-clean", () => {
    expect(caught(Mutants.syncWithBlockUnacked, ["sync-only-when-clean"])).toMatch(/block record/)
    expect(caught(Mutants.syncWithBlockUnacked, ["legality"])).toMatch(/block-record-unacked/)
  })

  it("streaming a write while in resync breaks sync-only-when-clean", () => {
    expect(caught(Mutants.streamDuringResync, ["sync-only-when-clean"])).toMatch(/streamed live in resync/)
    expect(caught(Mutants.streamDuringResync, ["legality"])).toMatch(/mode-not-sync/)
  })

  it("letting the watermark go backwards breaks sequence", () => {
    expect(caught(Mutants.watermarkRegression, ["sequence"])).toMatch(/watermark went back/)
    expect(caught(Mutants.watermarkRegression, ["legality"])).toMatch(/ack-regress/)
  })

  it("skipping the resync after a receiver rollback breaks coverage and loses writes", () => {
    expect(caught(Mutants.skipRollbackResync, ["coverage"])).toMatch(/coverage/)
    expect(caught(Mutants.skipRollbackResync, ["legality"])).toMatch(/owed-resync/)
  })
})

/** The same with comparisons (trace version 2): a broken filter, or the reference in a broken world. */
const caughtComparing = <S>(
  filter: Filter<S>,
  invariants: ReadonlyArray<InvariantName>,
  variant?: Variant,
  runs = false
) => {
  const details = fc.check(comparingInvariantHolds(filter, invariants, variant, runs), budget)
  expect(
    details.failed,
    `${filter.name}${variant === undefined ? "" : ` in a ${variant} world`} survived ${details.numRuns} runs of ${invariants.join(", ")}`
  ).toBe(true)
  return String(details.errorInstance)
}

describe("comparison mutants are caught (checksum-based resync)", () => {
  it("(1) a match believed against a checksum read before a later write completed loses that write", () => {
    // The program hashes the pass ahead; a write between that read and the comparison is lost.
    expect(caughtComparing(reference, ["no-write-lost"], "hash-ahead")).toMatch(/no-write-lost/)
    expect(caughtComparing(reference, ["coverage"], "hash-ahead")).toMatch(/coverage/)
    // The filter lets a match clear the mark of a write that completed after the read.
    expect(caughtComparing(Mutants.matchClearsLaterWrites, ["no-write-lost"])).toMatch(/no-write-lost/)
    expect(caughtComparing(Mutants.matchClearsLaterWrites, ["coverage"])).toMatch(/coverage/)
    expect(caughtComparing(Mutants.matchClearsLaterWrites, ["legality"])).toMatch(/obligations-left/)
  })

  it("(2) a checksum of the wrong block is believed and loses a difference", () => {
    expect(caughtComparing(reference, ["no-write-lost"], "wrong-block")).toMatch(/no-write-lost/)
    expect(caughtComparing(reference, ["coverage"], "wrong-block")).toMatch(/coverage/)
  })

  it("(2) a checksum of a stale receiver version (missing a record sent before the request) is believed", () => {
    expect(caughtComparing(reference, ["no-write-lost"], "stale-version")).toMatch(/no-write-lost/)
    expect(caughtComparing(reference, ["coverage"], "stale-version")).toMatch(/coverage/)
  })

  it("(3) clearing a block on a mismatch leaves the difference on the replica", () => {
    expect(caughtComparing(Mutants.clearOnMismatch, ["no-write-lost"])).toMatch(/no-write-lost/)
    expect(caughtComparing(Mutants.clearOnMismatch, ["coverage"])).toMatch(/coverage/)
    expect(caughtComparing(Mutants.clearOnMismatch, ["legality"])).toMatch(/obligations-left/)
  })
})

describe("comparison mutants are caught in the run form (trace version 3)", () => {
  const caughtRuns = <S>(filter: Filter<S>, invariants: ReadonlyArray<InvariantName>, variant?: Variant) =>
    caughtComparing(filter, invariants, variant, true)

  it("(1) a run's match against checksums read before a later write completed loses that write", () => {
    expect(caughtRuns(reference, ["no-write-lost"], "hash-ahead")).toMatch(/no-write-lost/)
    expect(caughtRuns(reference, ["coverage"], "hash-ahead")).toMatch(/coverage/)
    expect(caughtRuns(Mutants.runMatchClearsLaterWrites, ["no-write-lost"])).toMatch(/no-write-lost/)
    expect(caughtRuns(Mutants.runMatchClearsLaterWrites, ["coverage"])).toMatch(/coverage/)
    expect(caughtRuns(Mutants.runMatchClearsLaterWrites, ["legality"])).toMatch(/obligations-left/)
  })

  it("(2) a run's checksums of the wrong blocks (a shifted bitmap, or the receiver one block off) are believed", () => {
    expect(caughtRuns(Mutants.runMatchShifted, ["no-write-lost"])).toMatch(/no-write-lost/)
    expect(caughtRuns(Mutants.runMatchShifted, ["coverage"])).toMatch(/coverage/)
    expect(caughtRuns(reference, ["no-write-lost"], "wrong-block")).toMatch(/no-write-lost/)
    expect(caughtRuns(reference, ["coverage"], "wrong-block")).toMatch(/coverage/)
  })

  it("(2) a run's checksums of a stale receiver version are believed", () => {
    expect(caughtRuns(reference, ["no-write-lost"], "stale-version")).toMatch(/no-write-lost/)
    expect(caughtRuns(reference, ["coverage"], "stale-version")).toMatch(/coverage/)
  })

  it("(3) a run matched over a block whose checksums differ leaves the difference on the replica", () => {
    expect(caughtRuns(Mutants.runClearOnMismatch, ["no-write-lost"])).toMatch(/no-write-lost/)
    expect(caughtRuns(Mutants.runClearOnMismatch, ["coverage"])).toMatch(/coverage/)
  })
})

/**
 * The log receiver's sequencing rules, pure (design §6): which records it accepts,
 * which are duplicates, when it reports a gap, and where recovery points fall.
 * Shared by the simulated world, the in-memory receiver and the TCP service.
 */

export type RecordKind = "write" | "block" | "resync-begin" | "resync-end"

export interface ReceiverState {
  /** Seq of the next record the receiver will accept. */
  readonly expected: number
  /** After a gap: everything is rejected until a resync-begin marker. */
  readonly rejecting: boolean
  /** Between a resync-begin and its resync-end the image is inconsistent: no recovery point. */
  readonly inResync: boolean
}

export type Verdict =
  /** Apply it (and append it to the log). */
  | { readonly _tag: "Accept"; readonly recoveryPoint: boolean }
  /** Already received: ack again, do not apply twice. */
  | { readonly _tag: "Duplicate" }
  /** A gap: reply `gap(expected)` and reject until a resync-begin marker. */
  | { readonly _tag: "Gap"; readonly expected: number }
  /** Rejected while waiting for a resync-begin marker after a gap. */
  | { readonly _tag: "Rejected" }

/** A receiver whose log ends at `durableSeq` (0 for an empty log). */
export const initial = (durableSeq: number, inResync = false): ReceiverState => ({
  expected: durableSeq + 1,
  rejecting: false,
  inResync
})

// Verdicts are values: made once, not per record (the receiver's hot path).
const acceptPoint: Verdict = { _tag: "Accept", recoveryPoint: true }
const acceptNoPoint: Verdict = { _tag: "Accept", recoveryPoint: false }
const accept = (recoveryPoint: boolean): Verdict => (recoveryPoint ? acceptPoint : acceptNoPoint)
const duplicate: Verdict = { _tag: "Duplicate" }
const rejected: Verdict = { _tag: "Rejected" }

/**
 * The receiver's verdict on a record. A resync-begin marker carries `base`: the
 * filter relies on the receiver holding every record through `base` and has
 * re-marked everything it sent after that and before the marker. So a marker may
 * skip seqs (after a reconnect or a gap) only when the receiver holds through
 * `base`; otherwise records it still counts on were lost, and that is a gap.
 */
export const receive = (
  state: ReceiverState,
  seq: number,
  kind: RecordKind,
  base: number = seq - 1
): { readonly state: ReceiverState; readonly verdict: Verdict } => {
  if (seq < state.expected) return { state, verdict: duplicate }
  if (kind === "resync-begin" && base <= state.expected - 1)
    return { state: { expected: seq + 1, rejecting: false, inResync: true }, verdict: accept(false) }
  if (state.rejecting) return { state, verdict: rejected }
  if (seq > state.expected)
    return {
      state: { ...state, rejecting: true },
      verdict: { _tag: "Gap", expected: state.expected }
    }
  switch (kind) {
    case "write":
      return { state: { ...state, expected: seq + 1 }, verdict: accept(!state.inResync) }
    case "block":
      return { state: { ...state, expected: seq + 1 }, verdict: accept(false) }
    case "resync-begin":
    case "resync-end":
      return {
        state: { expected: seq + 1, rejecting: false, inResync: kind === "resync-begin" },
        verdict: accept(kind === "resync-end")
      }
  }
}

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
  const verdict = verdictOn(state, seq, kind, base)
  return { state: after(state, seq, kind, verdict), verdict }
}

/** `receive`'s verdict alone (made once per kind of verdict: only a gap's is a new value). */
export const verdictOn = (
  state: ReceiverState,
  seq: number,
  kind: RecordKind,
  base: number = seq - 1
): Verdict => {
  if (seq < state.expected) return duplicate
  if (kind === "resync-begin" && base <= state.expected - 1) return acceptNoPoint
  if (state.rejecting) return rejected
  if (seq > state.expected) return { _tag: "Gap", expected: state.expected }
  return kind === "write" ? accept(!state.inResync) : accept(kind === "resync-end")
}

/**
 * `receive`'s next state, after `verdictOn(state, seq, kind, …)` gave `verdict`: the receiver's
 * hot path takes the two apart, so a record costs one new state, not a state and a pair.
 */
export const after = (
  state: ReceiverState,
  seq: number,
  kind: RecordKind,
  verdict: Verdict
): ReceiverState => {
  switch (verdict._tag) {
    case "Duplicate":
    case "Rejected":
      return state
    case "Gap":
      return { expected: state.expected, rejecting: true, inResync: state.inResync }
    case "Accept":
      // Written out (no spread): one object shape for every state.
      return kind === "write" || kind === "block"
        ? { expected: seq + 1, rejecting: false, inResync: state.inResync }
        : { expected: seq + 1, rejecting: false, inResync: kind === "resync-begin" }
  }
}

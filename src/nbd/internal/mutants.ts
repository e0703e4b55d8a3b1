/**
 * Deliberately broken variants of the NBD server, for the test suite's mutants only:
 * each breaks one promise the server makes to a guest, and the test that guards it must
 * catch it. Not part of the public API: `Nbd.ts` does not export this module, and
 * `serve` reads the variants from the context with their default (every one off).
 */
import { Context, Layer } from "effect"

export interface Mutants {
  /** FLUSH and FUA answer once the disk is flushed, without waiting for the journal (`Replicator.flush`). */
  readonly flushSkipsJournal: boolean
  /** A WRITE is answered as soon as its payload is read, before the replicator has written it. */
  readonly answerWritesEarly: boolean
  /**
   * A pipelined WRITE joins the batch without the server's checks, and a batch the
   * replicator refuses is answered with the error whole: one bad request fails its neighbours.
   */
  readonly batchUnchecked: boolean
  /** A batch goes to the replicator last request first: overlapping writes land out of order. */
  readonly batchReversed: boolean
  /**
   * A finished connection leaves what the client sent after its last request unread: its
   * socket never sees the client's end and holds a connection slot until destroyed.
   */
  readonly keepsUnreadInput: boolean
}

export const none: Mutants = {
  flushSkipsJournal: false,
  answerWritesEarly: false,
  batchUnchecked: false,
  batchReversed: false,
  keepsUnreadInput: false
}

export class NbdMutants extends Context.Reference<NbdMutants>()("cdp-sync/NbdMutants", {
  defaultValue: (): Mutants => none
}) {}

/** Turns on the variants named, for whatever is built with this layer. */
export const layer = (on: Partial<Mutants>): Layer.Layer<NbdMutants> =>
  Layer.succeedContext(NbdMutants.context({ ...none, ...on }))

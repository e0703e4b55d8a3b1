/**
 * Deliberately broken variants of the replicator, for the test suite's mutants only:
 * each breaks one rule, and the property or crash test that guards the rule must
 * catch it. Not part of the public API: no entry point exports this module, nothing in
 * `Replicator.Options` mentions it, and `make` reads it from the context with its
 * default (every variant off). A test turns variants on with `layer` (or
 * `Effect.provideService(ReplicatorMutants, …)`); a child process under test does so
 * from its own arguments.
 */
import { Context, Layer } from "effect"

export interface Mutants {
  /** Closing does not wait for the writes the disk took to be journaled. */
  readonly skipDrainOnClose: boolean
  /**
   * Overlapping guest writes are not serialised, so a disk may apply them in one order
   * and report them in the other.
   */
  readonly skipOverlapGate: boolean
  /**
   * A guest-data copy goes back to the pool as soon as the disk has it, while its
   * record may still wait to be sent.
   */
  readonly releaseCopiesEarly: boolean
  /**
   * A guest write to an extent the activity log does not hold asks for it but goes to
   * the disk without waiting for the log's commit.
   */
  readonly skipActivityWait: boolean
  /** The activity log retires extents whose writes are not yet journaled. */
  readonly retireBusyExtents: boolean
  /**
   * Every start is taken as clean, whatever the journal says: the replicator trusts
   * the caller's word, as `uncleanStart` (default false) once did. After a kill the
   * writes that reached the disk but not the journal are never resent.
   */
  readonly assumeCleanStart: boolean
  /** Metrics go to the untagged series every replicator of the process shares (no `disk` tag). */
  readonly shareMetricSeries: boolean
  /**
   * `Status` takes every acked record for a recovery point, block records of a drain
   * included: it would name a seq restore refuses.
   */
  readonly everyAckAPoint: boolean
  /**
   * Compared blocks are read and hashed (and their requests queued) before their
   * `BlockCompared` events are journaled, not after.
   */
  readonly readComparedEarly: boolean
  /**
   * A checksum reply's digests are compared with the disk's whatever algorithm code it
   * echoes: a receiver from before the code answers SHA-256 to a BLAKE3 request, and every
   * block then mismatches (and is sent), run after run, with no fall back to SHA-256.
   */
  readonly ignoreDigestEcho: boolean
}

/** The replicator as shipped: every variant off. */
export const none: Mutants = {
  skipDrainOnClose: false,
  skipOverlapGate: false,
  releaseCopiesEarly: false,
  skipActivityWait: false,
  retireBusyExtents: false,
  assumeCleanStart: false,
  shareMetricSeries: false,
  everyAckAPoint: false,
  readComparedEarly: false,
  ignoreDigestEcho: false
}

/** Which variants `make` runs with: none unless a test provides otherwise. */
export class ReplicatorMutants extends Context.Reference<ReplicatorMutants>()("cdp-sync/ReplicatorMutants", {
  defaultValue: (): Mutants => none
}) {}

/** Turns on the variants named, for whatever is built with this layer. */
export const layer = (on: Partial<Mutants>): Layer.Layer<ReplicatorMutants> =>
  Layer.succeedContext(ReplicatorMutants.context({ ...none, ...on }))

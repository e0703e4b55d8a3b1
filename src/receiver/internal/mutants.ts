/**
 * Deliberately broken variants of the receiver, for the tests that prove the properties
 * catch them. The tests set a switch for one property and reset it after; the receiver
 * only reads them.
 */
export const ReceiverMutants = {
  /** A base fold that writes the checksum table without re-reading the folded units. */
  foldSkipsRehash: false,
  /** A block index that keeps the oldest version of each range instead of the newest. */
  blockIndexKeepsOldest: false,
  /** A restore that writes every base byte, also those the log overrides (written twice). */
  restoreWritesOverriddenBase: false,
  /** A restore that writes the base's zero chunks into a new file (no holes kept). */
  restoreFillsHoles: false
}

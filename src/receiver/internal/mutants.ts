/**
 * Deliberately broken variants of the receiver, for the tests that prove the properties
 * catch them. The tests set a switch for one property and reset it after; the receiver
 * only reads them.
 */
export const ReceiverMutants = {
  /** A base fold that writes the checksum table without re-reading the folded units. */
  foldSkipsRehash: false,
  /** A block index that keeps the oldest version of each range instead of the newest. */
  blockIndexKeepsOldest: false
}

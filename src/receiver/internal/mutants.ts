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
  /** A live block index that is not told of the records committed after it was built. */
  liveIndexSkipsAppend: false,
  /** A retention fold that leaves the live index's extents of the records folded into the base. */
  liveIndexFoldKeepsExtents: false
}

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
  /** Opening a point merges its segments' maps without growing the union of the newer ones: an older segment's extent shows through a newer one. */
  pointMergeForgetsNewer: false,
  /** A mount's lazy reader looks in its segments' maps oldest first: an older version shows through a newer one. */
  lazyPointOldestFirst: false,
  /** A mount's lazy reader takes a `.bix` that decodes (CRC and form) without checking it against its segment's records. */
  lazyPointTrustsBix: false,
  /** `latest`, a seq or a time resolved without listing the points takes records folded into the base for points. */
  pointOfKeepsFolded: false,
  /** A restore that writes every base byte, also those the log overrides (written twice). */
  restoreWritesOverriddenBase: false,
  /** A restore that writes the base's zero chunks into a new file (no holes kept). */
  restoreFillsHoles: false,
  /** A restore that checks only the first unit of each read of the base against its CRC. */
  restoreChecksFirstUnitOnly: false,
  /** A restore thread that writes a record's extents before checking the record (then refuses it). */
  restoreThreadWritesBeforeCheck: false,
  /** A restore thread's record check that takes the record's epoch for its index entry's (skips that field). */
  restoreThreadCheckSkipsEpoch: false,
  /** A point reader's record cache that reads a record into the buffer of one a read is still using. */
  recordCacheReusesPinned: false,
  /** A live block index that is not told of the records committed after it was built. */
  liveIndexSkipsAppend: false,
  /** A retention fold that leaves the live index's extents of the records folded into the base. */
  liveIndexFoldKeepsExtents: false,
  /** The log hands the decoder's pooled copy of a payload back when it queues the record, before its write. */
  releasesCopyBeforeWrite: false
}

/** Broken overlays (`overlay.ts`), for test/properties/overlay.test.ts and test/unit/overlay-*.test.ts. */
export const OverlayMutants = {
  /** A flush writes the bitmap pages without fsyncing the data first (one fsync after both). */
  bitBeforeData: false,
  /** A write into part of a cluster the overlay does not hold writes only its own bytes (no copy-on-write). */
  partialWithoutCopy: false,
  /** Requests on one cluster run side by side: two copy-on-writes of one cluster can undo each other. */
  clustersUngated: false,
  /** `openOverlay` neither takes nor checks `FILE.lock`. */
  lockNotChecked: false
}

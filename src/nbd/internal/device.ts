/**
 * What the server exports (`Device`): a block device of a fixed size that reads, writes in
 * order and flushes. The server owns the protocol (checks, batching, bounds, the group
 * commit of FLUSH and FUA); the device owns the bytes. `Nbd.serve` builds one from the
 * `Replicator` and the `VirtualDisk` (`replicatorDevice`); a recovery point mounted
 * read-only (`cdp-sync mount`) is another.
 */
import { Effect } from "effect"
import { DiskRangeError, type VirtualDisk } from "../../adapters/VirtualDisk.js"
import type { Replicator } from "../../replicator/Replicator.js"
import { WriteRejected } from "../../replicator/Replicator.js"
import type { Mutants } from "./mutants.js"
import * as P from "./protocol.js"

/** One write of a `writeAll`: `bytes` at byte `offset`. */
export interface DeviceWrite {
  readonly offset: number
  readonly bytes: Uint8Array
}

/**
 * A block device the server exports. Every range the server passes is checked first: inside
 * `size`, offset and length multiples of 512, a read or write no larger than the maximum
 * payload (TRIM and WRITE_ZEROES arrive as `writeAll` of zeros, in 128 KiB pieces).
 */
export interface Device<E = unknown> {
  /** Bytes; a multiple of 512. */
  readonly size: number
  /** The export refuses every change (EPERM) and says so; `writeAll` is never called. */
  readonly readOnly: boolean
  /** Bytes `[offset, offset + length)`, exactly `length` of them. */
  readonly read: (offset: number, length: number) => Effect.Effect<Uint8Array, E>
  /**
   * Applies `writes` in array order (a later one wins where they overlap). On success a READ
   * sees them; they need not be durable until `flush`. A write the server answered stays
   * answered: `flush` must cover it.
   */
  readonly writeAll: (writes: ReadonlyArray<DeviceWrite>) => Effect.Effect<void, E>
  /** What FLUSH and FUA wait for: every write answered before it started is durable. */
  readonly flush: Effect.Effect<void, E>
  /** The NBD error a failure (or a defect) of this device is answered with. */
  readonly errnoOf: (error: unknown) => number
  /**
   * Whether a failed `writeAll` wrote nothing because one of its writes was refused: the
   * server then sends each write of the batch alone, so only the refused one fails.
   * Default: never (a failed batch fails every write in it).
   */
  readonly refusedWhole?: ((error: unknown) => boolean) | undefined
}

/** The errno a failed disk or replicator operation is answered with. */
const replicatorErrno = (error: unknown): number => {
  if (error instanceof WriteRejected || error instanceof DiskRangeError) return P.EINVAL
  if (
    typeof error === "object" &&
    error !== null &&
    (error as { _tag?: unknown })._tag === "ReplicatorStopped" &&
    (error as { reason?: unknown }).reason === "the replicator is closing"
  )
    return P.ESHUTDOWN
  return P.EIO
}

/**
 * The protected disk (design §7): reads from the disk; writes through `Replicator.write`
 * (one) or `writeAll` (a batch: one trip through the filter), answered once the disk has
 * them and they are folded as completed writes; a flush is the disk's fsync and the
 * journal's barrier together (both global, so the export may advertise multi-conn).
 */
export const replicatorDevice = (
  disk: VirtualDisk.Service,
  replicator: Replicator.Service,
  mutants: Pick<Mutants, "flushSkipsJournal">
): Device => ({
  size: disk.geometry.blockCount * disk.geometry.blockSize,
  readOnly: false,
  read: disk.read,
  writeAll: (writes) =>
    writes.length === 1 ? replicator.write(writes[0]!.offset, writes[0]!.bytes) : replicator.writeAll(writes),
  flush: mutants.flushSkipsJournal
    ? disk.flush
    : Effect.all([disk.flush, replicator.flush], { concurrency: 2, discard: true }),
  errnoOf: replicatorErrno,
  // The replicator checks every write of a batch before any touches the disk.
  refusedWhole: (error) => error instanceof WriteRejected
})

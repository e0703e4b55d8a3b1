/**
 * Shared pieces of the VirtualDisk layers: the typed errors and the request check.
 */
import { Data } from "effect"
import * as Geometry from "../../domain/Geometry.js"

/** Every request is aligned to 512-byte sectors (offset and length). */
export const SECTOR_SIZE = 512

export type DiskRangeReason =
  | "not-an-integer"
  | "negative"
  | "empty"
  | "misaligned"
  | "beyond-disk"
  | "not-a-block"

/** A request outside the disk or not sector aligned: rejected before any I/O. */
export class DiskRangeError extends Data.TaggedError("DiskRangeError")<{
  readonly offset: number
  readonly length: number
  readonly reason: DiskRangeReason
  readonly diskBytes: number
}> {
  override get message() {
    return `disk request (offset ${this.offset}, length ${this.length}) rejected: ${this.reason} (disk has ${this.diskBytes} bytes, sectors of ${SECTOR_SIZE})`
  }
}

export type DiskOp = "open" | "stat" | "truncate" | "read" | "write" | "flush"

/** The operating system failed an I/O call. */
export class DiskIoError extends Data.TaggedError("DiskIoError")<{
  readonly op: DiskOp
  readonly path: string
  readonly cause: unknown
}> {
  override get message() {
    return `disk ${this.op} failed on ${this.path}: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** An existing image file whose size is not the geometry's. */
export class DiskGeometryMismatch extends Data.TaggedError("DiskGeometryMismatch")<{
  readonly path: string
  readonly expectedBytes: number
  readonly actualBytes: number
}> {
  override get message() {
    return `disk image ${this.path} has ${this.actualBytes} bytes, the geometry needs ${this.expectedBytes}`
  }
}

export type DiskError = DiskRangeError | DiskIoError

/** Checks a byte request; `undefined` when it is aligned and inside the disk. */
export const checkRange = (
  geometry: Geometry.Geometry,
  offset: number,
  length: number
): DiskRangeError | undefined => {
  const diskBytes = Geometry.diskBytes(geometry)
  const reject = (reason: DiskRangeReason) => new DiskRangeError({ offset, length, reason, diskBytes })
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) return reject("not-an-integer")
  if (offset < 0 || length < 0) return reject("negative")
  if (length === 0) return reject("empty")
  if (offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0) return reject("misaligned")
  if (offset + length > diskBytes) return reject("beyond-disk")
  return undefined
}

/** Checks a tracking-block index; `undefined` when it is on the disk. */
export const checkBlock = (geometry: Geometry.Geometry, block: number): DiskRangeError | undefined =>
  Geometry.isBlock(geometry, block)
    ? undefined
    : new DiskRangeError({
        offset: Number.isFinite(block) ? block * geometry.blockSize : block,
        length: geometry.blockSize,
        reason: "not-a-block",
        diskBytes: Geometry.diskBytes(geometry)
      })

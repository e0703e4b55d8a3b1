/**
 * Disk geometry: the tracking-block size and count, and the mapping from byte
 * ranges to block ranges. Pure; every rejection is a typed value, never a throw.
 */
import { Data, Either } from "effect"

export const MIN_BLOCK_SIZE = 4096
export const MAX_BLOCK_SIZE = 1024 * 1024
/** 2^30 tracking blocks: 64 TiB at 64 KiB blocks. */
export const MAX_BLOCK_COUNT = 2 ** 30

export interface Geometry {
  readonly blockSize: number
  readonly blockCount: number
}

/** An inclusive range of tracking blocks. */
export interface BlockRange {
  readonly first: number
  readonly last: number
}

export class InvalidGeometry extends Data.TaggedError("InvalidGeometry")<{
  readonly blockSize: number
  readonly blockCount: number
  readonly reason: string
}> {
  override get message() {
    return `invalid geometry (blockSize ${this.blockSize}, blockCount ${this.blockCount}): ${this.reason}`
  }
}

export class InvalidRange extends Data.TaggedError("InvalidRange")<{
  readonly offset: number
  readonly length: number
  readonly reason: "empty" | "negative" | "not-an-integer" | "beyond-disk"
  readonly diskBytes: number
}> {
  override get message() {
    return `invalid byte range (offset ${this.offset}, length ${this.length}): ${this.reason} (disk has ${this.diskBytes} bytes)`
  }
}

const isPowerOfTwo = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0

export const make = (blockSize: number, blockCount: number): Either.Either<Geometry, InvalidGeometry> => {
  const reject = (reason: string) => Either.left(new InvalidGeometry({ blockSize, blockCount, reason }))
  if (!isPowerOfTwo(blockSize)) return reject("block size must be a power of two")
  if (blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE)
    return reject(`block size must be between ${MIN_BLOCK_SIZE} and ${MAX_BLOCK_SIZE} bytes`)
  if (!Number.isInteger(blockCount) || blockCount < 1 || blockCount > MAX_BLOCK_COUNT)
    return reject(`block count must be an integer between 1 and ${MAX_BLOCK_COUNT}`)
  return Either.right({ blockSize, blockCount })
}

/** Total bytes on the disk (exact: at most 2^50, inside the safe-integer range). */
export const diskBytes = (geometry: Geometry): number => geometry.blockSize * geometry.blockCount

/** Validates a byte range against the disk; `undefined` when valid. Allocation-free on the hot path. */
export const validateRange = (
  geometry: Geometry,
  offset: number,
  length: number
): InvalidRange | undefined => {
  const bytes = diskBytes(geometry)
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length))
    return new InvalidRange({ offset, length, reason: "not-an-integer", diskBytes: bytes })
  if (offset < 0 || length < 0)
    return new InvalidRange({ offset, length, reason: "negative", diskBytes: bytes })
  if (length === 0) return new InvalidRange({ offset, length, reason: "empty", diskBytes: bytes })
  if (offset + length > bytes)
    return new InvalidRange({ offset, length, reason: "beyond-disk", diskBytes: bytes })
  return undefined
}

/** First tracking block a valid range touches. */
export const firstBlock = (geometry: Geometry, offset: number): number =>
  Math.floor(offset / geometry.blockSize)

/** Last tracking block a valid range touches. */
export const lastBlock = (geometry: Geometry, offset: number, length: number): number =>
  Math.floor((offset + length - 1) / geometry.blockSize)

/** The tracking blocks a byte range touches, or why the range is invalid. */
export const blockRange = (
  geometry: Geometry,
  offset: number,
  length: number
): Either.Either<BlockRange, InvalidRange> => {
  const invalid = validateRange(geometry, offset, length)
  if (invalid !== undefined) return Either.left(invalid)
  return Either.right({ first: firstBlock(geometry, offset), last: lastBlock(geometry, offset, length) })
}

/** Byte offset of a tracking block. */
export const blockOffset = (geometry: Geometry, block: number): number => block * geometry.blockSize

export const isBlock = (geometry: Geometry, block: number): boolean =>
  Number.isInteger(block) && block >= 0 && block < geometry.blockCount

/**
 * Frame encoder: one allocation per frame (header and payload together, from `allocate`,
 * so a sender can carve frames from slabs), one CRC pass over the payload and one over
 * the header.
 */
import { crc32c } from "../../internal/crc32c.js"
import {
  type ChecksumRequest,
  DIGEST_BYTES,
  type Frame,
  HEADER_BYTES,
  HEADER_CRC_SPAN,
  Kind,
  MAGIC,
  MAX_CHECKSUM_BLOCKS,
  MAX_U32,
  Offset,
  VERSION
} from "./wireFrame.js"

const text = new TextEncoder()
const EMPTY = new Uint8Array(0)

export const writeU32 = (bytes: Uint8Array, at: number, n: number): void => {
  bytes[at] = n >>> 24
  bytes[at + 1] = n >>> 16
  bytes[at + 2] = n >>> 8
  bytes[at + 3] = n
}

/** `n` is a non-negative safe integer: split into exact high and low words. */
const writeU64 = (bytes: Uint8Array, at: number, n: number): void => {
  writeU32(bytes, at, Math.floor(n / 0x1_0000_0000))
  writeU32(bytes, at + 4, n >>> 0)
}

// Invalid fields are a bug in the caller (a defect), never silently truncated on the wire.
const count = (field: string, n: number): number => {
  if (!Number.isSafeInteger(n) || n < 0)
    throw new RangeError(`wire: ${field} must be a non-negative safe integer, got ${n}`)
  return n
}
const u32 = (field: string, n: number): number => {
  if (!Number.isInteger(n) || n < 0 || n > MAX_U32)
    throw new RangeError(`wire: ${field} must be a u32, got ${n}`)
  return n
}

const json = (value: unknown): Uint8Array => text.encode(JSON.stringify(value))

/** A request's blocks: 1 to `MAX_CHECKSUM_BLOCKS` u64s, strictly increasing. */
const blockList = (request: ChecksumRequest): Uint8Array => {
  const { blocks } = request
  if (blocks.length < 1 || blocks.length > MAX_CHECKSUM_BLOCKS)
    throw new RangeError(
      `wire: a checksum request names 1 to ${MAX_CHECKSUM_BLOCKS} blocks, got ${blocks.length}`
    )
  const bytes = new Uint8Array(blocks.length * 8)
  let previous = -1
  blocks.forEach((block, i) => {
    count("block", block)
    if (block <= previous)
      throw new RangeError(`wire: checksum request blocks must increase, ${block} after ${previous}`)
    previous = block
    writeU64(bytes, i * 8, block)
  })
  return bytes
}

/**
 * Encodes `frame`'s header into a buffer from `allocate` (with room for the payload after
 * it when `roomForPayload`, left for the caller to fill) and returns it with the payload
 * (empty for frames without one). Throws a `RangeError` (a defect) for a
 * field outside its wire range: a negative or unsafe seq/offset/block, an epoch beyond u32.
 */
const encodeHeader = (frame: Frame, allocate: (bytes: number) => Uint8Array, roomForPayload: boolean) => {
  const kind = Kind[frame._tag]
  let seq = 0
  let epoch = 0
  let position = 0
  let payload: Uint8Array = EMPTY
  switch (frame._tag) {
    case "Hello":
      payload = json({
        diskId: frame.diskId,
        blockSize: frame.blockSize,
        blockCount: frame.blockCount,
        watermark: frame.watermark
      })
      break
    case "Welcome":
      seq = count("durableSeq", frame.durableSeq)
      break
    case "Write":
    case "Block":
    case "ResyncBegin":
    case "ResyncEnd":
      // The records: a seq and an epoch each, then what each carries.
      seq = count("seq", frame.seq)
      epoch = u32("epoch", frame.epoch)
      if (frame._tag === "Write") position = count("offset", frame.offset)
      else if (frame._tag === "Block") position = count("block", frame.block)
      else if (frame._tag === "ResyncBegin") position = count("base", frame.base)
      if (frame._tag === "Write" || frame._tag === "Block") payload = frame.data
      break
    case "Ack":
      seq = count("seq", frame.seq)
      break
    case "Gap":
      seq = count("expected", frame.expected)
      break
    case "Refuse":
      payload = json({ reason: frame.reason, detail: frame.detail })
      break
    case "KeepAlive":
      break
    case "ChecksumRequest":
      epoch = u32("algorithm", frame.algorithm)
      position = count("id", frame.id)
      payload = blockList(frame)
      break
    case "ChecksumReply": {
      seq = count("through", frame.through)
      epoch = u32("algorithm", frame.algorithm)
      position = count("id", frame.id)
      const n = frame.digests.byteLength / DIGEST_BYTES
      if (!Number.isInteger(n) || n < 1 || n > MAX_CHECKSUM_BLOCKS)
        throw new RangeError(
          `wire: a checksum reply holds 1 to ${MAX_CHECKSUM_BLOCKS} digests of ${DIGEST_BYTES} bytes, got ${frame.digests.byteLength} bytes`
        )
      payload = frame.digests
      break
    }
    case "ChecksumRefused":
      position = count("id", frame.id)
      payload = json({ reason: frame.reason, detail: frame.detail })
      break
  }
  const length = u32("payload length", payload.byteLength)
  const bytes = allocate(HEADER_BYTES + (roomForPayload ? length : 0))
  writeU32(bytes, Offset.magic, MAGIC)
  bytes[Offset.version] = VERSION
  bytes[Offset.kind] = kind
  bytes[Offset.flags] = 0
  bytes[Offset.flags + 1] = 0
  writeU64(bytes, Offset.seq, seq)
  writeU32(bytes, Offset.epoch, epoch)
  writeU64(bytes, Offset.offsetOrBlock, position)
  writeU32(bytes, Offset.length, length)
  writeU32(bytes, Offset.payloadCrc, length === 0 ? 0 : crc32c(payload))
  writeU32(bytes, Offset.headerCrc, crc32c(bytes.subarray(0, HEADER_CRC_SPAN)))
  return { bytes, payload }
}

/** An encoder whose frames (header and payload in one buffer) are carved by `allocate`. */
export const encodeWith =
  (allocate: (bytes: number) => Uint8Array) =>
  (frame: Frame): Uint8Array => {
    const { bytes, payload } = encodeHeader(frame, allocate, true)
    if (payload.byteLength > 0) bytes.set(payload, HEADER_BYTES)
    return bytes
  }

/**
 * An encoder that copies no payload: the header (from `allocate`), then the payload
 * itself when there is one. Written back to back they are the frame `encodeWith` makes;
 * the payload must not change until it has been written.
 */
export const encodePartsWith =
  (allocate: (bytes: number) => Uint8Array) =>
  (frame: Frame): ReadonlyArray<Uint8Array> => {
    const { bytes, payload } = encodeHeader(frame, allocate, false)
    return payload.byteLength === 0 ? [bytes] : [bytes, payload]
  }

/** Encodes one frame into a buffer of its own (see `encodeWith`). */
export const encode: (frame: Frame) => Uint8Array = encodeWith(Buffer.allocUnsafe)

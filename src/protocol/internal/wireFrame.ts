/**
 * Wire frames (design §6): the header layout, the frame union and the codec's error.
 * Shared by the encoder and the decoder; `Wire.ts` is the public face.
 */
import * as Geometry from "../../domain/Geometry.js"
import type { RecordKind } from "../../domain/Receiver.js"
import { Schema } from "effect"

/** "CDPS" */
export const MAGIC = 0x43445053
export const VERSION = 1
export const HEADER_BYTES = 40
/** The header CRC covers bytes 0..35: everything before itself. */
export const HEADER_CRC_SPAN = 36
/** Default cap on a whole frame (header + payload): room for a 16 MiB write and more. */
export const DEFAULT_MAX_FRAME_BYTES = 32 * 1024 * 1024
/**
 * Cap on a connection's first frame (the hello: a few hundred bytes of JSON): a peer that
 * has not said who it is cannot make the decoder buffer a large payload.
 */
export const MAX_HELLO_FRAME_BYTES = 64 * 1024
/** u64 fields must stay exact in a JS number: the high word is at most 2^21 - 1. */
export const MAX_SAFE_HIGH_WORD = 0x1f_ffff
export const MAX_U32 = 0xffff_ffff
/**
 * Most blocks one checksum request may name: bounds what one request makes the receiver read
 * and hash (at most this many blocks) and the reply (32 bytes a block).
 */
export const MAX_CHECKSUM_BLOCKS = 1024
/** Bytes of a block digest (SHA-256 or BLAKE3, `blockDigest`). */
export const DIGEST_BYTES = 32

export const Kind = {
  Hello: 1,
  Welcome: 2,
  Write: 3,
  Block: 4,
  ResyncBegin: 5,
  ResyncEnd: 6,
  Ack: 7,
  Gap: 8,
  Refuse: 9,
  KeepAlive: 10,
  ChecksumRequest: 11,
  ChecksumReply: 12,
  ChecksumRefused: 13
} as const
export type Kind = (typeof Kind)[keyof typeof Kind]

/** Byte offsets of the header fields (big-endian). */
export const Offset = {
  magic: 0,
  version: 4,
  kind: 5,
  flags: 6,
  seq: 8,
  epoch: 16,
  offsetOrBlock: 20,
  length: 28,
  payloadCrc: 32,
  headerCrc: 36
} as const

// ---------------------------------------------------------------------------------------------
// Frames: plain objects, cheap to build on the hot path.

/** Filter → receiver, first frame of a connection: disk identity, geometry, the filter's watermark. */
export interface Hello {
  readonly _tag: "Hello"
  readonly diskId: string
  readonly blockSize: number
  readonly blockCount: number
  readonly watermark: number
}
/** Receiver → filter: the handshake succeeded; the receiver's durable seq. */
export interface Welcome {
  readonly _tag: "Welcome"
  readonly durableSeq: number
}
/** A completed guest write, streamed live: `data` lands at byte `offset`. */
export interface Write {
  readonly _tag: "Write"
  readonly seq: number
  readonly epoch: number
  readonly offset: number
  readonly data: Uint8Array
}
/** A tracking block read during a resync drain: `data` is the whole block. */
export interface Block {
  readonly _tag: "Block"
  readonly seq: number
  readonly epoch: number
  readonly block: number
  readonly data: Uint8Array
}
/**
 * Resync-begin marker. `base` (in the header's offset/block field): the filter relies on
 * the receiver holding every record through `base`; records after it and before the
 * marker are superseded, so the receiver may accept the marker across a gap.
 */
export interface ResyncBegin {
  readonly _tag: "ResyncBegin"
  readonly seq: number
  readonly epoch: number
  readonly base: number
}
export interface ResyncEnd {
  readonly _tag: "ResyncEnd"
  readonly seq: number
  readonly epoch: number
}
/** Receiver → filter: every record through `seq` is durable. */
export interface Ack {
  readonly _tag: "Ack"
  readonly seq: number
}
/** Receiver → filter: a gap; the receiver expected `expected`. */
export interface Gap {
  readonly _tag: "Gap"
  readonly expected: number
}
/** Receiver → filter: the hello is refused (the receiver then closes the connection). */
export interface Refuse {
  readonly _tag: "Refuse"
  readonly reason: string
  readonly detail: string
}

/**
 * Either way, after the welcome: "I am here". The filter sends one when it has sent
 * nothing for a while, so an idle link never trips the receiver's idle timeout; the
 * receiver answers each with one (at most one outstanding), so the link carries traffic
 * both ways.
 */
export interface KeepAlive {
  readonly _tag: "KeepAlive"
}

/**
 * Filter → receiver, after the welcome: "the digest of each of these tracking blocks, as your
 * log holds it". `blocks`: 1 to `MAX_CHECKSUM_BLOCKS` block indexes, strictly increasing.
 * `id` (the header's offset/block field) names the request in its answer. `algorithm` (the
 * header's epoch field, a u32): the digest's wire code (`DigestCode`: 0 SHA-256, 1 BLAKE3);
 * a filter from before the field sends 0. The receiver answers requests in order, after
 * every record before the request on the stream; a code it cannot compute is refused
 * (`unsupported`).
 */
export interface ChecksumRequest {
  readonly _tag: "ChecksumRequest"
  readonly id: number
  readonly algorithm: number
  readonly blocks: ReadonlyArray<number>
}
/**
 * Receiver → filter: the answer to request `id`. `through` (the header's seq): the answer
 * reflects every record through this seq and none after it, all durable (fsynced) before the
 * digests were computed. `digests`: one `DIGEST_BYTES` digest per requested block, in the
 * request's order (`digestAt`), each the `blockDigest` of the block's newest version in the log.
 * `algorithm` (the header's epoch field): the code the digests were computed with, the
 * request's echoed. A receiver from before the field ignores the request's and answers
 * SHA-256 with 0: the filter believes no digest whose code is not the one it asked.
 */
export interface ChecksumReply {
  readonly _tag: "ChecksumReply"
  readonly id: number
  readonly through: number
  readonly algorithm: number
  readonly digests: Uint8Array
}
/**
 * Receiver → filter: request `id` gets no digests (the connection stays up): `damaged` (a
 * byte the answer needs fails its checksum in the log; `detail` names the file and offset),
 * `unverifiable` (the bytes have no checksum to check them by: a format-1 base image),
 * `unsupported` (the request's algorithm code is unknown here, or BLAKE3 without its native
 * module), `failed` (an I/O error). The filter treats every block of the request as differing.
 */
export interface ChecksumRefused {
  readonly _tag: "ChecksumRefused"
  readonly id: number
  readonly reason: string
  readonly detail: string
}

/** The digest of the `i`th block of a checksum reply (a view, not a copy). */
export const digestAt = (reply: ChecksumReply, i: number): Uint8Array =>
  reply.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES)

/** The records the filter streams, in seq order. */
export type Record = Write | Block | ResyncBegin | ResyncEnd

const RECORD_KINDS = {
  Write: "write",
  Block: "block",
  ResyncBegin: "resync-begin",
  ResyncEnd: "resync-end"
} as const satisfies { readonly [T in Record["_tag"]]: RecordKind }

/** A record's kind as the receiver's sequencing rules name it (`domain/Receiver`). */
export const recordKind = (record: Record): RecordKind => RECORD_KINDS[record._tag]

/** A record's kind code on the wire (the receiver's segment records keep the same codes). */
export const recordKindCode = (record: Record): (typeof Kind)[Record["_tag"]] => Kind[record._tag]
export type Frame =
  | Hello
  | Welcome
  | Record
  | Ack
  | Gap
  | Refuse
  | KeepAlive
  | ChecksumRequest
  | ChecksumReply
  | ChecksumRefused

// ---------------------------------------------------------------------------------------------
// JSON payloads, decoded with a Schema.

const Count = Schema.NonNegativeInt.pipe(
  Schema.filter((n) => Number.isSafeInteger(n) || "must be a safe integer")
)

export const HelloPayload = Schema.Struct({
  diskId: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(1024)),
  blockSize: Count,
  blockCount: Count,
  watermark: Count
})
export const RefusePayload = Schema.Struct({ reason: Schema.String, detail: Schema.String })

// ---------------------------------------------------------------------------------------------

export const WireErrorReason = Schema.Literal(
  "bad-magic",
  "bad-version",
  "header-crc",
  "bad-flags",
  "unsafe-integer",
  "unknown-kind",
  "too-large",
  "payload-crc",
  "bad-payload",
  /** The stream ended inside a frame. */
  "truncated",
  /** A well-formed frame where the protocol does not allow it (e.g. a record before the hello). */
  "unexpected-frame",
  /** A record that does not fit the disk announced in the hello. */
  "bad-record",
  /** A checksum request that does not fit the disk announced in the hello (a block beyond it). */
  "bad-request"
)
export type WireErrorReason = typeof WireErrorReason.Type

/** A violation of the wire protocol. It closes the connection; the offending frame never reaches the log. */
export class WireError extends Schema.TaggedError<WireError>()("WireError", {
  reason: WireErrorReason,
  detail: Schema.String
}) {
  override get message() {
    return `wire protocol error (${this.reason}): ${this.detail}`
  }
}

const badRecord = (detail: string) => new WireError({ reason: "bad-record", detail })

/** A record that does not fit the disk never reaches a log: the receiver closes the connection. */
export const checkRecord = (geometry: Geometry.Geometry, record: Record): WireError | undefined => {
  if (record._tag === "Write") {
    const invalid = Geometry.validateRange(geometry, record.offset, record.data.byteLength)
    return invalid === undefined ? undefined : badRecord(`write ${record.seq}: ${invalid.message}`)
  }
  if (record._tag === "Block") {
    if (!Geometry.isBlock(geometry, record.block))
      return badRecord(`block ${record.seq}: block ${record.block} is outside the disk`)
    if (record.data.byteLength !== geometry.blockSize)
      return badRecord(
        `block ${record.seq}: ${record.data.byteLength} bytes, the block size is ${geometry.blockSize}`
      )
  }
  return undefined
}

/** A checksum request naming a block beyond the disk: the receiver closes the connection. */
export const checkChecksumRequest = (
  geometry: Geometry.Geometry,
  request: ChecksumRequest
): WireError | undefined => {
  for (const block of request.blocks)
    if (!Geometry.isBlock(geometry, block))
      return new WireError({
        reason: "bad-request",
        detail: `checksum request ${request.id}: block ${block} is outside the disk (${geometry.blockCount} blocks)`
      })
  return undefined
}

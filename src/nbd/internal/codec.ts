/**
 * The NBD messages as bytes: pure encoders and checked decoders for both ends (the
 * server and the small client). A decoder is given exactly the bytes of its fixed part
 * (the connection reads them) and answers a value or a typed `NbdProtocolError`; it
 * never throws on peer input.
 */
import { Data } from "effect"
import * as P from "./protocol.js"

export type ProtocolErrorReason =
  | "bad-option-magic"
  | "bad-request-magic"
  | "bad-reply-magic"
  | "bad-greeting"
  | "unknown-client-flags"
  | "unknown-export"
  | "truncated"
  | "too-many-options"
  | "handshake-timeout"
  | "unexpected-reply"

/** A peer broke the protocol: the connection closes (the server logs it; the client fails with it). */
export class NbdProtocolError extends Data.TaggedError("NbdProtocolError")<{
  readonly reason: ProtocolErrorReason
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message() {
    return `NBD protocol error (${this.reason}): ${this.detail}`
  }
}

const hex = (n: bigint | number) => `0x${n.toString(16)}`

const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)

const need = (bytes: Uint8Array, length: number, what: string): NbdProtocolError | undefined =>
  bytes.byteLength === length
    ? undefined
    : new NbdProtocolError({
        reason: "truncated",
        detail: `${what}: ${bytes.byteLength} bytes, expected ${length}`
      })

/** A u64 as a number; `Infinity` beyond 2^53 - 1 (an offset that large is past any export). */
const u64 = (v: DataView, at: number): number => {
  const n = v.getBigUint64(at)
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.POSITIVE_INFINITY : Number(n)
}

const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder("utf-8", { fatal: false })
export const encodeName = (name: string): Uint8Array => utf8.encode(name)
export const decodeName = (bytes: Uint8Array): string => fromUtf8.decode(bytes)

// ---------------------------------------------------------------------------
// Handshake: greeting and client flags

export const encodeGreeting = (handshakeFlags: number): Uint8Array => {
  const out = new Uint8Array(P.GREETING_BYTES)
  const v = view(out)
  v.setBigUint64(0, P.NBD_MAGIC)
  v.setBigUint64(8, P.IHAVEOPT)
  v.setUint16(16, handshakeFlags)
  return out
}

export const decodeGreeting = (bytes: Uint8Array): number | NbdProtocolError => {
  const short = need(bytes, P.GREETING_BYTES, "greeting")
  if (short !== undefined) return short
  const v = view(bytes)
  if (v.getBigUint64(0) !== P.NBD_MAGIC || v.getBigUint64(8) !== P.IHAVEOPT)
    return new NbdProtocolError({ reason: "bad-greeting", detail: "not a newstyle NBD server" })
  return v.getUint16(16)
}

export const encodeClientFlags = (flags: number): Uint8Array => {
  const out = new Uint8Array(4)
  view(out).setUint32(0, flags)
  return out
}

/** The client's flags; unknown ones (or `NO_ZEROES` the server did not offer) close the connection. */
export const decodeClientFlags = (bytes: Uint8Array, offered: number): number | NbdProtocolError => {
  const short = need(bytes, 4, "client flags")
  if (short !== undefined) return short
  const flags = view(bytes).getUint32(0)
  const allowed = P.FLAG_C_FIXED_NEWSTYLE | ((offered & P.FLAG_NO_ZEROES) !== 0 ? P.FLAG_C_NO_ZEROES : 0)
  if ((flags & ~allowed) !== 0)
    return new NbdProtocolError({
      reason: "unknown-client-flags",
      detail: `client flags ${hex(flags)} include ones not offered (${hex(allowed)})`
    })
  return flags
}

// ---------------------------------------------------------------------------
// Options

export interface OptionHeader {
  readonly option: number
  readonly length: number
}

export const encodeOption = (option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array => {
  const out = new Uint8Array(P.OPTION_HEADER_BYTES + data.byteLength)
  const v = view(out)
  v.setBigUint64(0, P.IHAVEOPT)
  v.setUint32(8, option)
  v.setUint32(12, data.byteLength)
  out.set(data, P.OPTION_HEADER_BYTES)
  return out
}

export const decodeOptionHeader = (bytes: Uint8Array): OptionHeader | NbdProtocolError => {
  const short = need(bytes, P.OPTION_HEADER_BYTES, "option header")
  if (short !== undefined) return short
  const v = view(bytes)
  const magic = v.getBigUint64(0)
  if (magic !== P.IHAVEOPT)
    return new NbdProtocolError({ reason: "bad-option-magic", detail: `option magic ${hex(magic)}` })
  return { option: v.getUint32(8), length: v.getUint32(12) }
}

export interface OptionReplyHeader {
  readonly option: number
  readonly type: number
  readonly length: number
}

export const encodeOptionReply = (
  option: number,
  type: number,
  data: Uint8Array = new Uint8Array(0)
): Uint8Array => {
  const out = new Uint8Array(P.OPTION_REPLY_HEADER_BYTES + data.byteLength)
  const v = view(out)
  v.setBigUint64(0, P.OPTION_REPLY_MAGIC)
  v.setUint32(8, option)
  v.setUint32(12, type)
  v.setUint32(16, data.byteLength)
  out.set(data, P.OPTION_REPLY_HEADER_BYTES)
  return out
}

export const decodeOptionReplyHeader = (bytes: Uint8Array): OptionReplyHeader | NbdProtocolError => {
  const short = need(bytes, P.OPTION_REPLY_HEADER_BYTES, "option reply header")
  if (short !== undefined) return short
  const v = view(bytes)
  const magic = v.getBigUint64(0)
  if (magic !== P.OPTION_REPLY_MAGIC)
    return new NbdProtocolError({ reason: "bad-reply-magic", detail: `option reply magic ${hex(magic)}` })
  return { option: v.getUint32(8), type: v.getUint32(12), length: v.getUint32(16) }
}

/** The data of `NBD_OPT_INFO` / `NBD_OPT_GO`: an export name and the information asked for. */
export interface InfoRequest {
  readonly name: string
  readonly requests: ReadonlyArray<number>
}

export const encodeInfoRequest = (request: InfoRequest): Uint8Array => {
  const name = encodeName(request.name)
  const out = new Uint8Array(4 + name.byteLength + 2 + 2 * request.requests.length)
  const v = view(out)
  v.setUint32(0, name.byteLength)
  out.set(name, 4)
  v.setUint16(4 + name.byteLength, request.requests.length)
  for (const [i, r] of request.requests.entries()) v.setUint16(6 + name.byteLength + 2 * i, r)
  return out
}

/** `undefined` when malformed (answered `NBD_REP_ERR_INVALID`): lengths that do not add up. */
export const decodeInfoRequest = (data: Uint8Array): InfoRequest | undefined => {
  if (data.byteLength < 6) return undefined
  const v = view(data)
  const nameLength = v.getUint32(0)
  if (nameLength > data.byteLength - 6) return undefined
  const count = v.getUint16(4 + nameLength)
  if (data.byteLength !== 6 + nameLength + 2 * count) return undefined
  const requests: Array<number> = []
  for (let i = 0; i < count; i++) requests.push(v.getUint16(6 + nameLength + 2 * i))
  return { name: decodeName(data.subarray(4, 4 + nameLength)), requests }
}

export const encodeInfoExport = (size: number, transmissionFlags: number): Uint8Array => {
  const out = new Uint8Array(12)
  const v = view(out)
  v.setUint16(0, P.INFO_EXPORT)
  v.setBigUint64(2, BigInt(size))
  v.setUint16(10, transmissionFlags)
  return out
}

export interface BlockSizes {
  readonly minimum: number
  readonly preferred: number
  readonly maximum: number
}

export const encodeInfoBlockSize = (sizes: BlockSizes): Uint8Array => {
  const out = new Uint8Array(14)
  const v = view(out)
  v.setUint16(0, P.INFO_BLOCK_SIZE)
  v.setUint32(2, sizes.minimum)
  v.setUint32(6, sizes.preferred)
  v.setUint32(10, sizes.maximum)
  return out
}

/** `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`: a type and a string. */
export const encodeInfoText = (type: number, text: string): Uint8Array => {
  const bytes = encodeName(text)
  const out = new Uint8Array(2 + bytes.byteLength)
  view(out).setUint16(0, type)
  out.set(bytes, 2)
  return out
}

/** What one `NBD_REP_INFO` says, as the client reads it (unknown types are kept as such). */
export type Info =
  | { readonly _tag: "Export"; readonly size: number; readonly flags: number }
  | { readonly _tag: "BlockSize"; readonly sizes: BlockSizes }
  | { readonly _tag: "Text"; readonly type: number; readonly text: string }
  | { readonly _tag: "Unknown"; readonly type: number }

export const decodeInfo = (data: Uint8Array): Info | NbdProtocolError => {
  if (data.byteLength < 2)
    return new NbdProtocolError({ reason: "truncated", detail: "an NBD_REP_INFO without a type" })
  const v = view(data)
  const type = v.getUint16(0)
  const bad = (length: number) =>
    new NbdProtocolError({
      reason: "truncated",
      detail: `information ${type}: ${data.byteLength} bytes, expected ${length}`
    })
  switch (type) {
    case P.INFO_EXPORT:
      return data.byteLength === 12 ? { _tag: "Export", size: u64(v, 2), flags: v.getUint16(10) } : bad(12)
    case P.INFO_BLOCK_SIZE:
      return data.byteLength === 14
        ? {
            _tag: "BlockSize",
            sizes: { minimum: v.getUint32(2), preferred: v.getUint32(6), maximum: v.getUint32(10) }
          }
        : bad(14)
    case P.INFO_NAME:
    case P.INFO_DESCRIPTION:
      return { _tag: "Text", type, text: decodeName(data.subarray(2)) }
    default:
      return { _tag: "Unknown", type }
  }
}

/** `NBD_REP_SERVER`'s data: the name's length, the name. */
export const encodeServerEntry = (name: string): Uint8Array => {
  const bytes = encodeName(name)
  const out = new Uint8Array(4 + bytes.byteLength)
  view(out).setUint32(0, bytes.byteLength)
  out.set(bytes, 4)
  return out
}

export const decodeServerEntry = (data: Uint8Array): string | NbdProtocolError => {
  if (data.byteLength < 4) return new NbdProtocolError({ reason: "truncated", detail: "NBD_REP_SERVER" })
  const length = view(data).getUint32(0)
  if (length > data.byteLength - 4)
    return new NbdProtocolError({ reason: "truncated", detail: "NBD_REP_SERVER name length" })
  return decodeName(data.subarray(4, 4 + length))
}

/** The answer to `NBD_OPT_EXPORT_NAME`: size, transmission flags and (unless declined) 124 zeroes. */
export const encodeExportNameReply = (size: number, flags: number, noZeroes: boolean): Uint8Array => {
  const out = new Uint8Array(10 + (noZeroes ? 0 : P.EXPORT_NAME_ZEROES))
  const v = view(out)
  v.setBigUint64(0, BigInt(size))
  v.setUint16(8, flags)
  return out
}

// ---------------------------------------------------------------------------
// Transmission

export interface Request {
  readonly flags: number
  readonly type: number
  /** Opaque; echoed in the reply. */
  readonly cookie: bigint
  /** `Infinity` when the wire's u64 is beyond 2^53 - 1. */
  readonly offset: number
  readonly length: number
}

export const encodeRequest = (r: {
  readonly flags: number
  readonly type: number
  readonly cookie: bigint
  readonly offset: number | bigint
  readonly length: number
}): Uint8Array => {
  const out = new Uint8Array(P.REQUEST_BYTES)
  const v = view(out)
  v.setUint32(0, P.REQUEST_MAGIC)
  v.setUint16(4, r.flags)
  v.setUint16(6, r.type)
  v.setBigUint64(8, r.cookie)
  v.setBigUint64(16, BigInt(r.offset))
  v.setUint32(24, r.length)
  return out
}

export const decodeRequest = (bytes: Uint8Array): Request | NbdProtocolError => {
  const short = need(bytes, P.REQUEST_BYTES, "request")
  if (short !== undefined) return short
  const v = view(bytes)
  const magic = v.getUint32(0)
  if (magic !== P.REQUEST_MAGIC)
    return new NbdProtocolError({ reason: "bad-request-magic", detail: `request magic ${hex(magic)}` })
  return {
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    offset: u64(v, 16),
    length: v.getUint32(24)
  }
}

export const encodeSimpleReply = (error: number, cookie: bigint): Uint8Array => {
  const out = new Uint8Array(P.SIMPLE_REPLY_BYTES)
  const v = view(out)
  v.setUint32(0, P.SIMPLE_REPLY_MAGIC)
  v.setUint32(4, error)
  v.setBigUint64(8, cookie)
  return out
}

export interface SimpleReply {
  readonly error: number
  readonly cookie: bigint
}

export const decodeSimpleReply = (bytes: Uint8Array): SimpleReply | NbdProtocolError => {
  const short = need(bytes, P.SIMPLE_REPLY_BYTES, "reply")
  if (short !== undefined) return short
  const v = view(bytes)
  const magic = v.getUint32(0)
  if (magic !== P.SIMPLE_REPLY_MAGIC)
    return new NbdProtocolError({ reason: "bad-reply-magic", detail: `reply magic ${hex(magic)}` })
  return { error: v.getUint32(4), cookie: v.getBigUint64(8) }
}

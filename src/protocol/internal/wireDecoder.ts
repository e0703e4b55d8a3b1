/**
 * Incremental frame decoder. Bytes arrive in arbitrary chunks; the decoder keeps the
 * chunks it has not consumed yet and copies each byte at most once (a field or payload
 * that lies inside one chunk is a zero-copy view). Every failure is a typed `WireError`,
 * returned, never thrown; once failed, the decoder stays failed.
 *
 * A payload that spans chunks is copied into room leased from slabs every decoder of the
 * process shares and recycles (`makeSlabPool`): a write or block frame carries the lease's
 * release (`payloadRelease`), which its consumer calls once nothing reads the payload any
 * more — the receiver's log after the record's bytes are written. Never called (any other
 * consumer), the slab is left to the collector: an allocation lost, never a wrong byte.
 *
 * Pushed chunks are kept by reference, not copied: do not mutate a chunk after pushing
 * it (socket chunks are never reused, so this holds for `data` events).
 */
import { Either, Schema } from "effect"
import { crc32c, crc32cSpan } from "../../internal/crc32c.js"
import { makeSlabPool } from "../../internal/slab.js"
import {
  DEFAULT_MAX_FRAME_BYTES,
  DIGEST_BYTES,
  type Block,
  type Frame,
  HEADER_BYTES,
  HEADER_CRC_SPAN,
  HelloPayload,
  Kind,
  MAGIC,
  MAX_CHECKSUM_BLOCKS,
  MAX_SAFE_HIGH_WORD,
  Offset,
  RefusePayload,
  VERSION,
  WireError,
  type Write,
  type WireErrorReason
} from "./wireFrame.js"

export interface DecoderOptions {
  /** Largest frame accepted (header + payload), checked from the header before the payload is buffered. */
  readonly maxFrameBytes?: number | undefined
  /**
   * Largest first frame (default: `maxFrameBytes`). A receiver passes
   * `MAX_HELLO_FRAME_BYTES`: its first frame must be a small hello, so a peer that has
   * not said who it is cannot make it buffer up to `maxFrameBytes`.
   */
  readonly maxFirstFrameBytes?: number | undefined
}

const SLAB_BYTES = 1 << 20
/**
 * Copies of payloads that span socket reads, shared by the process's decoders: recycled
 * slabs, not fresh memory per megabyte (page faults, the collector's external-memory
 * accounting). At most `keep` free slabs stay: 8 MiB, whatever the number of connections.
 */
const copies = makeSlabPool({ slabBytes: SLAB_BYTES, largest: SLAB_BYTES / 4, keep: 8 })

const readU32 = (b: Uint8Array, at: number): number =>
  ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0

const utf8 = new TextDecoder("utf-8", { fatal: true })
const decodeHello = Schema.decodeUnknownEither(Schema.parseJson(HelloPayload))
const decodeRefuse = Schema.decodeUnknownEither(Schema.parseJson(RefusePayload))

/**
 * Decoded write and block frames carry their payload's CRC, checked on arrival, in a private
 * field (no property a reader or a comparison sees): a receiver's log record CRC continues
 * from it (`verifiedPayloadCrc`) instead of passing over the payload a second time. A payload
 * copied because it spanned socket reads carries the release of its pooled room the same way.
 */
class Checked {
  readonly #payloadCrc: number
  readonly #release: (() => void) | undefined
  constructor(payloadCrc: number, release: (() => void) | undefined) {
    this.#payloadCrc = payloadCrc
    this.#release = release
  }
  static crcOf(frame: object): number | undefined {
    return #payloadCrc in frame ? frame.#payloadCrc : undefined
  }
  static releaseOf(frame: object): (() => void) | undefined {
    return #release in frame ? frame.#release : undefined
  }
}

class DecodedWrite extends Checked implements Write {
  readonly _tag = "Write" as const
  constructor(
    readonly seq: number,
    readonly epoch: number,
    readonly offset: number,
    readonly data: Uint8Array,
    payloadCrc: number,
    release: (() => void) | undefined
  ) {
    super(payloadCrc, release)
  }
}

class DecodedBlock extends Checked implements Block {
  readonly _tag = "Block" as const
  constructor(
    readonly seq: number,
    readonly epoch: number,
    readonly block: number,
    readonly data: Uint8Array,
    payloadCrc: number,
    release: (() => void) | undefined
  ) {
    super(payloadCrc, release)
  }
}

/**
 * The CRC32C of a frame's payload as the decoder checked it, for a write or block frame this
 * decoder made (`undefined` for any other: its bytes were not checked here).
 */
export const verifiedPayloadCrc = (frame: Write | Block): number | undefined => Checked.crcOf(frame)

/**
 * For a write or block frame this decoder made whose payload is a pooled copy (it spanned
 * socket reads), the call that hands the copy's room back: idempotent, and only once
 * nothing will read `data` again (after it, other payloads may be copied over it).
 * `undefined` for a payload that is a view of a socket chunk, or a frame made elsewhere.
 */
export const payloadRelease = (frame: Write | Block): (() => void) | undefined => Checked.releaseOf(frame)

const fail = (reason: WireErrorReason, detail: string) => new WireError({ reason, detail })

const hex = (n: number) => `0x${n.toString(16).padStart(8, "0")}`
const badMagic = (magic: number) => fail("bad-magic", `expected ${hex(MAGIC)}, got ${hex(magic)}`)

/** Kinds whose payload must be empty. */
const emptyPayload = (kind: number) =>
  kind === Kind.Welcome ||
  kind === Kind.ResyncBegin ||
  kind === Kind.ResyncEnd ||
  kind === Kind.Ack ||
  kind === Kind.Gap ||
  kind === Kind.KeepAlive

/** Frames whose value holds their payload's bytes (the rest parse it into other values). */
const keepsPayload = (frame: Frame) =>
  frame._tag === "Write" || frame._tag === "Block" || frame._tag === "ChecksumReply"

export class Decoder {
  private readonly maxFrameBytes: number
  private readonly maxFirstFrameBytes: number
  /** Whether a frame was decoded (the first-frame cap no longer applies). */
  private started = false
  /** Always true here; a subclass in ./mutants.ts (for the tests only) turns it off. */
  protected readonly checkPayloadCrc: boolean = true
  private chunks: Array<Uint8Array> = []
  /** Index of the first unconsumed chunk and bytes already consumed from it. */
  private head = 0
  private headOffset = 0
  private available = 0
  /** Set while waiting for the payload of a parsed header, whose fields follow (kept here: no object per frame). */
  private pending = false
  private kind = 0
  private seq = 0
  private epoch = 0
  private offsetOrBlock = 0
  private length = 0
  private payloadCrc = 0
  private failure: WireError | undefined = undefined
  private released = false
  private readonly scratch = new Uint8Array(HEADER_BYTES)
  /** The release of the pooled copy `take` just made (the payload being decoded), if it made one. */
  private copied: (() => void) | undefined = undefined

  constructor(options: DecoderOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
    this.maxFirstFrameBytes = Math.min(this.maxFrameBytes, options.maxFirstFrameBytes ?? this.maxFrameBytes)
  }

  /** Bytes received but not yet part of a decoded frame. */
  get buffered(): number {
    return this.available + (this.pending ? HEADER_BYTES : 0)
  }

  /** The error the decoder failed with, if it has. */
  get failed(): WireError | undefined {
    return this.failure
  }

  /**
   * Drops every buffered byte (a partial frame included), once the connection is gone:
   * nothing the peer sent stays reachable from the decoder. Later pushes are ignored.
   */
  release(): void {
    this.chunks = []
    this.head = 0
    this.headOffset = 0
    this.available = 0
    this.pending = false
    this.released = true
  }

  /** Feeds bytes; returns every frame they complete, or the error (frames decoded before it are dropped). */
  push(chunk: Uint8Array): Either.Either<ReadonlyArray<Frame>, WireError> {
    const out: Array<Frame> = []
    const error = this.pushInto(chunk, out)
    return error === undefined ? Either.right(out) : Either.left(error)
  }

  /**
   * Feeds bytes and appends the frames they complete to `out`. Returns the error, if any;
   * frames appended before it are intact (they precede the corruption).
   */
  pushInto(chunk: Uint8Array, out: Array<Frame>): WireError | undefined {
    if (this.failure !== undefined) return this.failure
    if (this.released) return undefined
    if (chunk.byteLength > 0) {
      this.chunks.push(chunk)
      this.available += chunk.byteLength
    }
    for (;;) {
      if (!this.pending) {
        if (this.available < HEADER_BYTES) {
          // A peer speaking another protocol is told off without waiting for a whole header.
          const magic = this.available >= 4 ? this.peekMagic() : MAGIC
          return magic === MAGIC ? undefined : (this.failure = badMagic(magic))
        }
        // Read in place when the header lies in one chunk (the usual case): no view, no copy.
        const first = this.chunks[this.head]!
        let error: WireError | undefined
        if (first.byteLength - this.headOffset >= HEADER_BYTES) {
          error = this.parseHeader(first, this.headOffset)
          this.available -= HEADER_BYTES
          this.headOffset += HEADER_BYTES
          if (this.headOffset === first.byteLength) this.advance()
        } else error = this.parseHeader(this.take(HEADER_BYTES, this.scratch), 0)
        if (error !== undefined) return (this.failure = error)
        this.pending = true
      }
      if (this.available < this.length) return undefined
      this.pending = false
      const frame = this.frame(this.take(this.length, undefined))
      const release = this.copied
      this.copied = undefined
      // A copy the frame does not keep (its payload parsed into other values, or bad) goes back now.
      if (release !== undefined && (frame instanceof WireError || !keepsPayload(frame))) release()
      if (frame instanceof WireError) return (this.failure = frame)
      this.started = true
      out.push(frame)
    }
  }

  private peekMagic(): number {
    let magic = 0
    let index = this.head
    let at = this.headOffset
    for (let i = 0; i < 4; i++) {
      let chunk = this.chunks[index]!
      while (at >= chunk.byteLength) {
        chunk = this.chunks[++index]!
        at = 0
      }
      magic = magic * 256 + chunk[at++]!
    }
    return magic
  }

  /** Consumes `n` buffered bytes: a view when they lie in one chunk, else one copy. */
  private take(n: number, into: Uint8Array | undefined): Uint8Array {
    this.available -= n
    if (n === 0) return into === undefined ? new Uint8Array(0) : into.subarray(0, 0)
    const first = this.chunks[this.head]!
    if (first.byteLength - this.headOffset >= n) {
      const view = first.subarray(this.headOffset, this.headOffset + n)
      this.headOffset += n
      if (this.headOffset === first.byteLength) this.advance()
      return view
    }
    let target = into
    if (target === undefined) {
      const lease = copies.room(n)
      this.copied = lease.release
      target = lease.bytes
    }
    let filled = 0
    while (filled < n) {
      const chunk = this.chunks[this.head]!
      const count = Math.min(n - filled, chunk.byteLength - this.headOffset)
      target.set(chunk.subarray(this.headOffset, this.headOffset + count), filled)
      filled += count
      this.headOffset += count
      if (this.headOffset === chunk.byteLength) this.advance()
    }
    return target
  }

  private advance(): void {
    this.chunks[this.head] = undefined as never // let the chunk be collected
    this.head++
    this.headOffset = 0
    if (this.head === this.chunks.length) {
      this.chunks = []
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.chunks.length) {
      // Amortised O(1): compact only when the consumed prefix dominates.
      this.chunks = this.chunks.slice(this.head)
      this.head = 0
    }
  }

  /** Checks the header at `h[at..]` and keeps its fields in `this` (the pending frame). */
  private parseHeader(h: Uint8Array, at: number): WireError | undefined {
    const magic = readU32(h, at + Offset.magic)
    if (magic !== MAGIC) return badMagic(magic)
    const version = h[at + Offset.version]!
    if (version !== VERSION) return fail("bad-version", `expected version ${VERSION}, got ${version}`)
    const headerCrc = readU32(h, at + Offset.headerCrc)
    const actual = crc32cSpan(h, at, at + HEADER_CRC_SPAN)
    if (headerCrc !== actual)
      return fail("header-crc", `header CRC ${hex(headerCrc)}, computed ${hex(actual)}`)
    const kind = h[at + Offset.kind]!
    if (kind < Kind.Hello || kind > Kind.ChecksumRefused)
      return fail("unknown-kind", `unknown frame kind ${kind}`)
    const flags = (h[at + Offset.flags]! << 8) | h[at + Offset.flags + 1]!
    if (flags !== 0) return fail("bad-flags", `flags must be 0, got ${flags}`)
    const seqHigh = readU32(h, at + Offset.seq)
    const positionHigh = readU32(h, at + Offset.offsetOrBlock)
    if (seqHigh > MAX_SAFE_HIGH_WORD) return fail("unsafe-integer", "seq exceeds 2^53 - 1")
    if (positionHigh > MAX_SAFE_HIGH_WORD) return fail("unsafe-integer", "offset/block exceeds 2^53 - 1")
    const length = readU32(h, at + Offset.length)
    const max = this.started ? this.maxFrameBytes : this.maxFirstFrameBytes
    if (HEADER_BYTES + length > max)
      return fail(
        "too-large",
        `${this.started ? "frame" : "first frame"} of ${HEADER_BYTES + length} bytes exceeds the maximum of ${max}`
      )
    if (length > 0 && emptyPayload(kind)) return fail("bad-payload", `frame kind ${kind} carries no payload`)
    this.kind = kind
    this.seq = seqHigh * 0x1_0000_0000 + readU32(h, at + Offset.seq + 4)
    this.epoch = readU32(h, at + Offset.epoch)
    this.offsetOrBlock = positionHigh * 0x1_0000_0000 + readU32(h, at + Offset.offsetOrBlock + 4)
    this.length = length
    this.payloadCrc = readU32(h, at + Offset.payloadCrc)
    return undefined
  }

  private frame(payload: Uint8Array): Frame | WireError {
    const { seq, epoch, offsetOrBlock, payloadCrc } = this
    if (this.checkPayloadCrc) {
      const actual = this.length === 0 ? 0 : crc32c(payload)
      if (actual !== payloadCrc)
        return fail("payload-crc", `payload CRC ${hex(payloadCrc)}, computed ${hex(actual)}`)
    }
    switch (this.kind) {
      case Kind.Hello: {
        const text = this.text(payload)
        if (text instanceof WireError) return text
        const decoded = decodeHello(text)
        if (Either.isLeft(decoded)) return fail("bad-payload", `hello: ${decoded.left.message}`)
        return { _tag: "Hello", ...decoded.right }
      }
      case Kind.Welcome:
        return { _tag: "Welcome", durableSeq: seq }
      // Checked above unless a mutant turned the check off: then no CRC is vouched for.
      case Kind.Write:
        return this.checkPayloadCrc
          ? new DecodedWrite(seq, epoch, offsetOrBlock, payload, payloadCrc, this.copied)
          : { _tag: "Write", seq, epoch, offset: offsetOrBlock, data: payload }
      case Kind.Block:
        return this.checkPayloadCrc
          ? new DecodedBlock(seq, epoch, offsetOrBlock, payload, payloadCrc, this.copied)
          : { _tag: "Block", seq, epoch, block: offsetOrBlock, data: payload }
      case Kind.ResyncBegin:
        return { _tag: "ResyncBegin", seq, epoch, base: offsetOrBlock }
      case Kind.ResyncEnd:
        return { _tag: "ResyncEnd", seq, epoch }
      case Kind.Ack:
        return { _tag: "Ack", seq }
      case Kind.Gap:
        return { _tag: "Gap", expected: seq }
      case Kind.KeepAlive:
        return { _tag: "KeepAlive" }
      case Kind.ChecksumRequest:
        return this.checksumRequest(offsetOrBlock, epoch, payload)
      case Kind.ChecksumReply: {
        const n = payload.byteLength / DIGEST_BYTES
        if (!Number.isInteger(n) || n < 1 || n > MAX_CHECKSUM_BLOCKS)
          return fail(
            "bad-payload",
            `checksum reply: ${payload.byteLength} bytes are not 1 to ${MAX_CHECKSUM_BLOCKS} digests of ${DIGEST_BYTES} bytes`
          )
        return { _tag: "ChecksumReply", id: offsetOrBlock, through: seq, algorithm: epoch, digests: payload }
      }
      case Kind.ChecksumRefused: {
        const text = this.text(payload)
        if (text instanceof WireError) return text
        const decoded = decodeRefuse(text)
        if (Either.isLeft(decoded)) return fail("bad-payload", `checksum refused: ${decoded.left.message}`)
        return { _tag: "ChecksumRefused", id: offsetOrBlock, ...decoded.right }
      }
      default: {
        // Kind.Refuse: `parseHeader` let no other kind through.
        const text = this.text(payload)
        if (text instanceof WireError) return text
        const decoded = decodeRefuse(text)
        if (Either.isLeft(decoded)) return fail("bad-payload", `refuse: ${decoded.left.message}`)
        return { _tag: "Refuse", ...decoded.right }
      }
    }
  }

  /** 1 to `MAX_CHECKSUM_BLOCKS` u64 block indexes, strictly increasing, each a safe integer. */
  private checksumRequest(id: number, algorithm: number, payload: Uint8Array): Frame | WireError {
    const n = payload.byteLength / 8
    if (!Number.isInteger(n) || n < 1 || n > MAX_CHECKSUM_BLOCKS)
      return fail(
        "bad-payload",
        `checksum request: ${payload.byteLength} bytes are not 1 to ${MAX_CHECKSUM_BLOCKS} block indexes of 8 bytes`
      )
    const blocks: Array<number> = []
    let previous = -1
    for (let i = 0; i < n; i++) {
      const high = readU32(payload, i * 8)
      if (high > MAX_SAFE_HIGH_WORD)
        return fail("bad-payload", `checksum request: block ${i} exceeds 2^53 - 1`)
      const block = high * 0x1_0000_0000 + readU32(payload, i * 8 + 4)
      if (block <= previous)
        return fail("bad-payload", `checksum request: blocks must increase, ${block} after ${previous}`)
      blocks.push(block)
      previous = block
    }
    return { _tag: "ChecksumRequest", id, algorithm, blocks }
  }

  private text(payload: Uint8Array): string | WireError {
    try {
      return utf8.decode(payload)
    } catch {
      return fail("bad-payload", "payload is not valid UTF-8")
    }
  }
}

export const makeDecoder = (options?: DecoderOptions): Decoder => new Decoder(options)

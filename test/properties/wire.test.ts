/**
 * Properties of the wire codec (docs/wire.md): round trips through arbitrary chunkings,
 * corruption always surfaces as a typed error, truncation waits, oversize is refused from
 * the header alone. A mutant decoder that skips the payload CRC must be caught.
 */
import { Either } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Wire from "../../src/protocol/Wire.js"
import { DecoderSkippingPayloadCrc } from "../../src/protocol/internal/mutants.js"
import { Decoder } from "../../src/protocol/internal/wireDecoder.js"
import { encodePartsWith, encodeWith } from "../../src/protocol/internal/wireEncode.js"

const RUNS = Math.round(200 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1))

// ---------------------------------------------------------------------------------------------
// Generators

const seq = fc.maxSafeNat()
const epoch = fc.integer({ min: 0, max: 0xffff_ffff })
const data = fc.uint8Array({ maxLength: 300, size: "medium" })
const text = fc.string({ unit: "binary", maxLength: 40 })
/** A digest's algorithm code (the epoch field of checksum frames): the two known, the next, the largest, any u32. */
const algorithm = fc.oneof(fc.constantFrom(0, 1, 2, 0xffff_ffff), epoch)

const frame: fc.Arbitrary<Wire.Frame> = fc.oneof(
  fc.record({
    _tag: fc.constant("Hello" as const),
    diskId: fc.string({ unit: "binary", minLength: 1, maxLength: 40 }),
    blockSize: fc.maxSafeNat(),
    blockCount: fc.maxSafeNat(),
    watermark: fc.maxSafeNat()
  }),
  fc.record({ _tag: fc.constant("Welcome" as const), durableSeq: seq }),
  fc.record({ _tag: fc.constant("Write" as const), seq, epoch, offset: fc.maxSafeNat(), data }),
  fc.record({ _tag: fc.constant("Block" as const), seq, epoch, block: fc.maxSafeNat(), data }),
  fc.record({ _tag: fc.constant("ResyncBegin" as const), seq, epoch, base: fc.maxSafeNat() }),
  fc.record({ _tag: fc.constant("ResyncEnd" as const), seq, epoch }),
  fc.record({ _tag: fc.constant("Ack" as const), seq }),
  fc.record({ _tag: fc.constant("Gap" as const), expected: seq }),
  fc.record({ _tag: fc.constant("Refuse" as const), reason: text, detail: text }),
  fc.constant<Wire.KeepAlive>({ _tag: "KeepAlive" }),
  // Checksums (issue 18): batch sizes from 1 to the maximum, block indexes up to 2^53 - 1.
  fc.record({
    _tag: fc.constant("ChecksumRequest" as const),
    id: seq,
    algorithm,
    blocks: fc.oneof(
      {
        weight: 9,
        arbitrary: fc
          .uniqueArray(fc.oneof(fc.nat({ max: 64 }), fc.maxSafeNat()), { minLength: 1, maxLength: 24 })
          .map((blocks) => blocks.sort((a, b) => a - b))
      },
      // The largest batch, ending at the largest index.
      {
        weight: 1,
        arbitrary: fc.constant(
          Array.from(
            { length: Wire.MAX_CHECKSUM_BLOCKS },
            (_, i) => Number.MAX_SAFE_INTEGER - Wire.MAX_CHECKSUM_BLOCKS + 1 + i
          )
        )
      }
    )
  }),
  fc.record({
    _tag: fc.constant("ChecksumReply" as const),
    id: seq,
    through: seq,
    algorithm,
    digests: fc
      .oneof(
        { weight: 9, arbitrary: fc.integer({ min: 1, max: 4 }) },
        { weight: 1, arbitrary: fc.constant(Wire.MAX_CHECKSUM_BLOCKS) }
      )
      .chain((n) => fc.uint8Array({ minLength: n * Wire.DIGEST_BYTES, maxLength: n * Wire.DIGEST_BYTES }))
  }),
  fc.record({ _tag: fc.constant("ChecksumRefused" as const), id: seq, reason: text, detail: text })
)
const frames = fc.array(frame, { minLength: 1, maxLength: 12 })
/** Positions are reduced modulo the stream length, so one generator fits every stream. */
const position = fc.nat()
const cuts = fc.array(position, { maxLength: 30 })

// ---------------------------------------------------------------------------------------------
// Helpers

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => Buffer.concat(parts)

/** Splits `bytes` at the given positions (empty chunks included). */
const chunk = (bytes: Uint8Array, positions: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = positions.map((p) => p % (bytes.byteLength + 1)).sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let from = 0
  for (const p of points) {
    out.push(bytes.subarray(from, p))
    from = p
  }
  out.push(bytes.subarray(from))
  return out
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b))

const sameFrame = (a: Wire.Frame, b: Wire.Frame): boolean => {
  if (a._tag !== b._tag) return false
  for (const key of Object.keys(a) as Array<keyof typeof a>) {
    const x = a[key] as unknown
    const y = b[key] as unknown
    if (x instanceof Uint8Array && y instanceof Uint8Array) {
      if (!sameBytes(x, y)) return false
    } else if (Array.isArray(x) && Array.isArray(y)) {
      if (x.length !== y.length || x.some((v, i) => v !== y[i])) return false
    } else if (x !== y) return false
  }
  return Object.keys(a).length === Object.keys(b).length
}

interface Outcome {
  readonly frames: Array<Wire.Frame>
  readonly error: Wire.WireError | undefined
  readonly decoder: Decoder
}

const decodeChunks = (chunks: ReadonlyArray<Uint8Array>, decoder: Decoder = new Decoder()): Outcome => {
  const out: Array<Wire.Frame> = []
  let error: Wire.WireError | undefined
  for (const c of chunks) {
    error = decoder.pushInto(c, out)
    if (error !== undefined) break
  }
  return { frames: out, error, decoder }
}

// ---------------------------------------------------------------------------------------------

describe("wire codec", () => {
  it("round-trips random frame sequences through random chunkings", () => {
    fc.assert(
      fc.property(frames, cuts, (fs, positions) => {
        const stream = concat(fs.map(Wire.encode))
        const { frames: decoded, error, decoder } = decodeChunks(chunk(stream, positions))
        expect(error).toBeUndefined()
        expect(decoded.length).toBe(fs.length)
        decoded.forEach((f, i) => {
          expect(sameFrame(f, fs[i]!)).toBe(true)
        })
        expect(decoder.buffered).toBe(0)
        // `push` agrees with `pushInto`.
        const whole = new Decoder().push(stream)
        expect(Either.isRight(whole) && whole.right.length === fs.length).toBe(true)
      }),
      { numRuns: RUNS }
    )
  })

  /** Corrupts 1–3 bytes (non-zero XOR); the decoder must report it or yield only originals. */
  const corruptionProperty = (makeDecoder: () => Decoder) =>
    fc.property(
      frames,
      fc.array(fc.tuple(position, fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 3 }),
      cuts,
      (fs, hits, positions) => {
        const stream = Buffer.from(concat(fs.map(Wire.encode)))
        for (const [at, mask] of hits) {
          const i = at % stream.byteLength
          stream[i] = stream[i]! ^ mask
        }
        const changed = !stream.equals(concat(fs.map(Wire.encode)))
        const { frames: decoded, error } = decodeChunks(chunk(stream, positions), makeDecoder())
        // Never a frame different from the original.
        decoded.forEach((f, i) => {
          if (!sameFrame(f, fs[i]!)) throw new Error(`frame ${i} altered without an error: ${f._tag}`)
        })
        // Never a silent acceptance or a hang: a changed stream ends in a typed error.
        if (changed && error === undefined) throw new Error("corruption went unnoticed")
        if (error !== undefined && !(error instanceof Wire.WireError)) throw new Error("untyped error")
      }
    )

  it("the zero-copy parts (header, then the payload itself) are byte for byte the frame, from any allocator", () => {
    // A slab-like allocator: views at odd offsets into a shared buffer, garbage left in it.
    const slab = new Uint8Array(1 << 16).fill(0xee)
    let at = 0
    const carve = (n: number) => {
      if (at + n > slab.length) at = 0
      const view = slab.subarray(at, at + n)
      at += n + 3
      return view
    }
    fc.assert(
      fc.property(frame, (f) => {
        const whole = Wire.encode(f)
        const parts = encodePartsWith(carve)(f)
        expect(Buffer.concat(parts.map((p) => Buffer.from(p)))).toEqual(Buffer.from(whole))
        expect(Buffer.from(encodeWith(carve)(f))).toEqual(Buffer.from(whole))
        if ((f._tag === "Write" || f._tag === "Block") && f.data.length > 0) expect(parts[1]).toBe(f.data)
        if (f._tag === "ChecksumReply") expect(parts[1]).toBe(f.digests)
      }),
      { numRuns: RUNS }
    )
  })

  it("reports random corruption as a typed error, never a different frame or a throw", () => {
    fc.assert(
      corruptionProperty(() => new Decoder()),
      { numRuns: RUNS }
    )
  })

  it("MUTANT: a decoder that skips the payload CRC is caught by the corruption property", () => {
    // No shrinking: only that it fails matters (shrinking a 1024-block request is slow).
    const result = fc.check(
      corruptionProperty(() => new DecoderSkippingPayloadCrc()),
      { numRuns: RUNS, endOnFailure: true }
    )
    expect(result.failed).toBe(true)
  })

  it("truncation yields exactly the complete frames, no error, and resumes with the rest", () => {
    fc.assert(
      fc.property(frames, position, cuts, (fs, at, positions) => {
        const encoded = fs.map(Wire.encode)
        const stream = concat(encoded)
        const cut = at % stream.byteLength
        const { frames: decoded, error, decoder } = decodeChunks(chunk(stream.subarray(0, cut), positions))
        expect(error).toBeUndefined()
        let complete = 0
        let end = 0
        while (complete < encoded.length && end + encoded[complete]!.byteLength <= cut)
          end += encoded[complete++]!.byteLength
        expect(decoded.length).toBe(complete)
        decoded.forEach((f, i) => {
          expect(sameFrame(f, fs[i]!)).toBe(true)
        })
        expect(decoder.buffered).toBe(cut - end)
        // The decoder just waits: the rest completes the stream.
        const rest: Array<Wire.Frame> = []
        expect(decoder.pushInto(stream.subarray(cut), rest)).toBeUndefined()
        expect(decoded.length + rest.length).toBe(fs.length)
        rest.forEach((f, i) => {
          expect(sameFrame(f, fs[complete + i]!)).toBe(true)
        })
      }),
      { numRuns: RUNS }
    )
  })

  it("caps the first frame alone: refused from its header just beyond the cap, any later frame up to the maximum", () => {
    const max = 1 << 16
    fc.assert(
      fc.property(
        // Caps and sizes around each other and around the maximum.
        fc.integer({ min: Wire.HEADER_BYTES, max: max + 64 }),
        fc.integer({ min: -3, max: 3 }),
        fc.integer({ min: 0, max: max + 64 - Wire.HEADER_BYTES }),
        (cap, delta, laterSize) => {
          const firstSize = Math.max(0, cap - Wire.HEADER_BYTES + delta)
          const first = Wire.encode({
            _tag: "Block",
            seq: 1,
            epoch: 0,
            block: 0,
            data: new Uint8Array(firstSize)
          })
          const later = Wire.encode({
            _tag: "Block",
            seq: 2,
            epoch: 0,
            block: 0,
            data: new Uint8Array(laterSize)
          })
          const decoder = new Decoder({ maxFrameBytes: max, maxFirstFrameBytes: cap })
          const out: Array<Wire.Frame> = []
          const error = decoder.pushInto(Buffer.concat([first, later]), out)
          const firstLimit = Math.min(cap, max)
          if (first.byteLength > firstLimit) {
            expect(error?.reason).toBe("too-large")
            expect(out).toEqual([])
          } else if (later.byteLength > max) {
            expect(error?.reason).toBe("too-large")
            expect(out.length).toBe(1)
          } else {
            expect(error).toBeUndefined()
            expect(out.length).toBe(2)
          }
        }
      ),
      { numRuns: RUNS }
    )
  })

  it("refuses an oversize frame from its header, before the payload arrives", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1 << 20 }),
        fc.integer({ min: Wire.HEADER_BYTES, max: Wire.HEADER_BYTES + (1 << 20) }),
        (size, max) => {
          const bytes = Wire.encode({ _tag: "Block", seq: 1, epoch: 1, block: 0, data: new Uint8Array(size) })
          const decoder = new Decoder({ maxFrameBytes: max })
          const header = decoder.push(bytes.subarray(0, Wire.HEADER_BYTES))
          if (Wire.HEADER_BYTES + size > max) {
            expect(Either.isLeft(header) && header.left.reason).toBe("too-large")
            // Stays failed.
            const more = decoder.push(bytes.subarray(Wire.HEADER_BYTES))
            expect(Either.isLeft(more) && more.left.reason).toBe("too-large")
          } else {
            const rest = decoder.push(bytes.subarray(Wire.HEADER_BYTES))
            // An empty payload completes with the header.
            const count = Either.getOrThrow(header).length + Either.getOrThrow(rest).length
            expect(count).toBe(1)
          }
        }
      ),
      { numRuns: RUNS }
    )
  })
})

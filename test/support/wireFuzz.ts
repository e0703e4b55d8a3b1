/**
 * Wire fuzzing of the receiver: conversations (the bytes a peer sends on one connection),
 * a model of what the service must make of them, the committed corpus's cases and a
 * fast-check 4 generator of mutated conversations.
 *
 * The model decodes the bytes with the wire decoder (its own properties are in
 * test/properties/wire.test.ts) and applies the service's rules: the first frame must
 * be a hello with a valid geometry that matches the disk's; then records go through
 * `domain/Receiver` and `Wire.checkRecord`; keep-alives are fine, and checksum requests
 * inside the disk, by any digest code (answered, or refused as `unsupported`, the log unchanged;
 * one beyond it is `bad-request`); anything else, a
 * decoding error or the end inside a frame closes the connection. It tells the verdict
 * the service must log and the records it must append: no more, no fewer.
 */
import { Either } from "effect"
import fc from "fast-check"
import { crc32c } from "../../src/internal/crc32c.js"
import * as Wire from "../../src/protocol/Wire.js"
import * as Geometry from "../../src/domain/Geometry.js"
import * as Receiver from "../../src/domain/Receiver.js"
import type { Planned } from "./receiverProcess.js"

/** How a connection ended, as the service logs it. */
export type Verdict = "clean" | `refused:${string}` | `wire-error:${string}`

interface DiskModel {
  readonly blockSize: number
  readonly blockCount: number
  receiver: Receiver.ReceiverState
  readonly log: Array<Planned>
}

export interface Outcome {
  readonly verdict: Verdict
  readonly diskId: string | undefined
  /** Records appended to the disk's log by this conversation. */
  readonly appended: ReadonlyArray<Planned>
}

const isRecord = (frame: Wire.Frame): frame is Wire.Record =>
  frame._tag === "Write" ||
  frame._tag === "Block" ||
  frame._tag === "ResyncBegin" ||
  frame._tag === "ResyncEnd"

/** The service's disks as the conversations so far left them. */
export class ServiceModel {
  readonly disks = new Map<string, DiskModel>()

  constructor(readonly maxFrameBytes: number = Wire.DEFAULT_MAX_FRAME_BYTES) {}

  /** What the service must make of one connection's bytes (the peer then ends its side). */
  converse(bytes: Uint8Array): Outcome {
    const decoder = Wire.makeDecoder({
      maxFrameBytes: this.maxFrameBytes,
      maxFirstFrameBytes: Wire.MAX_HELLO_FRAME_BYTES
    })
    const frames: Array<Wire.Frame> = []
    const error = decoder.pushInto(bytes, frames)
    const appended: Array<Planned> = []
    let disk: DiskModel | undefined
    let diskId: string | undefined
    const end = (verdict: Verdict): Outcome => ({ verdict, diskId, appended })
    for (const frame of frames) {
      if (disk === undefined) {
        if (frame._tag !== "Hello") return end("wire-error:unexpected-frame")
        if (Either.isLeft(Geometry.make(frame.blockSize, frame.blockCount)))
          return end("refused:bad-geometry")
        const known = this.disks.get(frame.diskId)
        if (
          known !== undefined &&
          (known.blockSize !== frame.blockSize || known.blockCount !== frame.blockCount)
        )
          return end("refused:geometry-mismatch")
        diskId = frame.diskId
        disk = known ?? {
          blockSize: frame.blockSize,
          blockCount: frame.blockCount,
          receiver: Receiver.initial(0),
          log: []
        }
        this.disks.set(frame.diskId, disk)
      } else if (isRecord(frame)) {
        if (Wire.checkRecord(disk, frame) !== undefined) return end("wire-error:bad-record")
        const { state, verdict } = Receiver.receive(
          disk.receiver,
          frame.seq,
          Wire.recordKind(frame),
          frame._tag === "ResyncBegin" ? frame.base : frame.seq - 1
        )
        disk.receiver = state
        if (verdict._tag === "Accept") {
          const planned = { record: frame, recoveryPoint: verdict.recoveryPoint }
          disk.log.push(planned)
          appended.push(planned)
        }
      } else if (frame._tag === "ChecksumRequest") {
        // Answered, the log unchanged; a block beyond the disk closes the connection.
        if (Wire.checkChecksumRequest(disk, frame) !== undefined) return end("wire-error:bad-request")
      } else if (frame._tag !== "KeepAlive") return end("wire-error:unexpected-frame")
    }
    if (error !== undefined) return end(`wire-error:${error.reason}`)
    if (decoder.buffered > 0) return end("wire-error:truncated")
    return end("clean")
  }
}

// ---------------------------------------------------------------------------------------------
// Byte surgery: edits that keep (or deliberately break) the header CRC.

const concat = (parts: ReadonlyArray<Uint8Array>) => new Uint8Array(Buffer.concat(parts))
export const encodeAll = (frames: ReadonlyArray<Wire.Frame>) => concat(frames.map(Wire.encode))

/** Recomputes a frame's header CRC after an edit of its header (a forgery the CRC cannot see). */
export const resealHeader = (bytes: Uint8Array, at: number) => {
  const view = new DataView(bytes.buffer, bytes.byteOffset)
  view.setUint32(at + 36, crc32c(bytes.subarray(at, at + 36)))
  return bytes
}
/** Recomputes both CRCs of a whole frame starting at `at` (its payload edited too). */
export const resealFrame = (bytes: Uint8Array, at: number) => {
  const view = new DataView(bytes.buffer, bytes.byteOffset)
  const length = view.getUint32(at + 28)
  const payload = bytes.subarray(at + Wire.HEADER_BYTES, at + Wire.HEADER_BYTES + length)
  view.setUint32(at + 32, length === 0 ? 0 : crc32c(payload))
  return resealHeader(bytes, at)
}

/** Where each frame of an encoded conversation starts. */
export const frameStarts = (frames: ReadonlyArray<Wire.Frame>) => {
  const starts: Array<number> = []
  let at = 0
  for (const frame of frames) {
    starts.push(at)
    at += Wire.encode(frame).byteLength
  }
  return starts
}

// ---------------------------------------------------------------------------------------------
// The committed corpus: small named conversations, each on its own disk unless it says so.

const geometry = { blockSize: 4096, blockCount: 16 }
const hello = (diskId: string, g: { blockSize: number; blockCount: number } = geometry): Wire.Hello => ({
  _tag: "Hello",
  diskId,
  ...g,
  watermark: 0
})
const write = (seq: number, offset: number, length: number, fill: number, epoch = 0): Wire.Write => ({
  _tag: "Write",
  seq,
  epoch,
  offset,
  data: new Uint8Array(length).fill(fill)
})
const block = (seq: number, index: number, fill: number, size = geometry.blockSize): Wire.Block => ({
  _tag: "Block",
  seq,
  epoch: 1,
  block: index,
  data: new Uint8Array(size).fill(fill)
})
const checksums = (id: number, blocks: ReadonlyArray<number>, algorithm = 0): Wire.ChecksumRequest => ({
  _tag: "ChecksumRequest",
  algorithm,
  id,
  blocks
})
const writes = (from: number, count: number) =>
  Array.from({ length: count }, (_, i) => write(from + i, (from + i) * 100, 50 + i, from + i))

/** Edits byte(s) of frame `index` of `frames` at `offsets` (relative to its start) with `edit`. */
const edited = (
  frames: ReadonlyArray<Wire.Frame>,
  index: number,
  edit: (bytes: Uint8Array, at: number) => void
) => {
  const bytes = encodeAll(frames)
  edit(bytes, frameStarts(frames)[index]!)
  return bytes
}
const setU32 = (bytes: Uint8Array, at: number, n: number) =>
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(at, n)
const utf8 = (s: string) => new TextEncoder().encode(s)

export const corpusCases = (): ReadonlyArray<{ readonly name: string; readonly bytes: Uint8Array }> => {
  const valid: Array<Wire.Frame> = [
    hello("c01"),
    ...writes(1, 4),
    { _tag: "KeepAlive" },
    { _tag: "ResyncBegin", seq: 5, epoch: 1, base: 4 },
    block(6, 3, 0x66),
    write(7, 5000, 10, 7, 1),
    { _tag: "ResyncEnd", seq: 8, epoch: 1 },
    write(9, 0, 4096, 9, 1)
  ]
  const three = (id: string) => [hello(id), ...writes(1, 3)]
  return [
    { name: "01-valid-conversation", bytes: encodeAll(valid) },
    { name: "02-hello-only", bytes: encodeAll([hello("c02")]) },
    { name: "03-empty", bytes: new Uint8Array(0) },
    // The last write (40 + 52 bytes) cut 20 bytes into its header.
    { name: "04-truncated-header", bytes: encodeAll(three("c04")).subarray(0, -(52 + 20)) },
    { name: "05-truncated-payload", bytes: encodeAll(three("c05")).subarray(0, -10) },
    {
      name: "06-flipped-payload",
      bytes: edited(three("c06"), 2, (b, at) => {
        b[at + 45]! ^= 0x20
      })
    },
    {
      name: "07-flipped-header",
      bytes: edited(three("c07"), 3, (b, at) => {
        b[at + 25]! ^= 0x01
      })
    },
    { name: "08-bad-magic", bytes: utf8("GET / HTTP/1.1\r\nHost: receiver\r\n\r\n") },
    {
      name: "09-bad-version",
      bytes: edited(three("c09"), 2, (b, at) => {
        b[at + 4] = 2
        resealHeader(b, at)
      })
    },
    {
      name: "10-unknown-kind",
      bytes: edited(three("c10"), 2, (b, at) => {
        b[at + 5] = Wire.Kind.ChecksumRefused + 1
        resealHeader(b, at)
      })
    },
    {
      name: "11-bad-flags",
      bytes: edited(three("c11"), 1, (b, at) => {
        b[at + 7] = 0x80
        resealHeader(b, at)
      })
    },
    {
      name: "12-oversized-length",
      bytes: edited(three("c12"), 2, (b, at) => {
        setU32(b, at + 28, Wire.DEFAULT_MAX_FRAME_BYTES)
        resealHeader(b, at)
      })
    },
    {
      name: "13-oversized-hello",
      bytes: edited([hello("c13")], 0, (b, at) => {
        setU32(b, at + 28, Wire.MAX_HELLO_FRAME_BYTES)
        resealHeader(b, at)
      })
    },
    { name: "14-record-before-hello", bytes: encodeAll([write(1, 0, 10, 1), hello("c14")]) },
    {
      name: "15-hello-then-garbage",
      bytes: concat([
        Wire.encode(hello("c15")),
        utf8("\u0000\u0001garbage that is no frame at all, 48 bytes...")
      ])
    },
    {
      name: "16-interleaved-valid-invalid",
      bytes: edited([hello("c16"), ...writes(1, 5)], 3, (b, at) => {
        b[at + 41]! ^= 0xff
      })
    },
    { name: "17-second-hello", bytes: encodeAll([...three("c17"), hello("c17"), write(4, 0, 5, 4)]) },
    {
      name: "18-ack-from-the-filter",
      bytes: encodeAll([...three("c18"), { _tag: "Ack", seq: 3 }, write(4, 0, 5, 4)])
    },
    {
      name: "19-write-beyond-the-disk",
      bytes: encodeAll([
        hello("c19"),
        write(1, 0, 10, 1),
        write(2, geometry.blockSize * geometry.blockCount - 5, 10, 2)
      ])
    },
    {
      name: "20-block-of-the-wrong-size",
      bytes: encodeAll([hello("c20"), write(1, 0, 10, 1), block(2, 1, 2, 100)])
    },
    {
      name: "21-bad-geometry",
      bytes: encodeAll([hello("c21", { blockSize: 1000, blockCount: 4 }), write(1, 0, 10, 1)])
    },
    {
      name: "22-geometry-mismatch",
      bytes: encodeAll([hello("c01", { blockSize: 4096, blockCount: 32 }), write(10, 0, 10, 1)])
    },
    {
      name: "23-gap-then-resync",
      bytes: encodeAll([
        hello("c23"),
        ...writes(1, 2),
        write(4, 0, 10, 4),
        write(5, 0, 10, 5),
        { _tag: "ResyncBegin", seq: 6, epoch: 1, base: 2 },
        block(7, 0, 7),
        { _tag: "ResyncEnd", seq: 8, epoch: 1 }
      ])
    },
    {
      name: "24-duplicates",
      bytes: encodeAll([hello("c24"), ...writes(1, 3), ...writes(2, 2), ...writes(4, 1)])
    },
    { name: "25-keep-alive-before-hello", bytes: encodeAll([{ _tag: "KeepAlive" }, hello("c25")]) },
    {
      name: "26-unsafe-seq",
      bytes: edited(three("c26"), 1, (b, at) => {
        setU32(b, at + 8, 0x0020_0000)
        resealHeader(b, at)
      })
    },
    {
      // The wire cannot tell a forgery with valid CRCs: the changed bytes are logged as sent.
      name: "27-forged-payload-valid-crcs",
      bytes: edited(three("c27"), 2, (b, at) => {
        b[at + 40] = 0xee
        resealFrame(b, at)
      })
    },
    {
      name: "28-hello-not-json",
      bytes: (() => {
        const bytes = concat([Wire.encode(hello("c28")), Wire.encode(write(1, 0, 5, 1))])
        bytes[40] = 0x5b // "[" for "{": the payload CRC resealed, the JSON broken
        return resealFrame(bytes, 0)
      })()
    },
    {
      name: "29-payload-on-a-keep-alive",
      bytes: edited([hello("c29"), { _tag: "KeepAlive" }, write(1, 0, 5, 1)], 1, (b, at) => {
        setU32(b, at + 28, 1)
        resealHeader(b, at)
      })
    },
    {
      name: "30-keep-alives-only",
      bytes: encodeAll([hello("c30"), ...Array(20).fill({ _tag: "KeepAlive" })])
    },
    // Checksum requests (issue 18): answered between records; the log holds the records only.
    {
      name: "31-checksum-requests",
      bytes: encodeAll([
        hello("c31"),
        ...writes(1, 3),
        checksums(1, [0, geometry.blockCount - 1]),
        ...writes(4, 2),
        checksums(2, [0, 1, 2, 3]),
        { _tag: "KeepAlive" },
        checksums(
          3,
          Array.from({ length: geometry.blockCount }, (_, i) => i)
        )
      ])
    },
    {
      name: "32-checksum-request-beyond-the-disk",
      bytes: encodeAll([
        hello("c32"),
        ...writes(1, 2),
        checksums(1, [3, geometry.blockCount]),
        ...writes(3, 1)
      ])
    },
    {
      // Blocks out of order under valid CRCs: the payload is refused before the disk is consulted.
      name: "33-checksum-request-not-increasing",
      bytes: edited([hello("c33"), ...writes(1, 1), checksums(1, [2, 3]), ...writes(2, 1)], 2, (b, at) => {
        b[at + 40 + 15] = 1 // 2, 1
        resealFrame(b, at)
      })
    },
    {
      name: "34-checksum-request-empty",
      bytes: edited([hello("c34"), ...writes(1, 1), checksums(1, [2]), ...writes(2, 1)], 2, (b, at) => {
        // No payload, and no payload CRC: the empty batch itself is what is refused.
        setU32(b, at + 28, 0)
        setU32(b, at + 32, 0)
        resealHeader(b, at)
      })
    },
    {
      name: "35-checksum-reply-from-the-filter",
      bytes: encodeAll([
        hello("c35"),
        ...writes(1, 1),
        { _tag: "ChecksumReply", algorithm: 0, id: 1, through: 1, digests: new Uint8Array(32) },
        ...writes(2, 1)
      ])
    },
    { name: "36-checksum-request-before-hello", bytes: encodeAll([checksums(1, [0]), hello("c36")]) },
    {
      // The digest's algorithm codes (the epoch field): SHA-256, BLAKE3, and two no algorithm
      // has, each refused as unsupported with the connection up; the log holds the records only.
      name: "37-checksum-request-algorithms",
      bytes: encodeAll([
        hello("c37"),
        ...writes(1, 2),
        checksums(1, [0, 1], 0),
        checksums(2, [0, 1], 1),
        checksums(3, [1], 2),
        checksums(4, [0], 0xffff_ffff),
        ...writes(3, 1),
        checksums(5, [2], 1)
      ])
    },
    {
      // A reply echoing BLAKE3 from the filter's side is no more expected than any reply.
      name: "38-checksum-reply-blake3-from-the-filter",
      bytes: encodeAll([
        hello("c38"),
        ...writes(1, 1),
        { _tag: "ChecksumReply", algorithm: 1, id: 1, through: 1, digests: new Uint8Array(32) },
        ...writes(2, 1)
      ])
    }
  ]
}

// ---------------------------------------------------------------------------------------------
// The generated part: valid conversations, then one mutation.

export interface Generated {
  readonly frames: ReadonlyArray<Wire.Frame>
  readonly mutation: Mutation
  /** Split points for the writes (reduced modulo the length). */
  readonly cuts: ReadonlyArray<number>
}

export type Mutation =
  | { readonly _tag: "none" }
  | { readonly _tag: "flip"; readonly hits: ReadonlyArray<readonly [number, number]> }
  | { readonly _tag: "truncate"; readonly at: number }
  | { readonly _tag: "delete"; readonly at: number; readonly length: number }
  | { readonly _tag: "insert"; readonly at: number; readonly garbage: Uint8Array }
  | { readonly _tag: "forge"; readonly frame: number; readonly field: number; readonly value: number }
  | { readonly _tag: "forge-payload"; readonly frame: number; readonly at: number; readonly value: number }

type Step =
  | { readonly _tag: "write"; readonly offset: number; readonly length: number; readonly seq: SeqChoice }
  | { readonly _tag: "block"; readonly block: number; readonly wrongSize: boolean; readonly seq: SeqChoice }
  | { readonly _tag: "resync-begin"; readonly back: number; readonly seq: SeqChoice }
  | { readonly _tag: "resync-end"; readonly seq: SeqChoice }
  | { readonly _tag: "keep-alive" }
  | { readonly _tag: "checksums"; readonly blocks: ReadonlyArray<number>; readonly algorithm: number }
  | { readonly _tag: "stray"; readonly frame: Wire.Frame }

type SeqChoice =
  | { readonly _tag: "next" }
  | { readonly _tag: "back"; readonly by: number }
  | { readonly _tag: "skip"; readonly by: number }

const seqChoice: fc.Arbitrary<SeqChoice> = fc.oneof(
  { weight: 12, arbitrary: fc.constant({ _tag: "next" as const }) },
  {
    weight: 1,
    arbitrary: fc.record({ _tag: fc.constant("back" as const), by: fc.integer({ min: 1, max: 4 }) })
  },
  {
    weight: 1,
    arbitrary: fc.record({ _tag: fc.constant("skip" as const), by: fc.integer({ min: 1, max: 3 }) })
  }
)

const step = (blockCount: number): fc.Arbitrary<Step> =>
  fc.oneof(
    {
      weight: 10,
      arbitrary: fc.record({
        _tag: fc.constant("write" as const),
        // Now and then beyond the disk (a bad record).
        offset: fc.integer({ min: 0, max: 4096 * blockCount + 100 }),
        length: fc.integer({ min: 1, max: 700 }),
        seq: seqChoice
      })
    },
    {
      weight: 2,
      arbitrary: fc.record({
        _tag: fc.constant("block" as const),
        block: fc.integer({ min: 0, max: blockCount }),
        wrongSize: fc.oneof(
          { weight: 9, arbitrary: fc.constant(false) },
          { weight: 1, arbitrary: fc.constant(true) }
        ),
        seq: seqChoice
      })
    },
    {
      weight: 1,
      arbitrary: fc.record({ _tag: fc.constant("resync-begin" as const), back: fc.nat(4), seq: seqChoice })
    },
    { weight: 1, arbitrary: fc.record({ _tag: fc.constant("resync-end" as const), seq: seqChoice }) },
    { weight: 2, arbitrary: fc.constant({ _tag: "keep-alive" as const }) },
    {
      weight: 1,
      arbitrary: fc.record({
        _tag: fc.constant("checksums" as const),
        // Now and then the block just beyond the disk (bad-request).
        blocks: fc
          .uniqueArray(fc.integer({ min: 0, max: blockCount }), { minLength: 1, maxLength: 5 })
          .map((blocks) => blocks.sort((a, b) => a - b)),
        // The digest's code: SHA-256, BLAKE3, or one no algorithm has (refused, the connection up).
        algorithm: fc.constantFrom(0, 1, 2, 0xffff_ffff)
      })
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom<Wire.Frame>(
          { _tag: "Ack", seq: 1 },
          { _tag: "Gap", expected: 2 },
          { _tag: "Welcome", durableSeq: 0 },
          { _tag: "Refuse", reason: "x", detail: "y" },
          { _tag: "Hello", diskId: "stray", blockSize: 4096, blockCount: 16, watermark: 0 },
          { _tag: "ChecksumReply", algorithm: 0, id: 1, through: 0, digests: new Uint8Array(32) },
          { _tag: "ChecksumRefused", id: 1, reason: "damaged", detail: "x" }
        )
        .map((frame) => ({ _tag: "stray" as const, frame }))
    }
  )

const geometryArb = fc.oneof(
  { weight: 10, arbitrary: fc.constant({ blockSize: 4096, blockCount: 16 }) },
  {
    weight: 2,
    arbitrary: fc.record({ blockSize: fc.constant(8192), blockCount: fc.integer({ min: 1, max: 8 }) })
  },
  { weight: 1, arbitrary: fc.record({ blockSize: fc.constantFrom(0, 1000, 4095), blockCount: fc.nat(4) }) }
)

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ _tag: "none" as const }) },
  {
    weight: 3,
    arbitrary: fc.record({
      _tag: fc.constant("flip" as const),
      hits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 3 })
    })
  },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("truncate" as const), at: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      _tag: fc.constant("delete" as const),
      at: fc.nat(),
      length: fc.integer({ min: 1, max: 50 })
    })
  },
  {
    weight: 1,
    arbitrary: fc.record({
      _tag: fc.constant("insert" as const),
      at: fc.nat(),
      garbage: fc.uint8Array({ minLength: 1, maxLength: 60 })
    })
  },
  {
    weight: 3,
    arbitrary: fc.record({
      _tag: fc.constant("forge" as const),
      frame: fc.nat(),
      // Header bytes 4..35 (version, kind, flags, seq, epoch, offset, length, payload CRC).
      field: fc.integer({ min: 4, max: 35 }),
      value: fc.integer({ min: 0, max: 255 })
    })
  },
  {
    weight: 1,
    arbitrary: fc.record({
      _tag: fc.constant("forge-payload" as const),
      frame: fc.nat(),
      at: fc.nat(),
      value: fc.integer({ min: 0, max: 255 })
    })
  }
)

/** Conversations for disk `diskId(i)`: a hello, 0–40 steps, one mutation, random write splits. */
export const generated = (diskId: string): fc.Arbitrary<Generated> =>
  geometryArb.chain((g) =>
    fc
      .record({
        steps: fc.array(step(Math.max(1, g.blockCount)), { maxLength: 40 }),
        mutation,
        cuts: fc.array(fc.nat(), { maxLength: 6 }),
        watermark: fc.nat(5)
      })
      .map(({ steps, mutation, cuts, watermark }) => {
        const frames: Array<Wire.Frame> = [{ _tag: "Hello", diskId, ...g, watermark }]
        let last = 0
        const seqOf = (choice: SeqChoice) => {
          const seq =
            choice._tag === "next"
              ? last + 1
              : choice._tag === "back"
                ? Math.max(1, last + 1 - choice.by)
                : last + 1 + choice.by
          last = Math.max(last, seq)
          return seq
        }
        const blockSize = Math.max(4096, g.blockSize)
        for (const s of steps) {
          if (s._tag === "keep-alive") frames.push({ _tag: "KeepAlive" })
          else if (s._tag === "checksums")
            frames.push({
              _tag: "ChecksumRequest",
              algorithm: s.algorithm,
              id: frames.length,
              blocks: s.blocks
            })
          else if (s._tag === "stray") frames.push(s.frame)
          else if (s._tag === "write") {
            const seq = seqOf(s.seq)
            frames.push({
              _tag: "Write",
              seq,
              epoch: 0,
              offset: s.offset,
              data: new Uint8Array(s.length).fill(seq & 0xff)
            })
          } else if (s._tag === "block") {
            const seq = seqOf(s.seq)
            const size = s.wrongSize ? 100 : blockSize
            frames.push({
              _tag: "Block",
              seq,
              epoch: 1,
              block: s.block,
              data: new Uint8Array(size).fill(seq & 0xff)
            })
          } else if (s._tag === "resync-begin") {
            const base = Math.max(0, last - s.back)
            frames.push({ _tag: "ResyncBegin", seq: seqOf(s.seq), epoch: 1, base })
          } else frames.push({ _tag: "ResyncEnd", seq: seqOf(s.seq), epoch: 1 })
        }
        return { frames, mutation, cuts }
      })
  )

/** The bytes of a generated conversation, mutated. */
export const bytesOf = (g: Generated): Uint8Array => {
  const bytes = encodeAll(g.frames)
  const m = g.mutation
  const n = bytes.byteLength
  switch (m._tag) {
    case "none":
      return bytes
    case "flip":
      for (const [at, mask] of m.hits) bytes[at % n]! ^= mask
      return bytes
    case "truncate":
      return bytes.subarray(0, m.at % (n + 1))
    case "delete": {
      const at = m.at % n
      return concat([bytes.subarray(0, at), bytes.subarray(at + m.length)])
    }
    case "insert": {
      const at = m.at % (n + 1)
      return concat([bytes.subarray(0, at), m.garbage, bytes.subarray(at)])
    }
    case "forge": {
      const at = frameStarts(g.frames)[m.frame % g.frames.length]!
      bytes[at + m.field] = m.value
      return resealHeader(bytes, at)
    }
    case "forge-payload": {
      const index = m.frame % g.frames.length
      const at = frameStarts(g.frames)[index]!
      const length = Wire.encode(g.frames[index]!).byteLength - Wire.HEADER_BYTES
      if (length === 0) return bytes
      bytes[at + Wire.HEADER_BYTES + (m.at % length)] = m.value
      return resealFrame(bytes, at)
    }
  }
}

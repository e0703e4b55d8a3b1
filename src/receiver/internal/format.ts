/**
 * The receiver's on-disk formats (docs/receiver.md), pure: segment records, the
 * segment file header, the base image trailer and the segment index. Little-endian;
 * u64 fields hold safe integers (the high word is at most 2^21 - 1).
 *
 * A record is a 40-byte header followed by the payload:
 *
 * | offset | size | field |
 * | ---: | ---: | --- |
 * | 0 | 4 | payload length |
 * | 4 | 1 | kind (the wire's: 3 write, 4 block, 5 resync-begin, 6 resync-end) |
 * | 5 | 1 | flags: bit 0 recovery point, bit 1 first record of a commit (batch start) |
 * | 6 | 2 | reserved, 0 |
 * | 8 | 4 | epoch |
 * | 12 | 8 | seq |
 * | 20 | 8 | position: write byte offset, block index, resync-begin base, else 0 |
 * | 28 | 8 | receive time, ms since the Unix epoch |
 * | 36 | 4 | CRC32C of bytes 0..35 and the payload |
 */
import { crc32c, crc32cCombine, crc32cSpan } from "../../internal/crc32c.js"
import { EntryTable } from "./entryTable.js"

export const RECORD_HEADER_BYTES = 40
export const SEGMENT_HEADER_BYTES = 32
export const BASE_TRAILER_BYTES = 32
export const INDEX_HEADER_BYTES = 24
export const INDEX_ENTRY_BYTES = 48

/** Records larger than this are implausible (the wire caps a frame at a u32 length anyway). */
export const MAX_RECORD_PAYLOAD = 0xffff_ffff - RECORD_HEADER_BYTES

export const Kind = { Write: 3, Block: 4, ResyncBegin: 5, ResyncEnd: 6 } as const
export type Kind = (typeof Kind)[keyof typeof Kind]

export const FLAG_RECOVERY_POINT = 1
/** The first record of each commit's write to a segment: tells a torn tail from damage. */
export const FLAG_BATCH_START = 2
const KNOWN_FLAGS = FLAG_RECOVERY_POINT | FLAG_BATCH_START

const SEGMENT_MAGIC = Buffer.from("CDPSSEG1", "latin1")
const BASE_MAGIC = Buffer.from("CDPSBASE", "latin1")
/** Format 2 keeps each record's CRC; format 1 (`CDPSIDX1`) did not and is rebuilt. */
const INDEX_MAGIC = Buffer.from("CDPSIDX2", "latin1")
const INDEX_MAGIC_V1 = Buffer.from("CDPSIDX1", "latin1")

const MAX_HIGH_WORD = 0x1f_ffff
const TWO_32 = 0x1_0000_0000

export const putU64 = (b: Buffer, at: number, n: number): void => {
  b.writeUInt32LE(n >>> 0, at)
  b.writeUInt32LE(Math.floor(n / TWO_32), at + 4)
}
/** `putU64` through a DataView (for loops over many entries). */
export const setU64 = (v: DataView, at: number, n: number): void => {
  v.setUint32(at, n >>> 0, true)
  v.setUint32(at + 4, Math.floor(n / TWO_32), true)
}
/** A u64 that must be a safe integer; `-1` when it is not (treated as damage by the callers). */
export const getU64 = (b: Uint8Array, at: number): number => {
  const low = readU32(b, at)
  const high = readU32(b, at + 4)
  return high > MAX_HIGH_WORD ? -1 : high * TWO_32 + low
}
const readU32 = (b: Uint8Array, at: number): number =>
  (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0

const asBuffer = (bytes: Uint8Array): Buffer =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

// ---------------------------------------------------------------------------------------------
// Records

export interface RecordHeader {
  readonly length: number
  readonly kind: Kind
  readonly flags: number
  readonly epoch: number
  readonly seq: number
  readonly position: number
  readonly time: number
}

export const isRecoveryPoint = (h: RecordHeader): boolean => (h.flags & FLAG_RECOVERY_POINT) !== 0
export const isBatchStart = (h: RecordHeader): boolean => (h.flags & FLAG_BATCH_START) !== 0

export const kindName = (kind: Kind): "write" | "block" | "resync-begin" | "resync-end" =>
  kind === Kind.Write
    ? "write"
    : kind === Kind.Block
      ? "block"
      : kind === Kind.ResyncBegin
        ? "resync-begin"
        : "resync-end"

/** The 40-byte header of a record; the CRC covers the header and `payload`. */
/** A record header's first 36 bytes (all but its CRC), with `length` as its payload length. */
const putHeaderFields = (b: Buffer, h: RecordHeader, length: number): void => {
  b.writeUInt32LE(length, 0)
  b[4] = h.kind
  b[5] = h.flags
  b.writeUInt16LE(0, 6)
  b.writeUInt32LE(h.epoch >>> 0, 8)
  putU64(b, 12, h.seq)
  putU64(b, 20, h.position)
  putU64(b, 28, h.time)
}

/**
 * `payloadCrc`: the payload's CRC32C when the caller has it (the wire checked it on
 * arrival): the record's CRC continues from it instead of passing over the payload again.
 */
export const encodeRecordHeader = (h: RecordHeader, payload: Uint8Array, payloadCrc?: number): Buffer => {
  const b = Buffer.allocUnsafe(RECORD_HEADER_BYTES)
  putHeaderFields(b, h, payload.byteLength)
  b.writeUInt32LE(recordCrc(b, payload, payloadCrc), 36)
  return b
}

/** CRC32C of the header's first 36 bytes and the payload. */
const recordCrc = (header: Uint8Array, payload: Uint8Array, payloadCrc: number | undefined): number => {
  const crc = crc32cSpan(header, 0, 36)
  return payload.byteLength === 0
    ? crc
    : crc32cCombine(crc, payloadCrc ?? crc32c(payload), payload.byteLength)
}

/** Sets or clears the batch-start flag of an encoded header (and fixes its CRC). */
export const withBatchStart = (
  header: Buffer,
  payload: Uint8Array,
  on: boolean,
  payloadCrc?: number
): void => {
  const flags = on ? header[5]! | FLAG_BATCH_START : header[5]! & ~FLAG_BATCH_START
  if (flags === header[5]) return
  header[5] = flags
  header.writeUInt32LE(recordCrc(header, payload, payloadCrc), 36)
}

export type Parsed =
  /** `crc`: the record's CRC32C (header bytes 36..39), checked. */
  | { readonly _tag: "Record"; readonly header: RecordHeader; readonly size: number; readonly crc: number }
  /** More bytes are needed: `need` from the record's start. */
  | { readonly _tag: "Short"; readonly need: number }
  | { readonly _tag: "Bad"; readonly reason: string }

/** Header fields alone (no CRC): the reason they are implausible, or the header. */
export const parseHeaderFields = (buf: Uint8Array, at: number): RecordHeader | string => {
  const length = readU32(buf, at)
  const kind = buf[at + 4]!
  const flags = buf[at + 5]!
  if (kind < Kind.Write || kind > Kind.ResyncEnd) return `unknown record kind ${kind}`
  if ((flags & ~KNOWN_FLAGS) !== 0) return `unknown record flags ${flags}`
  if (buf[at + 6] !== 0 || buf[at + 7] !== 0) return "reserved bytes are not zero"
  const seq = getU64(buf, at + 12)
  const position = getU64(buf, at + 20)
  const time = getU64(buf, at + 28)
  if (seq < 1 || position < 0 || time < 0) return "a seq, position or time out of range"
  const carriesData = kind === Kind.Write || kind === Kind.Block
  if (carriesData ? length === 0 || length > MAX_RECORD_PAYLOAD : length !== 0)
    return `implausible payload length ${length} for a ${kindName(kind as Kind)} record`
  return { length, kind: kind as Kind, flags, epoch: readU32(buf, at + 8), seq, position, time }
}

/** Parses the record at `at` in `buf` (which holds bytes up to `buf.length`), checking its CRC. */
export const parseRecord = (buf: Uint8Array, at: number): Parsed => {
  if (buf.length - at < RECORD_HEADER_BYTES) return { _tag: "Short", need: RECORD_HEADER_BYTES }
  const header = parseHeaderFields(buf, at)
  if (typeof header === "string") return { _tag: "Bad", reason: header }
  const size = RECORD_HEADER_BYTES + header.length
  if (buf.length - at < size) return { _tag: "Short", need: size }
  const b = asBuffer(buf)
  let crc = crc32c(b.subarray(at, at + 36))
  if (header.length > 0) crc = crc32c(b.subarray(at + RECORD_HEADER_BYTES, at + size), crc)
  if (crc !== readU32(buf, at + 36)) return { _tag: "Bad", reason: "CRC32C mismatch" }
  return { _tag: "Record", header, size, crc }
}

/** The CRC32C a record's header stores (bytes 36..39), unchecked. */
export const storedCrc = (buf: Uint8Array, at: number): number => readU32(buf, at + 36)

/**
 * Whether `next` may follow `previous` in the log: the next seq, or a resync-begin
 * marker that skipped seqs (accepted across a gap, `domain/Receiver`).
 */
export const continues = (previous: number, next: RecordHeader): boolean =>
  next.seq === previous + 1 || (next.kind === Kind.ResyncBegin && next.seq > previous)

// ---------------------------------------------------------------------------------------------
// Segment file header: magic, first seq, creation time, CRC.

export interface SegmentHeader {
  readonly firstSeq: number
  readonly created: number
}

/**
 * The 32-byte stamp a segment header and the base trailer both are: an 8-byte magic, two
 * u64 fields (bytes 8 and 16), bytes 24..27 zero, the CRC32C of bytes 0..27 at 28.
 */
const STAMP_BYTES = 32
const encodeStamp = (magic: Buffer, first: number, second: number): Buffer => {
  const b = Buffer.alloc(STAMP_BYTES)
  magic.copy(b, 0)
  putU64(b, 8, first)
  putU64(b, 16, second)
  b.writeUInt32LE(crc32c(b.subarray(0, 28)), 28)
  return b
}
/** The stamp's two fields, or why it is not one (`what` and `magicName` name it in the reason). */
const decodeStamp = (
  b: Uint8Array,
  magic: Buffer,
  what: string,
  magicName: string
): readonly [number, number] | string => {
  if (b.length < STAMP_BYTES) return `short ${what}`
  const buf = asBuffer(b)
  if (!buf.subarray(0, 8).equals(magic)) return `bad ${magicName} magic`
  if (crc32c(buf.subarray(0, 28)) !== readU32(b, 28)) return `${what} CRC32C mismatch`
  return [getU64(b, 8), getU64(b, 16)]
}

export const encodeSegmentHeader = (h: SegmentHeader): Buffer =>
  encodeStamp(SEGMENT_MAGIC, h.firstSeq, h.created)

export const decodeSegmentHeader = (b: Uint8Array): SegmentHeader | string => {
  const stamp = decodeStamp(b, SEGMENT_MAGIC, "segment header", "segment")
  if (typeof stamp === "string") return stamp
  const [firstSeq, created] = stamp
  if (firstSeq < 1 || created < 0) return "segment header fields out of range"
  return { firstSeq, created }
}

/** Segment files are named by their first seq, zero-padded so names sort in seq order. */
export const segmentName = (firstSeq: number): string => `${String(firstSeq).padStart(16, "0")}.seg`
export const indexName = (segment: string): string => segment.replace(/\.seg$/, ".idx")
export const parseSegmentName = (name: string): number | undefined => {
  const m = /^(\d{16})\.seg$/.exec(name)
  if (m === null) return undefined
  const n = Number(m[1])
  return Number.isSafeInteger(n) && n >= 1 ? n : undefined
}

// ---------------------------------------------------------------------------------------------
// Base image trailer: the image is `diskBytes` raw bytes, then this trailer.

export interface BaseTrailer {
  /** The base is the disk after record `seq` (0: the empty disk). */
  readonly seq: number
  /** Receive time of record `seq` (0 for the empty disk). */
  readonly time: number
}

export const encodeBaseTrailer = (t: BaseTrailer): Buffer => encodeStamp(BASE_MAGIC, t.seq, t.time)

export const decodeBaseTrailer = (b: Uint8Array): BaseTrailer | string => {
  const stamp = decodeStamp(b, BASE_MAGIC, "base trailer", "base trailer")
  if (typeof stamp === "string") return stamp
  const [seq, time] = stamp
  if (seq < 0 || time < 0) return "base trailer fields out of range"
  return { seq, time }
}

/** Whether `b` (a trailer's bytes) starts with the format-1 magic. */
export const hasBaseMagic = (b: Uint8Array): boolean => asBuffer(b).subarray(0, 8).equals(BASE_MAGIC)

// Base image, format 2: the image, a checksum table (one CRC32C per `unitBytes` of the image,
// u32 each), then this 64-byte trailer, which ends the file:
//
// | offset | size | field |
// | ---: | ---: | --- |
// | 0 | 8 | magic `CDPSBAS2` |
// | 8 | 8 | seq the image is at (0: the empty disk) |
// | 16 | 8 | receive time of that record |
// | 24 | 8 | block count |
// | 32 | 4 | block size |
// | 36 | 4 | checksum unit, bytes (a power of two, 4 KiB to 1 MiB) |
// | 40 | 4 | CRC32C of the checksum table |
// | 44 | 4 | anchor: CRC32C of bytes 0..35 of record `seq`'s header (0 for seq 0) |
// | 48 | 12 | reserved, 0 |
// | 60 | 4 | CRC32C of bytes 0..59 |

export const BASE_TRAILER_V2_BYTES = 64
const BASE_MAGIC_V2 = Buffer.from("CDPSBAS2", "latin1")
export const MIN_BASE_UNIT = 4096
export const MAX_BASE_UNIT = 1 << 20

export interface BaseTrailerV2 extends BaseTrailer {
  readonly blockSize: number
  readonly blockCount: number
  readonly unitBytes: number
  readonly tableCrc: number
  readonly anchor: number
}

export const encodeBaseTrailerV2 = (t: BaseTrailerV2): Buffer => {
  const b = Buffer.alloc(BASE_TRAILER_V2_BYTES)
  BASE_MAGIC_V2.copy(b, 0)
  putU64(b, 8, t.seq)
  putU64(b, 16, t.time)
  putU64(b, 24, t.blockCount)
  b.writeUInt32LE(t.blockSize >>> 0, 32)
  b.writeUInt32LE(t.unitBytes >>> 0, 36)
  b.writeUInt32LE(t.tableCrc >>> 0, 40)
  b.writeUInt32LE(t.anchor >>> 0, 44)
  b.writeUInt32LE(crc32c(b.subarray(0, 60)), 60)
  return b
}

/** Whether `b` (a trailer's bytes) starts with the format-2 magic. */
export const hasBaseMagicV2 = (b: Uint8Array): boolean => asBuffer(b).subarray(0, 8).equals(BASE_MAGIC_V2)

export const decodeBaseTrailerV2 = (b: Uint8Array): BaseTrailerV2 | string => {
  if (b.length < BASE_TRAILER_V2_BYTES) return "short base trailer"
  const buf = asBuffer(b)
  if (!hasBaseMagicV2(buf)) return "bad base trailer magic"
  if (crc32c(buf.subarray(0, 60)) !== readU32(b, 60)) return "base trailer CRC32C mismatch"
  const seq = getU64(b, 8)
  const time = getU64(b, 16)
  const blockCount = getU64(b, 24)
  const unitBytes = readU32(b, 36)
  if (seq < 0 || time < 0 || blockCount < 0) return "base trailer fields out of range"
  if (unitBytes < MIN_BASE_UNIT || unitBytes > MAX_BASE_UNIT || (unitBytes & (unitBytes - 1)) !== 0)
    return `implausible checksum unit ${unitBytes}`
  if (!buf.subarray(48, 60).equals(Buffer.alloc(12))) return "reserved trailer bytes are not zero"
  return {
    seq,
    time,
    blockCount,
    blockSize: readU32(b, 32),
    unitBytes,
    tableCrc: readU32(b, 40),
    anchor: readU32(b, 44)
  }
}

/**
 * The anchor of a record: CRC32C of the first 36 bytes of its header as stored (flags
 * included). A base at seq S carries the anchor of record S, so a trailer whose seq was
 * changed does not match the segment that still holds record S.
 */
export const recordAnchor = (h: RecordHeader): number => {
  const b = Buffer.allocUnsafe(36)
  putHeaderFields(b, h, h.length)
  return crc32c(b)
}

// ---------------------------------------------------------------------------------------------
// Segment index: what a sealed segment holds, without reading its payloads.

export interface IndexEntry extends RecordHeader {
  /** Byte offset of the record in its segment. */
  readonly offset: number
  /** The record's CRC32C (its header's bytes 36..39): ties the entry to the record's payload. */
  readonly crc: number
}

/** Byte offset of entry `i` in an index file. */
export const indexEntryOffset = (i: number): number => INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES

/** One entry: the record's offset in its segment, its header fields and its CRC (48 bytes). */
export const encodeIndexEntry = (b: Buffer, at: number, e: IndexEntry): void => {
  putU64(b, at, e.offset)
  putU64(b, at + 8, e.seq)
  putU64(b, at + 16, e.position)
  putU64(b, at + 24, e.time)
  b.writeUInt32LE(e.length, at + 32)
  b.writeUInt32LE(e.epoch >>> 0, at + 36)
  b[at + 40] = e.kind
  b[at + 41] = e.flags
  b.fill(0, at + 42, at + 44)
  b.writeUInt32LE(e.crc >>> 0, at + 44)
}

export const encodeIndex = (
  segmentBytes: number,
  records: ReadonlyArray<IndexEntry> | EntryTable
): Buffer => {
  // Columns either way (the writer's seal hands its own: no object per record).
  const t = records instanceof EntryTable ? records : EntryTable.fromEntries(records)
  const total = INDEX_HEADER_BYTES + t.count * INDEX_ENTRY_BYTES + 4
  const b = Buffer.allocUnsafe(total)
  INDEX_MAGIC.copy(b, 0)
  putU64(b, 8, segmentBytes)
  b.writeUInt32LE(t.count, 16)
  b.writeUInt32LE(0, 20)
  let at = INDEX_HEADER_BYTES
  // The same bytes as `encodeIndexEntry`, through a DataView: a seal writes 16 k of them at once.
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
  for (let i = 0; i < t.count; i++) {
    setU64(v, at, t.offset[i]!)
    setU64(v, at + 8, t.seq[i]!)
    setU64(v, at + 16, t.position[i]!)
    setU64(v, at + 24, t.time[i]!)
    v.setUint32(at + 32, t.length[i]!, true)
    v.setUint32(at + 36, t.epoch[i]! >>> 0, true)
    v.setUint8(at + 40, t.kind[i]!)
    v.setUint8(at + 41, t.flags[i]!)
    v.setUint16(at + 42, 0, true)
    v.setUint32(at + 44, t.crc[i]! >>> 0, true)
    at += INDEX_ENTRY_BYTES
  }
  b.writeUInt32LE(crc32c(b.subarray(0, at)), at)
  return b
}

/** Why an index cannot be used, and the byte of the index file where that shows. */
export interface IndexDefect {
  readonly offset: number
  readonly reason: string
}

/**
 * Decodes the index of the segment named for `firstSeq` that is `segmentBytes` long. An
 * index is a cache of the segment's record headers, so beyond its CRC it must describe a
 * well-formed segment: records back to back from the segment header to `segmentBytes`,
 * the first one `firstSeq` and starting a commit, seqs that follow each other, payload
 * lengths that fit their kinds. The defect otherwise.
 */
export const decodeIndex = (
  b: Uint8Array,
  segmentBytes: number,
  firstSeq: number
): ReadonlyArray<IndexEntry> | IndexDefect => {
  const table = decodeIndexTable(b, segmentBytes, firstSeq)
  return "reason" in table ? table : table.toEntries()
}

/** `decodeIndex`, the entries as columns (no object per record: see `EntryTable`). */
export const decodeIndexTable = (
  b: Uint8Array,
  segmentBytes: number,
  firstSeq: number
): EntryTable | IndexDefect => {
  const defect = (offset: number, reason: string): IndexDefect => ({ offset, reason })
  if (b.length < INDEX_HEADER_BYTES + 4) return defect(0, "short index")
  const buf = asBuffer(b)
  if (buf.subarray(0, 8).equals(INDEX_MAGIC_V1))
    return defect(0, "an index of format 1 (without record CRCs)")
  if (!buf.subarray(0, 8).equals(INDEX_MAGIC)) return defect(0, "bad index magic")
  const count = readU32(b, 16)
  const end = indexEntryOffset(count)
  if (b.length !== end + 4) return defect(16, "index length does not match its entry count")
  if (crc32c(buf.subarray(0, end)) !== readU32(b, end)) return defect(end, "index CRC32C mismatch")
  if (getU64(b, 8) !== segmentBytes)
    return defect(
      8,
      `the index describes a segment of ${getU64(b, 8)} bytes, the segment has ${segmentBytes}`
    )
  if (readU32(b, 20) !== 0) return defect(20, "reserved bytes are not zero")
  if (count === 0) return defect(16, "an index without entries")
  const table = EntryTable.allocate(count)
  let next = SEGMENT_HEADER_BYTES
  for (let i = 0; i < count; i++) {
    const at = indexEntryOffset(i)
    const offset = getU64(b, at)
    const seq = getU64(b, at + 8)
    const position = getU64(b, at + 16)
    const time = getU64(b, at + 24)
    const length = readU32(b, at + 32)
    const kind = b[at + 40]!
    const flags = b[at + 41]!
    if (offset < SEGMENT_HEADER_BYTES || seq < 1 || position < 0 || time < 0)
      return defect(at, "implausible index entry")
    if (kind < Kind.Write || kind > Kind.ResyncEnd || (flags & ~KNOWN_FLAGS) !== 0)
      return defect(at, "implausible index entry")
    if (b[at + 42] !== 0 || b[at + 43] !== 0) return defect(at, "implausible index entry")
    if (offset !== next)
      return defect(at, `entry at segment byte ${offset}, the previous record ends at ${next}`)
    const carriesData = kind === Kind.Write || kind === Kind.Block
    if (carriesData ? length === 0 || length > MAX_RECORD_PAYLOAD : length !== 0)
      return defect(at, `implausible payload length ${length} for a ${kindName(kind as Kind)} record`)
    if (i === 0) {
      if (seq !== firstSeq) return defect(at, `first entry has seq ${seq}, the segment starts at ${firstSeq}`)
      if ((flags & FLAG_BATCH_START) === 0) return defect(at, "first entry does not start a commit")
    } else {
      const previous = table.seq[i - 1]!
      // `continues`, on the columns.
      if (!(seq === previous + 1 || (kind === Kind.ResyncBegin && seq > previous)))
        return defect(at, `seq ${seq} does not follow ${previous}`)
    }
    table.offset[i] = offset
    table.seq[i] = seq
    table.position[i] = position
    table.time[i] = time
    table.length[i] = length
    table.epoch[i] = readU32(b, at + 36)
    table.kind[i] = kind
    table.flags[i] = flags
    table.crc[i] = readU32(b, at + 44)
    next = offset + RECORD_HEADER_BYTES + length
  }
  if (next !== segmentBytes)
    return defect(
      indexEntryOffset(count - 1),
      `the last entry ends at byte ${next}, the segment at ${segmentBytes}`
    )
  return table
}

/**
 * The fields in which an index entry (or an earlier scan) and the record actually read
 * disagree (`[]` when they agree), e.g. `flags 3 (index) vs 1 (record)`.
 */
export const entryMismatch = (
  entry: IndexEntry,
  header: RecordHeader,
  offset: number,
  crc: number | undefined
): Array<string> => {
  const diffs: Array<string> = []
  const check = (name: string, expected: number, actual: number) => {
    if (expected !== actual) diffs.push(`${name} ${expected} (index) vs ${actual} (record)`)
  }
  check("offset", entry.offset, offset)
  check("seq", entry.seq, header.seq)
  check("kind", entry.kind, header.kind)
  check("flags", entry.flags, header.flags)
  check("length", entry.length, header.length)
  check("position", entry.position, header.position)
  check("time", entry.time, header.time)
  check("epoch", entry.epoch, header.epoch)
  if (crc !== undefined) check("crc", entry.crc, crc)
  return diffs
}

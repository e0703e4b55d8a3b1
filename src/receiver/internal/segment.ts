/**
 * Reading segment files: a full scan that tells a torn tail from damage, a verified
 * read of a byte range (restore, fold), and the sidecar index of sealed segments.
 *
 * Torn tail or damage? Each commit is one write per segment followed by one fsync,
 * and the next commit starts only after that fsync. So after a crash only the last
 * commit of the last segment can be incomplete — and on power loss its pages may
 * reach the disk in any order. The first record of every commit carries the
 * batch-start flag: damage followed by a whole record that starts a *later* commit
 * (a batch start with a higher seq) sat in a durable commit — that is corruption.
 * Damage with no later commit after it lies in the last commit: a torn tail, cut off.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import type { EntryTable } from "./entryTable.js"
import { LogCorrupt } from "./errors.js"
import { ForwardReader, readIfExists, readIfExistsInto, type Scratch, scratch } from "./files.js"
import {
  continues,
  decodeIndexTable,
  decodeSegmentHeader,
  entryMismatch,
  FLAG_BATCH_START,
  type IndexDefect,
  type IndexEntry,
  indexEntryOffset,
  isBatchStart,
  Kind,
  type Parsed,
  parseHeaderFields,
  parseRecord,
  RECORD_HEADER_BYTES,
  type RecordHeader,
  SEGMENT_HEADER_BYTES,
  type SegmentHeader,
  storedCrc
} from "./format.js"

/** How much of a segment one read fetches (a record larger than this is read whole). */
export const DEFAULT_WINDOW = 4 << 20

/** Reads and parses the record at `offset` (the file may end inside it: then `Short`). */
export type NextRecord = (reader: ForwardReader, offset: number) => Promise<Parsed>

/**
 * Reads until the record at `offset` is whole: first its header, then — the header gives
 * the payload's length — the rest. Either part may straddle the reader's window; `Short`
 * only when the file ends before the record does.
 */
export const wholeRecord: NextRecord = async (reader, offset) => {
  let need = RECORD_HEADER_BYTES
  for (;;) {
    const available = await reader.ensure(offset, need)
    const parsed = parseRecord(reader.view(offset, available), 0)
    // Still short although `need` bytes were asked for: the file ends inside the record.
    if (parsed._tag !== "Short" || parsed.need <= need) return parsed
    need = parsed.need
  }
}

/**
 * How segments are read: the window (tests shrink it to put every record across its edges)
 * and the record reader (tests swap in broken ones, to prove their properties catch them).
 */
export interface ReadTuning {
  readonly window: number
  readonly next: NextRecord
  /** Called after each read with the bytes read: the background verification paces itself. */
  readonly onRead?: ((bytes: number) => Promise<void>) | undefined
}
export const defaultTuning: ReadTuning = { window: DEFAULT_WINDOW, next: wholeRecord }

export interface Damage {
  /** Byte offset of the first byte that is not part of a good record. */
  readonly offset: number
  readonly reason: string
  /** Offset of a whole record starting a later commit after the damage: then it is no torn tail. */
  readonly laterCommitAt: number | undefined
  /** Whole records of the same (last) commit found after the damage; dropped with a torn tail. */
  readonly validAfter: number
}

export interface ScanResult {
  /** `undefined` when the segment header itself is damaged. */
  readonly header: SegmentHeader | undefined
  readonly entries: Array<IndexEntry>
  /** End of the last good record (the header's end when there is none, 0 when the header is bad). */
  readonly end: number
  readonly fileBytes: number
  readonly damage: Damage | undefined
}

export interface ScanOptions {
  /** The seq the file name promises for the first record. */
  readonly firstSeq: number
  /** Last seq of the previous segment, to check continuity across files; `undefined` when none is kept. */
  readonly prevSeq: number | undefined
}

/** Scans a whole segment, checking every CRC and the seq continuity. */
export const scanSegment = async (
  handle: fs.FileHandle,
  fileBytes: number,
  options: ScanOptions,
  tuning: ReadTuning = defaultTuning
): Promise<ScanResult> => {
  // Nothing read is kept (the entries are numbers): one window, read into again.
  const reader = new ForwardReader(handle, fileBytes, tuning.window, tuning.onRead, true)
  const entries: Array<IndexEntry> = []
  let header: SegmentHeader | undefined
  let last = options.prevSeq ?? 0
  let end = 0
  let damage: { offset: number; reason: string } | undefined
  await reader.ensure(0, SEGMENT_HEADER_BYTES)
  const decoded = decodeSegmentHeader(reader.view(0, Math.min(SEGMENT_HEADER_BYTES, fileBytes)))
  if (typeof decoded === "string") damage = { offset: 0, reason: decoded }
  else if (decoded.firstSeq !== options.firstSeq)
    damage = {
      offset: 0,
      reason: `the header names first seq ${decoded.firstSeq}, the file name ${options.firstSeq}`
    }
  else {
    header = decoded
    end = SEGMENT_HEADER_BYTES
    let offset = SEGMENT_HEADER_BYTES
    while (offset < fileBytes) {
      const parsed = await tuning.next(reader, offset)
      if (parsed._tag === "Short") {
        damage = {
          offset,
          reason: fileBytes - offset < RECORD_HEADER_BYTES ? "short record header" : "short record payload"
        }
        break
      }
      if (parsed._tag === "Bad") {
        damage = { offset, reason: parsed.reason }
        break
      }
      const h = parsed.header
      const reason = order(h, entries.length === 0, options, last)
      if (reason !== undefined) {
        damage = { offset, reason }
        break
      }
      entries.push({ ...h, offset, crc: parsed.crc })
      last = h.seq
      offset += parsed.size
      end = offset
    }
  }
  if (damage === undefined) return { header, entries, end, fileBytes, damage: undefined }
  const after = await lookPast(
    reader,
    damage.offset,
    entries.length > 0 ? last : options.firstSeq - 1,
    tuning.next
  )
  return { header, entries, end, fileBytes, damage: { ...damage, ...after } }
}

const order = (h: RecordHeader, first: boolean, options: ScanOptions, last: number): string | undefined => {
  if (first) {
    if (h.seq !== options.firstSeq)
      return `first record has seq ${h.seq}, the segment starts at ${options.firstSeq}`
    if (!isBatchStart(h)) return "first record of the segment does not start a commit"
    if (options.prevSeq !== undefined && !continues(options.prevSeq, h))
      return `seq ${h.seq} does not follow ${options.prevSeq}, the end of the previous segment`
    return undefined
  }
  return continues(last, h) ? undefined : `seq ${h.seq} does not follow ${last}`
}

/** Searches past damage for whole records with a seq above `afterSeq` (see the module comment). */
const lookPast = async (
  reader: ForwardReader,
  from: number,
  afterSeq: number,
  next: NextRecord
): Promise<{ laterCommitAt: number | undefined; validAfter: number }> => {
  let validAfter = 0
  for (let at = from + 1; at + RECORD_HEADER_BYTES <= reader.end; at++) {
    // Synchronous while the window holds the bytes: this visits every offset.
    if (reader.available(at) < RECORD_HEADER_BYTES) await reader.ensure(at, RECORD_HEADER_BYTES)
    const b = reader.view(at, RECORD_HEADER_BYTES)
    // Cheap filter before the CRC: a known kind and zero reserved bytes.
    if (b[4]! < Kind.Write || b[4]! > Kind.ResyncEnd || b[6] !== 0 || b[7] !== 0) continue
    const parsed = await next(reader, at)
    if (parsed._tag !== "Record" || parsed.header.seq <= afterSeq) continue
    if ((parsed.header.flags & FLAG_BATCH_START) !== 0) return { laterCommitAt: at, validAfter }
    validAfter++
    at += parsed.size - 1
  }
  return { laterCommitAt: undefined, validAfter }
}

/** Whether damage found by a scan may be cut off as a torn tail (only ever in the last segment). */
export const isTorn = (damage: Damage): boolean => damage.laterCommitAt === undefined

export const describeDamage = (damage: Damage): string =>
  damage.laterCommitAt === undefined
    ? damage.reason
    : `${damage.reason}, yet a later commit follows at byte ${damage.laterCommitAt}`

/**
 * What the caller believes a segment holds — an index, or an earlier scan — checked against
 * every record `readRange` reads: a reader never acts on an index it has not verified.
 */
export interface Expected {
  /** Every record of the segment, in offset order. */
  readonly entries: ReadonlyArray<IndexEntry>
  /** The index file they were read from (a disagreement names it); `undefined`: an earlier scan. */
  readonly indexFile: string | undefined
}

/**
 * Reads the records in `[from, to)` of a segment, every one checked (CRC and continuity
 * from `prevSeq`, when given, and against `expected`, when given), and hands each to
 * `onRecord` with a view of its payload (valid until the callback's promise settles).
 */
export const readRange = async (
  handle: fs.FileHandle,
  file: string,
  from: number,
  to: number,
  prevSeq: number | undefined,
  onRecord: (
    header: RecordHeader,
    payload: Buffer,
    offset: number
  ) => Promise<boolean | undefined> | boolean | undefined,
  tuning: ReadTuning = defaultTuning,
  expected?: Expected
): Promise<void> => {
  const reader = new ForwardReader(handle, to, tuning.window, tuning.onRead)
  let last = prevSeq
  let offset = from
  let k = expected === undefined ? 0 : expected.entries.findIndex((e) => e.offset >= from)
  while (offset < to) {
    const parsed = await tuning.next(reader, offset)
    if (parsed._tag !== "Record")
      throw new LogCorrupt({
        file,
        offset,
        reason: parsed._tag === "Short" ? "the segment ends inside a record" : parsed.reason
      })
    const h = parsed.header
    if (last !== undefined && !continues(last, h))
      throw new LogCorrupt({ file, offset, reason: `seq ${h.seq} does not follow ${last}` })
    if (expected !== undefined) disagreement(file, expected, k++, h, offset, parsed.crc)
    last = h.seq
    const stop = await onRecord(h, reader.view(offset + RECORD_HEADER_BYTES, h.length), offset)
    if (stop === true) return
    offset += parsed.size
  }
}

/** Throws when entry `k` of `expected` is not the record read at `offset` (see `Expected`). */
const disagreement = (
  file: string,
  expected: Expected,
  k: number,
  h: RecordHeader,
  offset: number,
  crc: number
): void => {
  const entry = k < 0 ? undefined : expected.entries[k]
  const diffs =
    entry === undefined ? ["the index lists no record there"] : entryMismatch(entry, h, offset, crc)
  if (diffs.length === 0) return
  const where = `the record at byte ${offset} of ${path.basename(file)} (seq ${h.seq})`
  throw expected.indexFile === undefined
    ? new LogCorrupt({ file, offset, reason: `changed since it was scanned: ${diffs.join(", ")}` })
    : new LogCorrupt({
        file: expected.indexFile,
        offset: indexEntryOffset(Math.max(0, Math.min(k, expected.entries.length))),
        reason: `the index disagrees with ${where}: ${diffs.join(", ")}`
      })
}

/** The first entry of an index that is not the record its segment holds, as damage of the index. */
export const compareIndex = (
  indexFile: string,
  indexed: ReadonlyArray<IndexEntry>,
  scanned: ReadonlyArray<IndexEntry>
): LogCorrupt | undefined => {
  for (let i = 0; i < Math.max(indexed.length, scanned.length); i++) {
    const entry = indexed[i]
    const record = scanned[i]
    const diffs =
      entry === undefined
        ? [`the index ends before the record at byte ${record!.offset}`]
        : record === undefined
          ? [`the segment holds no record at byte ${entry.offset}`]
          : entryMismatch(entry, record, record.offset, record.crc)
    if (diffs.length > 0)
      return new LogCorrupt({
        file: indexFile,
        offset: indexEntryOffset(Math.min(i, indexed.length)),
        reason: `the index disagrees with its segment: ${diffs.join(", ")}`
      })
  }
  return undefined
}

export type IndexRead =
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Unusable"; readonly defect: IndexDefect }
  | { readonly _tag: "Entries"; readonly entries: ReadonlyArray<IndexEntry> }

/** The index of the sealed segment named for `firstSeq`, `segmentBytes` long (see `decodeIndex`). */
export const readIndex = async (file: string, segmentBytes: number, firstSeq: number): Promise<IndexRead> => {
  const read = await readIndexTable(file, segmentBytes, firstSeq)
  return read._tag === "Table" ? { _tag: "Entries", entries: read.table.toEntries() } : read
}

export type IndexTableRead =
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Unusable"; readonly defect: IndexDefect }
  | { readonly _tag: "Table"; readonly table: EntryTable }

/** `readIndex`, the entries as columns (`EntryTable`); the file read into `into` when given. */
export const readIndexTable = async (
  file: string,
  segmentBytes: number,
  firstSeq: number,
  into?: Scratch
): Promise<IndexTableRead> => {
  const bytes = into === undefined ? await readIfExists(file) : await readIfExistsInto(file, into)
  if (bytes === undefined) return { _tag: "Missing" }
  const decoded = decodeIndexTable(bytes, segmentBytes, firstSeq)
  return "reason" in decoded ? { _tag: "Unusable", defect: decoded } : { _tag: "Table", table: decoded }
}

/** The 32-byte header of a segment named for `firstSeq`: the reason it is bad, or `undefined`. */
export const checkSegmentHeader = async (
  handle: fs.FileHandle,
  firstSeq: number
): Promise<string | undefined> => {
  const b = Buffer.alloc(SEGMENT_HEADER_BYTES)
  const { bytesRead } = await handle.read(b, 0, SEGMENT_HEADER_BYTES, 0)
  const decoded = decodeSegmentHeader(b.subarray(0, bytesRead))
  if (typeof decoded === "string") return decoded
  return decoded.firstSeq === firstSeq
    ? undefined
    : `the header names first seq ${decoded.firstSeq}, the file name ${firstSeq}`
}

/**
 * A cheap check of a (well-formed, see `decodeIndex`) index against its segment, when the
 * index stands in for a scan: the record headers of its first and last entries, and of every
 * marker (a resync-begin or -end carries no payload, so its CRC is checked in full) must be
 * the ones the index lists. Payloads are not read: restore and fold check every record they
 * read, scrub checks them all. The first disagreement, or `undefined`.
 */
export const spotCheckIndex = async (
  handle: fs.FileHandle,
  indexFile: string,
  table: EntryTable
): Promise<IndexDefect | undefined> => {
  const checked: Array<number> = []
  for (let i = 0; i < table.count; i++)
    if (i === 0 || i === table.count - 1 || table.length[i] === 0) checked.push(i)
  // The headers read side by side; the first disagreement in index order is the one named.
  const defects = await Promise.all(checked.map((i) => spotCheckEntry(handle, indexFile, table.entry(i), i)))
  return defects.find((d) => d !== undefined)
}

const spotCheckEntry = async (
  handle: fs.FileHandle,
  indexFile: string,
  e: IndexEntry,
  i: number
): Promise<IndexDefect | undefined> => {
  const b = Buffer.alloc(RECORD_HEADER_BYTES)
  const { bytesRead } = await handle.read(b, 0, RECORD_HEADER_BYTES, e.offset)
  const at = `the record at byte ${e.offset} of ${path.basename(indexFile.replace(/\.idx$/, ".seg"))}`
  const defect = (reason: string): IndexDefect => ({
    offset: indexEntryOffset(i),
    reason: `the index disagrees with ${at}: ${reason}`
  })
  if (bytesRead < RECORD_HEADER_BYTES) return defect("the segment ends inside its header")
  const parsed = e.length === 0 ? parseRecord(b, 0) : undefined
  if (parsed !== undefined && parsed._tag !== "Record")
    return defect(parsed._tag === "Bad" ? parsed.reason : "short record")
  const header = parsed?._tag === "Record" ? parsed.header : parseHeaderFields(b, 0)
  if (typeof header === "string") return defect(header)
  const diffs = entryMismatch(e, header, e.offset, storedCrc(b, 0))
  return diffs.length > 0 ? defect(diffs.join(", ")) : undefined
}

/** Whether a sealed segment's index may stand in for a scan of it (`judgeIndex`). */
export type IndexUse =
  | { readonly _tag: "Table"; readonly table: EntryTable }
  /** The segment's own header is bad: the scan reports it. */
  | { readonly _tag: "BadSegment" }
  | { readonly _tag: "Missing" }
  /** The index fails its own checks (`decodeIndex`): a damaged cache, rebuilt from the segment. */
  | { readonly _tag: "Unusable"; readonly offset: number; readonly reason: string }
  /** A well-formed index that disagrees with its segment: one of the two was tampered with. */
  | { readonly _tag: "Disagrees"; readonly offset: number; readonly reason: string }

/**
 * Whether the index of the sealed segment `file` (named for `firstSeq`) may stand in for a
 * scan: the segment's 32-byte header is good, the index is well formed for the segment's
 * name and size (`decodeIndex`), and the record headers it is spot-checked against agree
 * (`spotCheckIndex`). With the segment's size, as read then.
 */
export const judgeIndex = async (
  file: string,
  indexFile: string,
  firstSeq: number,
  into: Scratch = scratch()
): Promise<{ readonly size: number; readonly index: IndexUse }> => {
  const handle = await fs.open(file, "r")
  try {
    const { size } = await handle.stat()
    if ((await checkSegmentHeader(handle, firstSeq)) !== undefined)
      return { size, index: { _tag: "BadSegment" } }
    const read = await readIndexTable(indexFile, size, firstSeq, into)
    if (read._tag === "Missing") return { size, index: read }
    if (read._tag === "Unusable") return { size, index: { _tag: "Unusable", ...read.defect } }
    const defect = await spotCheckIndex(handle, indexFile, read.table)
    return { size, index: defect === undefined ? read : { _tag: "Disagrees", ...defect } }
  } finally {
    await handle.close()
  }
}

/** How many sealed segments `judgeIndexes` reads ahead of the one asked for (each a few small reads; a file handle each). */
const READ_AHEAD = 8

/** Judged indexes, asked for in order (`judgeIndexes`). */
export interface JudgedIndexes {
  /** The judgement of segment `i` (asked for in order, each once). */
  next(i: number): Promise<{ readonly size: number; readonly index: IndexUse }>
}

/**
 * `judgeIndex` for each of `segments`, read a few ahead of the one asked for: one after
 * another, the few small reads of each were a good part of opening a long log. At most
 * `READ_AHEAD` are read and held at once (each index into a buffer of its own, used again);
 * a judgement nobody asks for any more (the caller stopped) still closes its file.
 */
export const judgeIndexes = (
  segments: ReadonlyArray<{ readonly file: string; readonly indexFile: string; readonly firstSeq: number }>
): JudgedIndexes => {
  const buffers = Array.from({ length: READ_AHEAD }, scratch)
  const pending = new Map<number, Promise<{ readonly size: number; readonly index: IndexUse }>>()
  const start = (i: number) => {
    const s = segments[i]
    if (s === undefined || pending.has(i)) return
    const judged = judgeIndex(s.file, s.indexFile, s.firstSeq, buffers[i % READ_AHEAD])
    // Caught at once: one left unasked when the caller stops must not be an unhandled rejection.
    judged.catch(() => undefined)
    pending.set(i, judged)
  }
  for (let i = 0; i < READ_AHEAD; i++) start(i)
  return {
    next: async (i) => {
      start(i)
      const judged = await pending.get(i)!
      pending.delete(i)
      // Its buffer is free again.
      start(i + READ_AHEAD)
      return judged
    }
  }
}

/**
 * The block index (docs/receiver.md, "Block index"): for a run of records, where the newest
 * version of each written byte range lives — an extent map, sorted and disjoint, each extent
 * naming the record (seq) and the byte of the segment file its payload starts at. One per
 * sealed segment is kept beside it (`<first seq>.bix`); a point's map is the maps of the
 * segments before it merged newest over oldest, plus the records of its own segment.
 *
 * A `.bix` is a cache of its segment's index: never believed on its own. Beyond its codec
 * (magic, CRC32C, a header naming the geometry and the segment it covers) every map is
 * checked against the segment's records (`verifyMap`): each extent lies inside the record it
 * names, at the right payload byte, and every record's range is covered by extents at least
 * as new — which together say each byte names the newest record that wrote it.
 */
import { crc32c } from "../../internal/crc32c.js"
import { EntryTable } from "./entryTable.js"
import { getU64, type IndexEntry, Kind, putU64, RECORD_HEADER_BYTES, setU64 } from "./format.js"
import { ReceiverMutants } from "./mutants.js"

/** Bytes `[start, end)` of the disk hold the payload of record `seq` from `fileOffset` of its segment. */
export interface Extent {
  readonly start: number
  readonly end: number
  readonly seq: number
  /** Byte of the segment file holding the disk's byte `start`. */
  readonly fileOffset: number
}

/** Sorted by `start`, disjoint, none empty. */
export type ExtentMap = ReadonlyArray<Extent>

/**
 * An extent map as columns, one typed array per field (see `EntryTable`): opening a point
 * decodes, checks and merges a `.bix` per sealed segment, 120 k extents on a 4 GiB log.
 */
export class ExtentTable {
  readonly start: Float64Array
  readonly end: Float64Array
  readonly seq: Float64Array
  readonly fileOffset: Float64Array

  private constructor(readonly count: number) {
    // One allocation for the four columns.
    const memory = new ArrayBuffer(32 * count)
    this.start = new Float64Array(memory, 0, count)
    this.end = new Float64Array(memory, 8 * count, count)
    this.seq = new Float64Array(memory, 16 * count, count)
    this.fileOffset = new Float64Array(memory, 24 * count, count)
  }

  static allocate(count: number): ExtentTable {
    return new ExtentTable(count)
  }

  static fromExtents(map: ExtentMap): ExtentTable {
    const t = new ExtentTable(map.length)
    for (let i = 0; i < map.length; i++) {
      const x = map[i]!
      t.start[i] = x.start
      t.end[i] = x.end
      t.seq[i] = x.seq
      t.fileOffset[i] = x.fileOffset
    }
    return t
  }

  toExtents(): Array<Extent> {
    const out = new Array<Extent>(this.count)
    for (let i = 0; i < this.count; i++)
      out[i] = {
        start: this.start[i]!,
        end: this.end[i]!,
        seq: this.seq[i]!,
        fileOffset: this.fileOffset[i]!
      }
    return out
  }

  /** The first extent that ends after `offset` (`count` when none does). */
  firstEndingAfter(offset: number): number {
    const ends = this.end
    let lo = 0
    let hi = this.count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (ends[mid]! <= offset) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

export interface DataGeometry {
  readonly blockSize: number
  readonly blockCount: number
}

/** The disk bytes a write or block record covers; `undefined` for the markers. */
export const recordRange = (
  g: DataGeometry,
  e: IndexEntry
): { readonly start: number; readonly end: number } | undefined => {
  if (e.kind === Kind.Write) return { start: e.position, end: e.position + e.length }
  if (e.kind === Kind.Block)
    return { start: e.position * g.blockSize, end: e.position * g.blockSize + e.length }
  return undefined
}

const slice = <E extends Extent>(e: E, start: number, end: number): E => ({
  ...e,
  start,
  end,
  fileOffset: e.fileOffset + (start - e.start)
})

/** `older` minus the bytes `newer` covers, merged with `newer`: the newer wins where both hold data. */
export const mergeUnder = <E extends Extent>(newer: ReadonlyArray<E>, older: ReadonlyArray<E>): Array<E> => {
  if (older.length === 0) return [...newer]
  if (newer.length === 0) return [...older]
  const pieces: Array<E> = []
  let j = 0
  for (const b of older) {
    while (j < newer.length && newer[j]!.end <= b.start) j++
    let cursor = b.start
    for (let k = j; cursor < b.end; k++) {
      const a = newer[k]
      if (a === undefined || a.start >= b.end) {
        pieces.push(cursor === b.start ? b : slice(b, cursor, b.end))
        break
      }
      if (a.start > cursor) pieces.push(slice(b, cursor, a.start))
      cursor = Math.max(cursor, a.end)
    }
  }
  const out: Array<E> = []
  let p = 0
  let q = 0
  while (p < pieces.length || q < newer.length)
    out.push(
      q >= newer.length || (p < pieces.length && pieces[p]!.start < newer[q]!.start)
        ? pieces[p++]!
        : newer[q++]!
    )
  return out
}

/**
 * The map of `entries` (in seq order): each written byte to the newest record that wrote it.
 * One sweep over the records sorted by start, the newest record open at each byte on a heap:
 * O(n log n) in typed arrays. (It was a merge of halves, which copied every extent at every
 * level: 200–300 ms for a segment of 16 k records of 4 KiB, on the writer's fiber.)
 */
export const buildMap = (g: DataGeometry, records: ReadonlyArray<IndexEntry> | EntryTable): Array<Extent> => {
  // Columns either way (the writer's seal hands its own: no object per record).
  const entries = records instanceof EntryTable ? records : EntryTable.fromEntries(records)
  const n = entries.count
  const starts = new Float64Array(n)
  const ends = new Float64Array(n)
  const data = new Uint32Array(n)
  let m = 0
  for (let i = 0; i < n; i++) {
    const length = entries.length[i]!
    const kind = entries.kind[i]!
    // A write of no bytes (the wire refuses one; a log read back is not trusted for it) names no byte.
    if (length === 0 || (kind !== Kind.Write && kind !== Kind.Block)) continue
    const start = kind === Kind.Write ? entries.position[i]! : entries.position[i]! * g.blockSize
    starts[i] = start
    ends[i] = start + length
    data[m++] = i
  }
  const byStart = data.subarray(0, m).sort((a, b) => starts[a]! - starts[b]! || a - b)
  // The heap's order: the newest record first (the mutant: the oldest).
  const sign = ReceiverMutants.blockIndexKeepsOldest ? -1 : 1
  const heap = new Int32Array(m)
  let size = 0
  const push = (i: number): void => {
    let at = size++
    while (at > 0) {
      const parent = (at - 1) >> 1
      if (sign * heap[parent]! >= sign * i) break
      heap[at] = heap[parent]!
      at = parent
    }
    heap[at] = i
  }
  const pop = (): void => {
    const last = heap[--size]!
    let at = 0
    for (;;) {
      let child = 2 * at + 1
      if (child >= size) break
      if (child + 1 < size && sign * heap[child + 1]! > sign * heap[child]!) child++
      if (sign * heap[child]! <= sign * last) break
      heap[at] = heap[child]!
      at = child
    }
    heap[at] = last
  }
  const out: Array<{ start: number; end: number; seq: number; fileOffset: number }> = []
  let k = 0
  let at = 0
  while (k < m || size > 0) {
    if (size === 0) at = starts[byStart[k]!]!
    while (k < m && starts[byStart[k]!]! <= at) push(byStart[k++]!)
    while (size > 0 && ends[heap[0]!]! <= at) pop()
    if (size === 0) continue
    const top = heap[0]!
    let next = ends[top]!
    if (k < m && starts[byStart[k]!]! < next) next = starts[byStart[k]!]!
    const seq = entries.seq[top]!
    const last = out[out.length - 1]
    // Split where an older record starts: joined again, so each extent is a maximal run.
    if (last !== undefined && last.seq === seq && last.end === at) last.end = next
    else
      out.push({
        start: at,
        end: next,
        seq,
        fileOffset: entries.offset[top]! + RECORD_HEADER_BYTES + (at - starts[top]!)
      })
    at = next
  }
  return out
}

/** The entry of record `seq` among `entries` (seq order), by bisection. */
export const entryOf = (entries: ReadonlyArray<IndexEntry>, seq: number): number => {
  let lo = 0
  let hi = entries.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const s = entries[mid]!.seq
    if (s === seq) return mid
    if (s < seq) lo = mid + 1
    else hi = mid - 1
  }
  return -1
}

/** The first extent of `map` that ends after `offset`. */
export const firstEndingAfter = (map: ExtentMap, offset: number): number => {
  let lo = 0
  let hi = map.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (map[mid]!.end <= offset) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** Why a map is not the map of `entries`: the extent (its number) or the record (its seq) at fault. */
export interface MapDefect {
  readonly extent?: number | undefined
  readonly reason: string
}

/**
 * Checks `map` against the records it claims to describe (`entries`, seq order), without
 * rebuilding it: sorted and disjoint inside the disk; each extent inside the data record it
 * names at that record's payload byte; every record's range covered by extents no older
 * than it. O(records × log extents + overlaps).
 */
export const verifyMap = (
  g: DataGeometry,
  entries: ReadonlyArray<IndexEntry>,
  map: ExtentMap
): MapDefect | undefined => verifyTable(g, EntryTable.fromEntries(entries), ExtentTable.fromExtents(map))

/** `verifyMap` on columns. */
export const verifyTable = (g: DataGeometry, entries: EntryTable, map: ExtentTable): MapDefect | undefined =>
  // Two passes, each a function of its own (each optimized as such; see `mergeTables`).
  verifyExtents(g, entries, map) ?? verifyCoverage(g, entries, map)

/** Sorted and disjoint inside the disk, each extent inside the data record it names at that record's payload byte. */
const verifyExtents = (g: DataGeometry, entries: EntryTable, map: ExtentTable): MapDefect | undefined => {
  const diskBytes = g.blockSize * g.blockCount
  // The columns in locals: this runs once per segment, mostly before it is optimized.
  const { kind, position, length, offset } = entries
  const { start: starts, end: ends, seq: seqs, fileOffset } = map
  let previousEnd = 0
  for (let i = 0; i < map.count; i++) {
    const start = starts[i]!
    const end = ends[i]!
    const seq = seqs[i]!
    if (!(start < end) || start < previousEnd || end > diskBytes)
      return { extent: i, reason: `extent ${start}..${end} is empty, out of order or beyond the disk` }
    previousEnd = end
    const k = entries.indexOf(seq)
    const data = k >= 0 && (kind[k] === Kind.Write || kind[k] === Kind.Block)
    if (!data)
      return { extent: i, reason: `extent names seq ${seq}, which is no write or block of the segment` }
    const rangeStart = kind[k] === Kind.Write ? position[k]! : position[k]! * g.blockSize
    const rangeEnd = rangeStart + length[k]!
    if (start < rangeStart || end > rangeEnd)
      return {
        extent: i,
        reason: `extent ${start}..${end} lies outside record ${seq} (${rangeStart}..${rangeEnd})`
      }
    if (fileOffset[i] !== offset[k]! + RECORD_HEADER_BYTES + (start - rangeStart))
      return {
        extent: i,
        reason: `extent ${start}..${end} names file byte ${fileOffset[i]}, not record ${seq}'s payload`
      }
  }
  return undefined
}

/** Every record's range covered by extents no older than it. */
const verifyCoverage = (g: DataGeometry, entries: EntryTable, map: ExtentTable): MapDefect | undefined => {
  const { kind, position, length, seq: recordSeqs } = entries
  const { start: starts, end: ends, seq: seqs } = map
  const count = map.count
  for (let k = 0; k < entries.count; k++) {
    if (kind[k] !== Kind.Write && kind[k] !== Kind.Block) continue
    const rangeStart = kind[k] === Kind.Write ? position[k]! : position[k]! * g.blockSize
    const rangeEnd = rangeStart + length[k]!
    const seq = recordSeqs[k]!
    // The first extent that ends after the range's start.
    let lo = 0
    let hi = count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (ends[mid]! <= rangeStart) lo = mid + 1
      else hi = mid
    }
    let cursor = rangeStart
    for (let i = lo; cursor < rangeEnd; i++) {
      if (i >= count || starts[i]! > cursor)
        return {
          extent: i >= count ? undefined : i,
          reason: `bytes from ${cursor} written by record ${seq} are in no extent`
        }
      if (seqs[i]! < seq)
        return {
          extent: i,
          reason: `extent ${starts[i]}..${ends[i]} names record ${seqs[i]}, record ${seq} wrote over it`
        }
      cursor = ends[i]!
    }
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// The `.bix` file: a 64-byte header, 32 bytes per extent, a CRC32C of everything before.
//
// | offset | size | field |
// | ---: | ---: | --- |
// | 0 | 8 | magic `CDPSBIX1` |
// | 8 | 8 | block count |
// | 16 | 4 | block size |
// | 20 | 4 | extent count |
// | 24 | 8 | first seq of the segment |
// | 32 | 8 | last seq of the segment |
// | 40 | 8 | segment bytes |
// | 48 | 4 | records in the segment |
// | 52 | 12 | reserved, 0 |
//
// An extent: disk offset (8), seq (8), file offset (8), length (4), reserved 0 (4).

export const BIX_HEADER_BYTES = 64
export const BIX_EXTENT_BYTES = 32
const BIX_MAGIC = Buffer.from("CDPSBIX1", "latin1")

export const blockIndexName = (segment: string): string => segment.replace(/\.seg$/, ".bix")

/** What a `.bix` must say it covers: the disk's geometry and the segment as the chain knows it. */
export interface Covers extends DataGeometry {
  readonly firstSeq: number
  readonly lastSeq: number
  readonly segmentBytes: number
  readonly records: number
}

export const bixExtentOffset = (i: number): number => BIX_HEADER_BYTES + i * BIX_EXTENT_BYTES

export const encodeBlockIndex = (c: Covers, map: ExtentMap): Buffer => {
  const end = bixExtentOffset(map.length)
  const b = Buffer.alloc(end + 4)
  BIX_MAGIC.copy(b, 0)
  putU64(b, 8, c.blockCount)
  b.writeUInt32LE(c.blockSize, 16)
  b.writeUInt32LE(map.length, 20)
  putU64(b, 24, c.firstSeq)
  putU64(b, 32, c.lastSeq)
  putU64(b, 40, c.segmentBytes)
  b.writeUInt32LE(c.records, 48)
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
  for (let i = 0; i < map.length; i++) {
    const x = map[i]!
    const at = bixExtentOffset(i)
    setU64(v, at, x.start)
    setU64(v, at + 8, x.seq)
    setU64(v, at + 16, x.fileOffset)
    v.setUint32(at + 24, x.end - x.start, true)
  }
  b.writeUInt32LE(crc32c(b.subarray(0, end)), end)
  return b
}

/** The byte of a `.bix` where it fails, and why. */
export interface BixDefect {
  readonly offset: number
  readonly reason: string
}

/** Decodes a `.bix` that must cover `c`; its form only (`verifyMap` checks it against the records). */
export const decodeBlockIndex = (b: Uint8Array, c: Covers): ExtentMap | BixDefect => {
  const decoded = decodeBlockIndexTable(b, c)
  return "reason" in decoded ? decoded : decoded.toExtents()
}

/** `decodeBlockIndex`, the extents as columns. */
export const decodeBlockIndexTable = (b: Uint8Array, c: Covers): ExtentTable | BixDefect => {
  const defect = (offset: number, reason: string): BixDefect => ({ offset, reason })
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength)
  if (buf.length < BIX_HEADER_BYTES + 4) return defect(0, "short block index")
  if (!buf.subarray(0, 8).equals(BIX_MAGIC)) return defect(0, "bad block index magic")
  const count = buf.readUInt32LE(20)
  const end = bixExtentOffset(count)
  if (buf.length !== end + 4) return defect(20, "block index length does not match its extent count")
  if (crc32c(buf.subarray(0, end)) !== buf.readUInt32LE(end))
    return defect(end, "block index CRC32C mismatch")
  const fields: ReadonlyArray<readonly [number, string, number, number]> = [
    [8, "block count", getU64(buf, 8), c.blockCount],
    [16, "block size", buf.readUInt32LE(16), c.blockSize],
    [24, "first seq", getU64(buf, 24), c.firstSeq],
    [32, "last seq", getU64(buf, 32), c.lastSeq],
    [40, "segment bytes", getU64(buf, 40), c.segmentBytes],
    [48, "record count", buf.readUInt32LE(48), c.records]
  ]
  for (const [at, name, found, expected] of fields)
    if (found !== expected)
      return defect(at, `the block index says ${name} ${found}, the segment ${expected}`)
  if (!buf.subarray(52, 64).equals(Buffer.alloc(12))) return defect(52, "reserved bytes are not zero")
  const map = ExtentTable.allocate(count)
  for (let i = 0; i < count; i++) {
    const at = bixExtentOffset(i)
    const start = getU64(buf, at)
    const seq = getU64(buf, at + 8)
    const fileOffset = getU64(buf, at + 16)
    const length = buf.readUInt32LE(at + 24)
    if (start < 0 || seq < 1 || fileOffset < 0 || length === 0 || buf.readUInt32LE(at + 28) !== 0)
      return defect(at, "implausible extent")
    map.start[i] = start
    map.end[i] = start + length
    map.seq[i] = seq
    map.fileOffset[i] = fileOffset
  }
  return map
}

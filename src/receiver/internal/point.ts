/**
 * A recovery point opened on the block index: where every byte of the disk at `seq` lives
 * (the base image, a segment's payload, or nowhere: zeros), without reading the log.
 * `openPointMap` merges the sealed segments' `.bix` maps (checked, rebuilt when missing or
 * damaged) with the records of the segment holding the point; `openPointReader` serves any
 * byte range of it, every byte checked (a record's CRC and its index entry, a base unit's
 * CRC) before it is returned.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { crc32c } from "../../internal/crc32c.js"
import { baseLayout, type Base, openBase } from "./base.js"
import {
  blockIndexName,
  buildMap,
  type Covers,
  type DataGeometry,
  decodeBlockIndex,
  encodeBlockIndex,
  entryOf,
  type Extent,
  type ExtentMap,
  firstEndingAfter,
  verifyMap,
  bixExtentOffset
} from "./blockIndex.js"
import type { Chain, Note, Segment } from "./chain.js"
import { LogCorrupt } from "./errors.js"
import { ReceiverMutants } from "./mutants.js"
import { isEnoent, preadFully, readIfExists } from "./files.js"
import {
  entryMismatch,
  type IndexEntry,
  indexEntryOffset,
  parseRecord,
  RECORD_HEADER_BYTES
} from "./format.js"

/** An extent of a point: `segment` is the index of its segment in `chain.segments`. */
export interface PointExtent extends Extent {
  readonly segment: number
}

export interface PointMap {
  readonly chain: Chain
  readonly seq: number
  /** Sorted, disjoint; the bytes between them come from the base image. */
  readonly extents: ReadonlyArray<PointExtent>
  /** Block indexes rebuilt (missing, damaged or at odds with their segment). */
  readonly notes: ReadonlyArray<Note>
}

const geometryOf = (chain: { readonly meta: DataGeometry }) => ({
  blockSize: chain.meta.blockSize,
  blockCount: chain.meta.blockCount
})

/** The records of `segment` after the base through `seq`. */
const entriesThrough = (segment: Segment, baseSeq: number, seq: number): ReadonlyArray<IndexEntry> =>
  (segment.entries ?? []).filter((e) => e.seq > baseSeq && e.seq <= seq)

/** Writes a rebuilt `.bix` aside and renames it; a reader that cannot write (a read-only copy) goes on without. */
const writeBestEffort = async (file: string, bytes: Buffer): Promise<void> => {
  const temp = `${file}.${process.pid}.tmp`
  try {
    await fs.writeFile(temp, bytes)
    await fs.rename(temp, file)
  } catch {
    await fs.unlink(temp).catch(() => undefined)
  }
}

/** What a sealed segment's `.bix` must cover: the disk's geometry and the segment as the chain knows it. */
export const coversOf = (
  chain: { readonly meta: DataGeometry },
  segment: Pick<Segment, "firstSeq" | "lastSeq" | "bytes" | "records">
): Covers => ({
  ...geometryOf(chain),
  firstSeq: segment.firstSeq,
  lastSeq: segment.lastSeq,
  segmentBytes: segment.bytes,
  records: segment.records
})

/** A `.bix` judged against its segment's records: its map, or why it cannot be believed (the byte at fault). */
export type BlockIndexCheck =
  | { readonly _tag: "Valid"; readonly map: ExtentMap }
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Defect"; readonly at: number; readonly reason: string }

/**
 * Checks the bytes of a `.bix` (`undefined`: missing) against what it must cover and the
 * segment's records (`entries`): decoded (`decodeBlockIndex`) and verified (`verifyMap`).
 * Pure: a point (`sealedMap`) and `scrub` judge a `.bix` the same way.
 */
export const checkBlockIndex = (
  bytes: Uint8Array | undefined,
  covers: Covers,
  entries: ReadonlyArray<IndexEntry>
): BlockIndexCheck => {
  if (bytes === undefined) return { _tag: "Missing" }
  const decoded = decodeBlockIndex(bytes, covers)
  if ("reason" in decoded) return { _tag: "Defect", at: decoded.offset, reason: decoded.reason }
  const defect = verifyMap(covers, entries, decoded)
  if (defect === undefined) return { _tag: "Valid", map: decoded }
  return {
    _tag: "Defect",
    at: defect.extent === undefined ? 0 : bixExtentOffset(defect.extent),
    reason: `at odds with its segment: ${defect.reason}`
  }
}

/**
 * The block index of a sealed segment: its `.bix`, decoded and checked against the segment's
 * records, or rebuilt from them (and written, when `write`) with a note saying why.
 */
export const sealedMap = async (
  chain: { readonly diskDir: string; readonly meta: DataGeometry },
  segment: Segment,
  write: boolean,
  notes: Array<Note>
): Promise<ReadonlyArray<Extent>> => {
  const entries = segment.entries ?? []
  const file = path.join(chain.diskDir, blockIndexName(segment.name))
  const covers = coversOf(chain, segment)
  const checked = checkBlockIndex(await readIfExists(file), covers, entries)
  if (checked._tag === "Valid") return checked.map
  const why = checked._tag === "Missing" ? { at: 0, reason: "missing" } : checked
  const map = buildMap(covers, entries)
  notes.push({ message: "rebuilt a block index", annotations: { file, at: why.at, reason: why.reason } })
  if (write) await writeBestEffort(file, encodeBlockIndex(covers, map))
  return map
}

/** How far opening a point is: `bytes` of `total`, the bytes of the sealed segments whose `.bix` is read and checked or rebuilt. */
export interface IndexingProgress {
  readonly bytes: number
  readonly total: number
}

/**
 * The maps of a point's segments, given newest first, as one map: each byte from the newest
 * segment holding it. One sweep per map against the union of the newer ones (kept as typed
 * intervals, merged as it grows): only the extents that survive are allocated, each once
 * (merging maps pairwise allocated every piece at every level, and most of opening a long log
 * was spent there). O(maps × covered intervals + extents log extents).
 */
export const mergeNewestFirst = (
  maps: ReadonlyArray<{ readonly map: ExtentMap; readonly segment: number }>
): Array<PointExtent> => {
  let total = 0
  for (const { map } of maps) total += map.length
  // The bytes the newer maps cover: intervals [covered[2i], covered[2i+1]), sorted, disjoint, none touching.
  let covered = new Float64Array(2 * total + 2)
  let coveredCount = 0
  let union = new Float64Array(2 * total + 2)
  const out: Array<PointExtent> = []
  for (const { map, segment } of maps) {
    let j = 0
    for (const x of map) {
      while (j < coveredCount && covered[2 * j + 1]! <= x.start) j++
      let cursor = x.start
      for (let k = j; cursor < x.end; k++) {
        const from = k < coveredCount ? covered[2 * k]! : Number.POSITIVE_INFINITY
        const to = from < x.end ? Math.min(from, x.end) : x.end
        if (to > cursor)
          out.push({
            start: cursor,
            end: to,
            seq: x.seq,
            fileOffset: x.fileOffset + (cursor - x.start),
            segment
          })
        if (from >= x.end) break
        cursor = Math.max(cursor, covered[2 * k + 1]!)
      }
    }
    // union := covered ∪ this map's extents (both sorted), touching intervals joined.
    let n = 0
    let a = 0
    let b = 0
    while (a < coveredCount || b < map.length) {
      let start: number
      let end: number
      if (b >= map.length || (a < coveredCount && covered[2 * a]! <= map[b]!.start)) {
        start = covered[2 * a]!
        end = covered[2 * a + 1]!
        a++
      } else {
        start = map[b]!.start
        end = map[b]!.end
        b++
      }
      if (n > 0 && start <= union[2 * n - 1]!) union[2 * n - 1] = Math.max(union[2 * n - 1]!, end)
      else {
        union[2 * n] = start
        union[2 * n + 1] = end
        n++
      }
    }
    ;[covered, union] = [union, covered]
    if (!ReceiverMutants.pointMergeForgetsNewer) coveredCount = n
  }
  return out.sort((p, q) => p.start - q.start)
}

/**
 * The map of the disk at `seq` (a recovery point of `chain`): the sealed segments wholly at
 * or before it through their block indexes, the segment holding it (and one the base cuts
 * into, and the active one) from their records. `onProgress` hears how far the sealed
 * segments' indexes are (at the start, after each one, and at the end): on a long log,
 * checking or rebuilding them takes seconds (docs/receiver.md, "Opening a point").
 */
export const openPointMap = async (
  chain: Chain,
  seq: number,
  write: boolean,
  onProgress?: (progress: IndexingProgress) => void
): Promise<PointMap> => {
  const g = geometryOf(chain)
  const notes: Array<Note> = []
  const last = chain.segments.length - 1
  const used: Array<{ readonly i: number; readonly whole: boolean }> = []
  let total = 0
  for (let i = last; i >= 0; i--) {
    const segment = chain.segments[i]!
    if (segment.lastSeq <= chain.base.seq) break
    if (segment.firstSeq > seq) continue
    const whole = i < last && segment.lastSeq <= seq && segment.firstSeq > chain.base.seq
    used.push({ i, whole })
    if (whole) total += segment.bytes
  }
  let bytes = 0
  onProgress?.({ bytes, total })
  // Newest first, as `mergeAll` takes them.
  const maps: Array<{ readonly map: ExtentMap; readonly segment: number }> = []
  for (const { i, whole } of used) {
    const segment = chain.segments[i]!
    const map = whole
      ? await sealedMap(chain, segment, write, notes)
      : buildMap(g, entriesThrough(segment, chain.base.seq, seq))
    maps.push({ map, segment: i })
    if (whole) {
      bytes += segment.bytes
      onProgress?.({ bytes, total })
    }
  }
  return { chain, seq, extents: mergeNewestFirst(maps), notes }
}

// ---------------------------------------------------------------------------------------------
// Reading records and base bytes, checked

/**
 * The payload of entry `k` of `segment` from `bytes` (its header and payload as read), once
 * checked: the record's CRC, and every field against the entry (a disagreement names the
 * index file and entry, as `readRange` does).
 */
export const checkedPayload = (chain: Chain, segment: Segment, k: number, bytes: Buffer): Buffer => {
  const entry = (segment.entries ?? [])[k]!
  const file = path.join(chain.diskDir, segment.name)
  const parsed = parseRecord(bytes, 0)
  const diffs =
    parsed._tag === "Record"
      ? entryMismatch(entry, parsed.header, entry.offset, parsed.crc)
      : [parsed._tag === "Short" ? "the segment ends inside the record" : parsed.reason]
  if (diffs.length === 0) return bytes.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + entry.length)
  throw segment.indexFile === undefined || parsed._tag !== "Record"
    ? new LogCorrupt({ file, offset: entry.offset, reason: `record ${entry.seq}: ${diffs.join(", ")}` })
    : new LogCorrupt({
        file: segment.indexFile,
        offset: indexEntryOffset(k),
        reason: `the index disagrees with the record at byte ${entry.offset} of ${segment.name} (seq ${entry.seq}): ${diffs.join(", ")}`
      })
}

/** Reads record `seq` of `segment` whole and checks it (`checkedPayload`); its payload. */
export const readRecord = async (
  chain: Chain,
  segment: Segment,
  handle: fs.FileHandle,
  seq: number
): Promise<Buffer> => {
  const entries = segment.entries ?? []
  const k = entryOf(entries, seq)
  const entry = entries[k]
  if (entry === undefined)
    throw new LogCorrupt({
      file: path.join(chain.diskDir, segment.name),
      offset: 0,
      reason: `no record ${seq} listed`
    })
  const buf = Buffer.allocUnsafe(RECORD_HEADER_BYTES + entry.length)
  const read = await handle.read(buf, 0, buf.length, entry.offset)
  return checkedPayload(chain, segment, k, buf.subarray(0, read.bytesRead))
}

/** The base image held open, read by range with every unit checked against its CRC (format 2). */
export class BaseRanges {
  private constructor(
    readonly handle: fs.FileHandle,
    readonly file: string,
    readonly base: Base,
    private readonly diskBytes: number,
    private readonly table: Buffer | undefined
  ) {}

  /** `undefined` when the base is no longer the one `chain` was read with (a fold replaced it). */
  static open(chain: Chain): Promise<BaseRanges | undefined> {
    return BaseRanges.openAt(chain.diskDir, geometryOf(chain), chain.base.seq)
  }

  /** The base of the disk in `diskDir`; `undefined` when it is not the base at `baseSeq`. */
  static async openAt(
    diskDir: string,
    g: { readonly blockSize: number; readonly blockCount: number },
    baseSeq: number
  ): Promise<BaseRanges | undefined> {
    const { handle, file, base } = await openBase(diskDir, g)
    try {
      if (base.seq !== baseSeq) {
        await handle.close()
        return undefined
      }
      const diskBytes = g.blockSize * g.blockCount
      let table: Buffer | undefined
      if (base.format === 2) {
        const layout = baseLayout(diskBytes, base.unitBytes)
        table = Buffer.alloc(layout.tableBytes)
        await preadFully(handle, table, layout.tableOffset)
        if (crc32c(table) !== base.tableCrc)
          throw new LogCorrupt({
            file,
            offset: layout.tableOffset,
            reason: `the checksum table (${layout.units} entries) does not match its CRC32C in the trailer`
          })
      }
      return new BaseRanges(handle, file, base, diskBytes, table)
    } catch (e) {
      await handle.close()
      throw e
    }
  }

  /** Copies bytes `[start, end)` of the image into `out` at `at`, checked unit by unit. */
  async read(start: number, end: number, out: Buffer, at: number): Promise<void> {
    if (this.base.format !== 2 || this.table === undefined) {
      await preadFully(this.handle, out.subarray(at, at + end - start), start)
      return
    }
    const unit = this.base.unitBytes
    const from = Math.floor(start / unit) * unit
    const to = Math.min(this.diskBytes, Math.ceil(end / unit) * unit)
    const buf = Buffer.allocUnsafe(to - from)
    await preadFully(this.handle, buf, from)
    for (let u = from; u < to; u += unit) {
      const bytes = buf.subarray(u - from, Math.min(to, u + unit) - from)
      const crc = crc32c(bytes)
      const expected = this.table.readUInt32LE((u / unit) * 4)
      if (crc !== expected)
        throw new LogCorrupt({
          file: this.file,
          offset: u,
          reason: `image bytes ${u}..${u + bytes.length - 1} do not match their CRC32C (checksum table entry at byte ${this.diskBytes + (u / unit) * 4})`
        })
    }
    buf.copy(out, at, start - from, end - from)
  }

  close(): Promise<void> {
    return this.handle.close()
  }
}

/** Opens the segments a map reads from; `undefined` when one is gone (a fold removed it). */
export const openSegments = async (map: PointMap): Promise<Map<number, fs.FileHandle> | undefined> => {
  const handles = new Map<number, fs.FileHandle>()
  try {
    for (const x of map.extents)
      if (!handles.has(x.segment))
        handles.set(
          x.segment,
          await fs.open(path.join(map.chain.diskDir, map.chain.segments[x.segment]!.name), "r")
        )
    return handles
  } catch (e) {
    for (const h of handles.values()) await h.close()
    if (isEnoent(e)) return undefined
    throw e
  }
}

/** Any byte range of a recovery point, read through its map (for `restore`, `verify` and an NBD export). */
export interface PointReader {
  readonly seq: number
  readonly diskBytes: number
  readonly map: PointMap
  /** Bytes `[offset, offset + length)` of the disk at the point, every one checked. */
  read(offset: number, length: number): Promise<Uint8Array>
  close(): Promise<void>
}

/** Where `x.start` lies in its record's payload. */
export const payloadIndex = (segment: Segment, x: Extent): number => {
  const entries = segment.entries ?? []
  return x.fileOffset - (entries[entryOf(entries, x.seq)]!.offset + RECORD_HEADER_BYTES)
}

/** How many records a reader keeps decoded (a record split by later writes is read once). */
const RECORD_CACHE = 64

/**
 * A reader of the point `map` describes. It holds the base and the segments open from the
 * start, so a retention fold that replaces or removes them later does not change what it
 * reads. `undefined` when a fold got there first (read the chain again).
 */
export const openPointReader = async (map: PointMap): Promise<PointReader | undefined> => {
  const base = await BaseRanges.open(map.chain)
  if (base === undefined) return undefined
  const handles = await openSegments(map).catch(async (e: unknown) => {
    await base.close()
    throw e
  })
  if (handles === undefined) {
    await base.close()
    return undefined
  }
  const g = geometryOf(map.chain)
  const diskBytes = g.blockSize * g.blockCount
  const cache = new Map<string, Buffer>()
  const payload = async (x: PointExtent): Promise<Buffer> => {
    const key = `${x.segment}:${x.seq}`
    let data = cache.get(key)
    if (data === undefined) {
      data = await readRecord(map.chain, map.chain.segments[x.segment]!, handles.get(x.segment)!, x.seq)
      if (cache.size >= RECORD_CACHE) cache.delete(cache.keys().next().value!)
      cache.set(key, data)
    }
    return data
  }
  return {
    seq: map.seq,
    diskBytes,
    map,
    read: async (offset, length) => {
      if (
        !Number.isSafeInteger(offset) ||
        !Number.isSafeInteger(length) ||
        offset < 0 ||
        length < 0 ||
        offset + length > diskBytes
      )
        throw new RangeError(`bytes ${offset}..${offset + length} lie outside the disk (${diskBytes} bytes)`)
      const out = Buffer.alloc(length)
      const end = offset + length
      let cursor = offset
      for (let i = firstEndingAfter(map.extents, offset); cursor < end; i++) {
        const x = map.extents[i]
        const gapEnd = x === undefined ? end : Math.min(end, x.start)
        if (gapEnd > cursor) {
          await base.read(cursor, gapEnd, out, cursor - offset)
          cursor = gapEnd
        }
        if (x === undefined || cursor >= end) break
        const pieceEnd = Math.min(end, x.end)
        const data = await payload(x)
        const from = payloadIndex(map.chain.segments[x.segment]!, x) + (cursor - x.start)
        data.copy(out, cursor - offset, from, from + (pieceEnd - cursor))
        cursor = pieceEnd
      }
      return out
    },
    close: async () => {
      cache.clear()
      for (const h of handles.values()) await h.close()
      await base.close()
    }
  }
}

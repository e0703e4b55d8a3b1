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
  bixExtentOffset,
  blockIndexName,
  buildMap,
  type Covers,
  type DataGeometry,
  decodeBlockIndexTable,
  encodeBlockIndex,
  type Extent,
  type ExtentMap,
  ExtentTable,
  verifyTable
} from "./blockIndex.js"
import { type Chain, type Note, type Segment, tableOf } from "./chain.js"
import { EntryTable } from "./entryTable.js"
import {
  firstEndingAfter,
  mergeTables,
  type PointExtent,
  pointExtentsOf,
  type PointTable
} from "./pointMerge.js"

export { mergeNewestFirst, mergeTables, type PointExtent, type PointTable } from "./pointMerge.js"
import { LogCorrupt } from "./errors.js"
import { isEnoent, preadFully, readIfExists, readIfExistsInto, scratch } from "./files.js"
import { recordPayloads } from "./recordCache.js"
import type { IndexEntry } from "./format.js"

export interface PointMap {
  readonly chain: Chain
  readonly seq: number
  /** Sorted, disjoint; the bytes between them come from the base image. Made from `table` when first asked for. */
  readonly extents: ReadonlyArray<PointExtent>
  /** The same extents as columns (what the reader uses: no object per extent). */
  readonly table: PointTable
  /** Block indexes rebuilt (missing, damaged or at odds with their segment). */
  readonly notes: ReadonlyArray<Note>
}

export const geometryOf = (chain: { readonly meta: DataGeometry }) => ({
  blockSize: chain.meta.blockSize,
  blockCount: chain.meta.blockCount
})

/** The records of `segment` after the base through `seq`. */
export const entriesThrough = (segment: Segment, baseSeq: number, seq: number): ReadonlyArray<IndexEntry> =>
  (segment.entries ?? []).filter((e) => e.seq > baseSeq && e.seq <= seq)

/** Writes a rebuilt `.bix` aside and renames it; a reader that cannot write (a read-only copy) goes on without. */
export const writeBestEffort = async (file: string, bytes: Buffer): Promise<void> => {
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
  const checked = checkBlockIndexTable(bytes, covers, EntryTable.fromEntries(entries))
  return checked._tag === "Valid" ? { _tag: "Valid", map: checked.map.toExtents() } : checked
}

/** `checkBlockIndex` on columns. */
export const checkBlockIndexTable = (
  bytes: Uint8Array | undefined,
  covers: Covers,
  entries: EntryTable
):
  | { readonly _tag: "Valid"; readonly map: ExtentTable }
  | Exclude<BlockIndexCheck, { readonly _tag: "Valid" }> => {
  if (bytes === undefined) return { _tag: "Missing" }
  const decoded = decodeBlockIndexTable(bytes, covers)
  if ("reason" in decoded) return { _tag: "Defect", at: decoded.offset, reason: decoded.reason }
  const defect = verifyTable(covers, entries, decoded)
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
  const bytes = await readIfExists(path.join(chain.diskDir, blockIndexName(segment.name)))
  return (await sealedTable(chain, segment, bytes, write, notes)).toExtents()
}

/** `sealedMap` as columns, from the `.bix`'s `bytes` (`undefined`: missing). */
export const sealedTable = async (
  chain: { readonly diskDir: string; readonly meta: DataGeometry },
  segment: Segment,
  bytes: Uint8Array | undefined,
  write: boolean,
  notes: Array<Note>
): Promise<ExtentTable> => {
  const file = path.join(chain.diskDir, blockIndexName(segment.name))
  const covers = coversOf(chain, segment)
  const checked = checkBlockIndexTable(bytes, covers, tableOf(segment))
  if (checked._tag === "Valid") return checked.map
  const why = checked._tag === "Missing" ? { at: 0, reason: "missing" } : checked
  const map = buildMap(covers, segment.entries ?? [])
  notes.push({ message: "rebuilt a block index", annotations: { file, at: why.at, reason: why.reason } })
  if (write) await writeBestEffort(file, encodeBlockIndex(covers, map))
  return ExtentTable.fromExtents(map)
}

/** How far opening a point is: `bytes` of `total`, the bytes of the sealed segments whose `.bix` is read and checked or rebuilt. */
export interface IndexingProgress {
  readonly bytes: number
  readonly total: number
}

/**
 * The segments the point `seq` reads from, newest first (as `mergeTables` takes their maps):
 * `whole` ones (sealed, wholly after the base and at or before the point) through their
 * `.bix`, the others (the one holding the point, one the base cuts into, the active one)
 * from their records after the base through the point (`entriesThrough`).
 */
export const segmentsOf = (
  chain: Chain,
  seq: number
): ReadonlyArray<{ readonly i: number; readonly whole: boolean }> => {
  const last = chain.segments.length - 1
  const used: Array<{ readonly i: number; readonly whole: boolean }> = []
  for (let i = last; i >= 0; i--) {
    const segment = chain.segments[i]!
    if (segment.lastSeq <= chain.base.seq) break
    if (segment.firstSeq > seq) continue
    used.push({ i, whole: i < last && segment.lastSeq <= seq && segment.firstSeq > chain.base.seq })
  }
  return used
}

/** How many `.bix` files opening a point reads ahead of the one it checks. */
const BIX_READ_AHEAD = 8

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
  const used = segmentsOf(chain, seq)
  let total = 0
  for (const u of used) if (u.whole) total += chain.segments[u.i]!.bytes
  // The `.bix` files, read a few ahead of the one being checked, each into the buffer of its
  // slot (each is decoded into columns; fresh memory for each is pages the system must map).
  // Each read is caught at once: one left unawaited when a check throws must not be an
  // unhandled rejection.
  const slots = Array.from({ length: BIX_READ_AHEAD }, scratch)
  const reads = new Map<number, Promise<Buffer | undefined>>()
  const readAhead = (u: number) => {
    const next = used[u]
    if (next === undefined || !next.whole) return
    const file = path.join(chain.diskDir, blockIndexName(chain.segments[next.i]!.name))
    const read = readIfExistsInto(file, slots[u % BIX_READ_AHEAD]!)
    read.catch(() => undefined)
    reads.set(u, read)
  }
  for (let u = 0; u < BIX_READ_AHEAD; u++) readAhead(u)
  let bytes = 0
  onProgress?.({ bytes, total })
  // Newest first, as `mergeTables` takes them.
  const maps: Array<{ readonly map: ExtentTable; readonly segment: number }> = []
  for (let u = 0; u < used.length; u++) {
    const { i, whole } = used[u]!
    const segment = chain.segments[i]!
    const map = whole
      ? await sealedTable(chain, segment, await reads.get(u), write, notes)
      : ExtentTable.fromExtents(buildMap(g, entriesThrough(segment, chain.base.seq, seq)))
    reads.delete(u)
    // Its slot is free again.
    readAhead(u + BIX_READ_AHEAD)
    maps.push({ map, segment: i })
    if (whole) {
      bytes += segment.bytes
      onProgress?.({ bytes, total })
    }
  }
  const table = mergeTables(maps)
  let extents: Array<PointExtent> | undefined
  return {
    chain,
    seq,
    table,
    get extents() {
      extents ??= pointExtentsOf(table)
      return extents
    },
    notes
  }
}

// ---------------------------------------------------------------------------------------------
// Reading records and base bytes, checked

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
  const used = [...new Set(map.table.segment)]
  try {
    // Side by side: a point of a long log reads from tens of segments.
    await Promise.all(
      used.map(async (s) => {
        handles.set(s, await fs.open(path.join(map.chain.diskDir, map.chain.segments[s]!.name), "r"))
      })
    )
    return handles
  } catch (e) {
    for (const h of handles.values()) await h.close()
    if (isEnoent(e)) return undefined
    throw e
  }
}

/** Any byte range of a recovery point, read through its map (for `restore`, `verify` and an NBD export). */
/** A read of a point must lie inside the disk: a `RangeError` otherwise. */
export const checkRange = (offset: number, length: number, diskBytes: number): void => {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > diskBytes
  )
    throw new RangeError(`bytes ${offset}..${offset + length} lie outside the disk (${diskBytes} bytes)`)
}

export interface PointReader {
  readonly seq: number
  readonly diskBytes: number
  readonly map: PointMap
  /** Bytes `[offset, offset + length)` of the disk at the point, every one checked. */
  read(offset: number, length: number): Promise<Uint8Array>
  close(): Promise<void>
}

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
  const t = map.table
  const payload = recordPayloads(map.chain, handles)
  return {
    seq: map.seq,
    diskBytes,
    map,
    read: async (offset, length) => {
      checkRange(offset, length, diskBytes)
      // Every byte is written below (from the base or a record).
      const out = Buffer.allocUnsafe(length)
      const end = offset + length
      let cursor = offset
      for (let i = firstEndingAfter(t, offset); cursor < end; i++) {
        const gapEnd = i >= t.count ? end : Math.min(end, t.start[i]!)
        if (gapEnd > cursor) {
          await base.read(cursor, gapEnd, out, cursor - offset)
          cursor = gapEnd
        }
        if (i >= t.count || cursor >= end) break
        const pieceEnd = Math.min(end, t.end[i]!)
        const pieceStart = t.start[i]!
        await payload(t.segment[i]!, t.seq[i]!, t.fileOffset[i]!, (data, at) => {
          const from = at + (cursor - pieceStart)
          data.copy(out, cursor - offset, from, from + (pieceEnd - cursor))
        })
        cursor = pieceEnd
      }
      return out
    },
    close: async () => {
      payload.clear()
      for (const h of handles.values()) await h.close()
      await base.close()
    }
  }
}

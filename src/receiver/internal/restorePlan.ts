/**
 * The reads of a restore (`writePoint.ts`): the base's units holding bytes no extent covers,
 * and the records the point keeps bytes of, segment by segment in file order, neighbours
 * sharing a read; and the tuning of both reads and writes.
 */
import { RECORD_HEADER_BYTES } from "./format.js"
import { ReceiverMutants } from "./mutants.js"
import { tableOf } from "./chain.js"
import type { EntryTable } from "./entryTable.js"
import type { PointMap, PointTable } from "./point.js"

/**
 * How a restore reads and writes; the properties shrink them so reads split at every edge.
 * `batchBytes`: writes are sent in batches of about this much (or when a read needs a
 * buffer they hold). `writesInFlight`: batches outstanding at once. `runGap`: records (or
 * base units) closer than this are read in one go (the bytes between read and dropped).
 * `runBytes`: a read covers at most this much (unless one record is larger). `recordBytes`:
 * a record up to this large still goes into the reused buffers (`bufferFor`). `readsAhead`:
 * reads started ahead of the one being placed (each holds a buffer of `bufferFor`'s size).
 * `direct`: reads bypass the page cache where they can (`directReads.ts`). `worker`: a
 * worker thread writes (`imageWriter.ts`), else the file handle. `flushBytes`: after about
 * this much is placed, an fdatasync of the image starts (one at a time, 0: none). None by
 * default: an early one writes back extents scattered over the image, and the holes between
 * them, filled later, leave the final one small scattered writes (420–460 MB/s on this VM
 * against 930 MB/s for the whole image in one sweep; docs/performance.md, "Session 14").
 * `runGap` and `runBytes`: on this VM's disk, 512 KiB–1 MiB direct reads made 2.1–2.4 GB/s
 * and 4 MiB ones 1.6 GB/s (fio, 3 threads); a 64 KiB gap reads 2.08 GiB for the bench's
 * point where 256 KiB read 2.92.
 */
export const tuning = {
  batchBytes: 1 << 20,
  writesInFlight: 4,
  runGap: 64 << 10,
  runBytes: 1 << 20,
  recordBytes: 4 << 20,
  readsAhead: 2,
  direct: true,
  worker: true,
  flushBytes: 0
}

/**
 * The buffer a read of `length` bytes needs: reads merge up to `tuning.runBytes`, but a single
 * record of up to `tuning.recordBytes` (a large guest write) still goes into a reused,
 * page-aligned buffer and bypasses the page cache; only larger ones get one of their own.
 */
export const bufferFor = (length: number): number =>
  Math.min(Math.max(tuning.runBytes, tuning.recordBytes), length)

/**
 * A record of a segment the point keeps bytes of (entry `k`), and those bytes' extents:
 * `order[from]` … `order[to - 1]`, indexes into the point's table (file order).
 */
export interface Needed {
  readonly k: number
  readonly from: number
  to: number
}

/** Bytes of the base to place: `[start, end)` of the disk, inside one unit. */
export interface Piece {
  readonly start: number
  readonly end: number
}

/** One read: bytes `[start, end)` of a file, and what is placed from them. */
export type Run =
  | {
      readonly _tag: "Log"
      readonly segment: number
      /** The segment's index entries (columns: no object per record). */
      readonly table: EntryTable
      readonly start: number
      readonly end: number
      /** The records the run holds whole. */
      readonly records: ReadonlyArray<Needed>
      /** The point's extents (by index into its table) in file order, segment by segment. */
      readonly order: Uint32Array
    }
  | {
      readonly _tag: "Base"
      readonly start: number
      end: number
      /** The bytes no extent covers, in disk order. */
      readonly pieces: Array<Piece>
    }

/**
 * The reads of the base: the units holding bytes no extent covers (`pieces`, split at unit
 * edges: each is checked against its unit's CRC), neighbours closer than `tuning.runGap` in one read of at most `tuning.runBytes`.
 */
export const planBase = (t: PointTable, diskBytes: number, unit: number): Array<Run> => {
  const runs: Array<Run & { _tag: "Base" }> = []
  const add = (start: number, end: number) => {
    for (let at = start; at < end; ) {
      const unitStart = Math.floor(at / unit) * unit
      const unitEnd = Math.min(diskBytes, unitStart + unit)
      const pieceEnd = Math.min(end, unitEnd)
      const run = runs.at(-1)
      if (run !== undefined && unitStart < run.end) {
        // The same unit as the last piece (two gaps in one unit).
        run.pieces.push({ start: at, end: pieceEnd })
      } else if (
        run !== undefined &&
        unitStart - run.end <= tuning.runGap &&
        unitEnd - run.start <= tuning.runBytes
      ) {
        run.end = unitEnd
        run.pieces.push({ start: at, end: pieceEnd })
      } else
        runs.push({ _tag: "Base", start: unitStart, end: unitEnd, pieces: [{ start: at, end: pieceEnd }] })
      at = pieceEnd
    }
  }
  if (ReceiverMutants.restoreWritesOverriddenBase) add(0, diskBytes)
  else {
    let covered = 0
    for (let i = 0; i < t.count; i++) {
      if (t.start[i]! > covered) add(covered, t.start[i]!)
      covered = t.end[i]!
    }
    if (covered < diskBytes) add(covered, diskBytes)
  }
  return runs
}

/**
 * The reads that fetch every record the point keeps bytes of, segment by segment in file
 * order: neighbours closer than `tuning.runGap` share a read of at most `tuning.runBytes`. A record no
 * later write left a byte of is not read; long stretches of them are skipped.
 */
export const planLog = (map: PointMap): Array<Run> => {
  const t = map.table
  // The extents by segment, then in file order (on the table's columns: no object per extent).
  const order = new Uint32Array(t.count)
  for (let i = 0; i < t.count; i++) order[i] = i
  order.sort((a, b) => t.segment[a]! - t.segment[b]! || t.fileOffset[a]! - t.fileOffset[b]!)
  const runs: Array<Run> = []
  for (let first = 0; first < order.length; ) {
    const s = t.segment[order[first]!]!
    let stop = first
    while (stop < order.length && t.segment[order[stop]!] === s) stop++
    const segment = map.chain.segments[s]!
    const table = tableOf(segment)
    // File order is record order: a record's extents come together.
    let records: Array<Needed> = []
    let start = 0
    let end = 0
    for (let o = first; o < stop; o++) {
      const seq = t.seq[order[o]!]!
      const last = records.at(-1)
      if (last !== undefined && table.seq[last.k] === seq) {
        last.to = o + 1
        continue
      }
      const k = table.indexOf(seq)
      const offset = table.offset[k]!
      const recordEnd = Math.min(segment.bytes, offset + RECORD_HEADER_BYTES + table.length[k]!)
      if (records.length > 0 && (offset - end > tuning.runGap || recordEnd - start > tuning.runBytes)) {
        runs.push({ _tag: "Log", segment: s, table, start, end, records, order })
        records = []
      }
      if (records.length === 0) start = offset
      records.push({ k, from: o, to: o + 1 })
      end = recordEnd
    }
    if (records.length > 0) runs.push({ _tag: "Log", segment: s, table, start, end, records, order })
    first = stop
  }
  return runs
}

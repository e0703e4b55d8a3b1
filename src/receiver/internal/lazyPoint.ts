/**
 * A recovery point served before its map is merged (`cdp-sync mount`): a read looks for its
 * bytes in the point's segment maps newest first (`segmentsOf`), and a sealed segment's
 * `.bix` is read and checked against its records (or rebuilt) the first time a read gets to
 * it — a map a newer one covers for that read is not needed for it. What `openPointMap` does
 * for every segment before the first byte (decoding and checking every `.bix`, then the
 * merge) is then spread over the reads, and `checkAll` does the rest behind them. The bytes
 * served are the merged map's: each byte from the newest map holding it, else the base;
 * every payload checked before it is returned, as `openPointReader` checks it.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { blockIndexName, buildMap, decodeBlockIndexTable, ExtentTable } from "./blockIndex.js"
import type { Chain, Note } from "./chain.js"
import { isEnoent, readIfExists } from "./files.js"
import { ReceiverMutants } from "./mutants.js"
import {
  BaseRanges,
  checkRange,
  coversOf,
  entriesThrough,
  geometryOf,
  sealedTable,
  segmentsOf
} from "./point.js"
import { recordPayloads } from "./recordCache.js"
import { firstEndingAfter as firstPieceEndingAfter, mergeTables, type PointTable } from "./pointMerge.js"

/** How many `.bix` files are read ahead of the maps being checked. */
const BIX_READ_AHEAD = 8

/** A point read through its segments' maps, each checked when a read first needs it. */
export interface LazyPointReader {
  readonly seq: number
  readonly diskBytes: number
  /** Bytes `[offset, offset + length)` of the disk at the point, every one checked. */
  read(offset: number, length: number): Promise<Uint8Array>
  /** Checks (or rebuilds) every map no read has needed yet, newest first, yielding between them. */
  checkAll(): Promise<void>
  close(): Promise<void>
}

/** A piece of a read served from a record: bytes `[start, end)` of the disk, from `fileOffset` of segment `segment`. */
interface Piece {
  readonly start: number
  readonly end: number
  readonly segment: number
  readonly seq: number
  readonly fileOffset: number
}

/**
 * Opens the point `seq` of `chain` for reading, holding the base and the segments it may
 * read open from the start (a fold later changes nothing it reads); `undefined` when a fold
 * got there first (read the chain again). `onNote` hears of each `.bix` rebuilt (written
 * back when `write` and its segment is still the one held open).
 */
export const openLazyPointReader = async (
  chain: Chain,
  seq: number,
  write: boolean,
  onNote: (note: Note) => void
): Promise<LazyPointReader | undefined> => {
  const used = segmentsOf(chain, seq)
  const base = await BaseRanges.open(chain)
  if (base === undefined) return undefined
  const handles = new Map<number, fs.FileHandle>()
  const closeAll = async () => {
    for (const h of handles.values()) await h.close()
    await base.close()
  }
  try {
    await Promise.all(
      used.map(async ({ i }) => {
        handles.set(i, await fs.open(path.join(chain.diskDir, chain.segments[i]!.name), "r"))
      })
    )
  } catch (e) {
    await closeAll()
    if (isEnoent(e)) return undefined
    throw e
  }
  const g = geometryOf(chain)
  const diskBytes = g.blockSize * g.blockCount
  const maps: Array<Promise<ExtentTable> | undefined> = used.map(() => undefined)
  /** The maps checked so far, by `used` index: a read takes these without waiting a turn. */
  const ready: Array<ExtentTable | undefined> = used.map(() => undefined)

  // The `.bix` files of the newest sealed segments, read ahead of the reads that check them
  // (a read needs the newest maps first), a few at a time; each caught at once (one nobody
  // asks for must not be an unhandled rejection).
  const bixReads = new Map<number, Promise<Buffer | undefined>>()
  const readBix = (u: number) => {
    const next = used[u]
    if (next === undefined || !next.whole || bixReads.has(u)) return
    const read = readIfExists(path.join(chain.diskDir, blockIndexName(chain.segments[next.i]!.name)))
    read.catch(() => undefined)
    bixReads.set(u, read)
  }
  for (let u = 0; u < BIX_READ_AHEAD; u++) readBix(u)
  const bixOf = (u: number): Promise<Buffer | undefined> => {
    readBix(u)
    const read = bixReads.get(u)!
    bixReads.delete(u)
    readBix(u + BIX_READ_AHEAD)
    return read
  }

  /** The map of `used[u]`: the records after the base through the point, or the `.bix` checked (rebuilt when it fails). */
  const build = async (u: number): Promise<ExtentTable> => {
    const { i, whole } = used[u]!
    const segment = chain.segments[i]!
    if (!whole) return ExtentTable.fromExtents(buildMap(g, entriesThrough(segment, chain.base.seq, seq)))
    const bytes = await bixOf(u)
    // A fold may have removed the segment (and its `.bix`) since: rebuilt from the records
    // read when the chain was opened, and not written beside a segment that is no longer there.
    const writeBack = write && (await sameFile(handles.get(i)!, path.join(chain.diskDir, segment.name)))
    if (ReceiverMutants.lazyPointTrustsBix && bytes !== undefined) {
      const decoded = decodeBlockIndexTable(bytes, coversOf(chain, segment))
      if (!("reason" in decoded)) return decoded
    }
    const notes: Array<Note> = []
    const map = await sealedTable(chain, segment, bytes, writeBack, notes)
    for (const note of notes) onNote(note)
    return map
  }
  const mapOf = (u: number): Promise<ExtentTable> => {
    let map = maps[u]
    if (map === undefined) {
      map = build(u)
      // A failure is the read's that awaits it; checkAll's is its own.
      map.then(
        (t) => {
          ready[u] = t
        },
        () => undefined
      )
      maps[u] = map
    }
    return map
  }

  /** The pieces of `[offset, end)` the maps hold, newest first; the rest is the base's. */
  const locate = async (
    offset: number,
    end: number
  ): Promise<{ pieces: Array<Piece>; rest: Array<readonly [number, number]> }> => {
    const pieces: Array<Piece> = []
    let rest: Array<readonly [number, number]> = [[offset, end]]
    if (merged !== undefined) {
      // Every map checked: one lookup in the merged map, as `openPointReader` reads.
      const t = merged
      rest = []
      let cursor = offset
      for (let j = firstPieceEndingAfter(t, offset); j < t.count && t.start[j]! < end; j++) {
        const start = Math.max(cursor, t.start[j]!)
        const stop = Math.min(end, t.end[j]!)
        if (start > cursor) rest.push([cursor, start])
        pieces.push({
          start,
          end: stop,
          segment: t.segment[j]!,
          seq: t.seq[j]!,
          fileOffset: t.fileOffset[j]! + (start - t.start[j]!)
        })
        cursor = stop
      }
      if (cursor < end) rest.push([cursor, end])
      return { pieces, rest }
    }
    for (let u = 0; u < used.length && rest.length > 0; u++) {
      const v = ReceiverMutants.lazyPointOldestFirst ? used.length - 1 - u : u
      const t = ready[v] ?? (await mapOf(v))
      const segment = used[v]!.i
      const uncovered: Array<readonly [number, number]> = []
      for (const [a, b] of rest) {
        let cursor = a
        for (let j = t.firstEndingAfter(a); j < t.count && t.start[j]! < b; j++) {
          const start = Math.max(cursor, t.start[j]!)
          const stop = Math.min(b, t.end[j]!)
          if (start > cursor) uncovered.push([cursor, start])
          pieces.push({
            start,
            end: stop,
            segment,
            seq: t.seq[j]!,
            fileOffset: t.fileOffset[j]! + (start - t.start[j]!)
          })
          cursor = stop
        }
        if (cursor < b) uncovered.push([cursor, b])
      }
      rest = uncovered
    }
    return { pieces, rest }
  }

  const payload = recordPayloads(chain, handles)
  let closed = false
  /** Every map, merged, once `checkAll` has checked them all. */
  let merged: PointTable | undefined
  return {
    seq,
    diskBytes,
    read: async (offset, length) => {
      checkRange(offset, length, diskBytes)
      // The pieces and the rest cover every byte.
      const out = Buffer.allocUnsafe(length)
      const { pieces, rest } = await locate(offset, offset + length)
      for (const [a, b] of rest) await base.read(a, b, out, a - offset)
      for (const x of pieces)
        await payload(x.segment, x.seq, x.fileOffset, (data, at) => {
          data.copy(out, x.start - offset, at, at + (x.end - x.start))
        })
      return out
    },
    checkAll: async () => {
      // Stops once the reader is closed (its files are).
      for (let u = 0; u < used.length && !closed; u++) {
        await mapOf(u)
        // Reads waiting meanwhile go first.
        await new Promise((resolve) => setImmediate(resolve))
      }
      // Then merged (newest first): later reads look once, not through every map.
      if (!closed && !ReceiverMutants.lazyPointOldestFirst)
        merged ??= mergeTables(used.map(({ i }, u) => ({ map: ready[u]!, segment: i })))
    },
    close: async () => {
      closed = true
      payload.clear()
      await closeAll()
    }
  }
}

/** Whether `file` is still the file `handle` holds open (a fold unlinks a segment it folds). */
const sameFile = async (handle: fs.FileHandle, file: string): Promise<boolean> => {
  try {
    const [held, named] = await Promise.all([handle.stat(), fs.stat(file)])
    return held.ino === named.ino && held.dev === named.dev
  } catch (e) {
    if (isEnoent(e)) return false
    throw e
  }
}

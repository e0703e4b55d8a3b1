/**
 * A disk's live block index (docs/receiver.md, "Live index"): where the newest version of
 * every written byte of the log lives now — the map `openPointMap(chain, lastSeq)` would
 * build, kept up to date instead of rebuilt: the writer adds each record once it is durable,
 * a retention fold drops the extents of the records it folded into the base. The receiver
 * answers checksum requests through it (`internal/checksums.ts`).
 *
 * Built on first use (a receiver never asked keeps no map), from the sealed segments'
 * `.bix` (checked against their `.idx`, rebuilt when at odds) and the active segment's
 * records; records committed while it is built wait in `pending`. Memory: one extent per
 * run of bytes whose newest version is one record (bounded by the distinct extents of the
 * log since the base), held in regions of `REGION_BYTES` so an append costs O(extents of a
 * region), not O(extents of the disk).
 */
import * as path from "node:path"
import type { Base } from "./base.js"
import {
  buildMap,
  type DataGeometry,
  entryOf,
  type Extent,
  firstEndingAfter,
  recordRange
} from "./blockIndex.js"
import type { Note, Segment } from "./chain.js"
import { LogCorrupt } from "./errors.js"
import { type IndexEntry, indexName, RECORD_HEADER_BYTES } from "./format.js"
import { ReceiverMutants } from "./mutants.js"
import { mergeNewestFirst, sealedMap } from "./point.js"
import { readIndex } from "./segment.js"

/** An extent of the live map: its segment, and the byte of that file where its record begins. */
export interface LiveExtent extends Extent {
  readonly segment: Segment
  readonly record: number
}

/** What the index reads a log by (`LogStore.DiskLog` is one). */
export interface LogView {
  readonly diskId: string
  readonly diskDir: string
  readonly geometry: DataGeometry
  readonly base: Base
  readonly segments: ReadonlyArray<Segment>
}

/** A region of the disk: a multiple of every block size (powers of two up to 1 MiB). */
export const REGION_BYTES = 1 << 20

/** Every live extent is made here, with its fields in one order (one object shape: compact, fast). */
const extent = (
  start: number,
  end: number,
  seq: number,
  fileOffset: number,
  segment: Segment,
  record: number
): LiveExtent => ({ start, end, seq, fileOffset, segment, record })

const clip = (x: LiveExtent, start: number, end: number): LiveExtent =>
  start === x.start && end === x.end
    ? x
    : extent(start, end, x.seq, x.fileOffset + (start - x.start), x.segment, x.record)

/** `held` (sorted, disjoint) with `x` over it: the extents it overlaps cut back or replaced, in place. */
const insertOne = (held: Array<LiveExtent>, x: LiveExtent): void => {
  const from = firstEndingAfter(held, x.start)
  let to = from
  while (to < held.length && held[to]!.start < x.end) to++
  const replacing: Array<LiveExtent> = []
  const first = held[from]
  if (first !== undefined && from < to && first.start < x.start)
    replacing.push(clip(first, first.start, x.start))
  replacing.push(x)
  const last = held[to - 1]
  if (last !== undefined && from < to && last.end > x.end) replacing.push(clip(last, x.end, last.end))
  held.splice(from, to - from, ...replacing)
}

/** A sealed segment's records from its index (checked when the log was opened). */
const sealedEntries = async (diskDir: string, segment: Segment): Promise<Array<IndexEntry>> => {
  const file = path.join(diskDir, indexName(segment.name))
  const read = await readIndex(file, segment.bytes, segment.firstSeq)
  if (read._tag === "Entries") return [...read.entries]
  throw new LogCorrupt({
    file,
    offset: read._tag === "Unusable" ? read.defect.offset : 0,
    reason: `the index of a sealed segment ${read._tag === "Unusable" ? `is damaged: ${read.defect.reason}` : "is missing"} (it was checked when the log was opened)`
  })
}

export class LiveIndex {
  /** Region number to its extents (sorted, disjoint, inside the region); regions without any are absent. */
  private regions = new Map<number, Array<LiveExtent>>()
  private state: "cold" | "building" | "ready" = "cold"
  /** Records committed while the index was being built, applied after. */
  private pending: Array<readonly [Segment, IndexEntry]> = []
  private building: Promise<ReadonlyArray<Note>> | undefined = undefined

  constructor(private readonly geometry: DataGeometry) {}

  get ready(): boolean {
    return this.state === "ready"
  }

  /** Extents held (a record split by a region edge counts once per region). */
  get size(): number {
    let n = 0
    for (const r of this.regions.values()) n += r.length
    return n
  }

  /** A record the writer made durable in `segment`. Synchronous: called where the writer notes it. */
  add(segment: Segment, entry: IndexEntry): void {
    if (this.state === "cold") return
    if (this.state === "building") this.pending.push([segment, entry])
    else if (!ReceiverMutants.liveIndexSkipsAppend) this.insert(segment, entry)
  }

  /** A retention fold moved the base to `seq`: the bytes of every record through it are the base's now. */
  folded(seq: number): void {
    if (this.state !== "ready" || ReceiverMutants.liveIndexFoldKeepsExtents) return
    for (const [r, extents] of this.regions) {
      const kept = extents.filter((x) => x.seq > seq)
      if (kept.length === 0) this.regions.delete(r)
      else if (kept.length < extents.length) this.regions.set(r, kept)
    }
  }

  /** Forgets the map (the log failed, or a build did): the next use builds it again. */
  drop(): void {
    this.regions = new Map()
    this.pending = []
    this.state = "cold"
  }

  /**
   * Builds the map if it is not built (once; concurrent callers share the build). The caller
   * holds the disk's maintenance permit: no fold runs meanwhile. Returns what the build noted
   * (block indexes rebuilt).
   */
  ensure(log: LogView): Promise<ReadonlyArray<Note>> {
    if (this.state === "ready") return Promise.resolve([])
    this.building ??= this.build(log).finally(() => {
      this.building = undefined
    })
    return this.building
  }

  private async build(log: LogView): Promise<ReadonlyArray<Note>> {
    // One synchronous step: what the segments hold now is read below; later records wait in `pending`.
    this.state = "building"
    this.pending = []
    const baseSeq = log.base.seq
    const taken = log.segments.map((segment) => ({ segment, entries: segment.entries?.slice() }))
    const notes: Array<Note> = []
    try {
      // Newest first, as `mergeNewestFirst` takes them; each segment's records kept to find a record's start.
      const maps: Array<{ readonly map: ReadonlyArray<Extent>; readonly segment: number }> = []
      const records = new Map<number, ReadonlyArray<IndexEntry>>()
      for (let i = taken.length - 1; i >= 0; i--) {
        const { segment, entries } = taken[i]!
        if (segment.lastSeq <= baseSeq) break
        const all = entries ?? (await sealedEntries(log.diskDir, segment))
        let map: ReadonlyArray<Extent>
        if (entries === undefined && segment.firstSeq > baseSeq) {
          // A sealed segment wholly after the base: its `.bix`, checked against its records.
          const at = { diskDir: log.diskDir, meta: log.geometry }
          map = await sealedMap(at, { ...segment, entries: all }, true, notes)
        } else
          map = buildMap(
            this.geometry,
            all.filter((e) => e.seq > baseSeq)
          )
        maps.push({ map, segment: i })
        records.set(i, all)
      }
      this.regions = new Map()
      for (const x of mergeNewestFirst(maps)) {
        const all = records.get(x.segment)!
        this.place(
          extent(
            x.start,
            x.end,
            x.seq,
            x.fileOffset,
            taken[x.segment]!.segment,
            all[entryOf(all, x.seq)]!.offset
          )
        )
      }
      this.state = "ready"
      const pending = this.pending
      this.pending = []
      for (const [segment, entry] of pending) this.add(segment, entry)
      return notes
    } catch (e) {
      this.drop()
      throw e
    }
  }

  /** Puts `x` over what the regions it spans hold. */
  private place(x: LiveExtent): void {
    for (let r = Math.floor(x.start / REGION_BYTES); r * REGION_BYTES < x.end; r++) {
      const piece = clip(x, Math.max(x.start, r * REGION_BYTES), Math.min(x.end, (r + 1) * REGION_BYTES))
      const held = this.regions.get(r)
      if (held === undefined) this.regions.set(r, [piece])
      else insertOne(held, piece)
    }
  }

  private insert(segment: Segment, entry: IndexEntry): void {
    const range = recordRange(this.geometry, entry)
    if (range === undefined) return
    this.place(
      extent(range.start, range.end, entry.seq, entry.offset + RECORD_HEADER_BYTES, segment, entry.offset)
    )
  }

  /** The extents over bytes `[start, end)`, clipped to it, in order; the bytes between them are the base's. */
  extentsIn(start: number, end: number): Array<LiveExtent> {
    const out: Array<LiveExtent> = []
    for (let r = Math.floor(start / REGION_BYTES); r * REGION_BYTES < end; r++) {
      const held = this.regions.get(r)
      if (held === undefined) continue
      for (let i = firstEndingAfter(held, start); i < held.length && held[i]!.start < end; i++) {
        const x = held[i]!
        out.push(clip(x, Math.max(start, x.start), Math.min(end, x.end)))
      }
    }
    return out
  }

  /** The whole map, sorted: the pieces a region edge split joined again (as `openPointMap` has them). */
  extents(): Array<LiveExtent> {
    const out: Array<LiveExtent> = []
    for (const r of [...this.regions.keys()].sort((a, b) => a - b))
      for (const x of this.regions.get(r)!) {
        const last = out[out.length - 1]
        if (
          last !== undefined &&
          last.end === x.start &&
          last.seq === x.seq &&
          last.segment === x.segment &&
          last.fileOffset + (last.end - last.start) === x.fileOffset
        )
          out[out.length - 1] = extent(
            last.start,
            x.end,
            last.seq,
            last.fileOffset,
            last.segment,
            last.record
          )
        else out.push(x)
      }
    return out
  }
}

/**
 * What the chain knows of one segment (`Segment`): its summary (seqs, bytes, last point and
 * marker) and its records — as objects (`entries`) and, for a sealed segment read from its
 * index in read mode, as columns (`tableOf`), the objects then made only when asked for.
 */
import { EntryTable, GrowingEntryTable } from "./entryTable.js"
import { FLAG_RECOVERY_POINT, type IndexEntry, isRecoveryPoint, Kind } from "./format.js"

/** What the chain knows of one segment. */
export interface Segment {
  readonly name: string
  readonly firstSeq: number
  lastSeq: number
  /** Committed size of the file. */
  bytes: number
  records: number
  lastTime: number
  /** Last recovery point in this segment (seq and receive time). */
  lastPoint: { readonly seq: number; readonly time: number } | undefined
  /** Last resync marker in this segment: whether it begins a resync. */
  lastMarker: { readonly seq: number; readonly begin: boolean } | undefined
  /** The records (kept in `read` mode, and for the last segment in `recover` mode). */
  entries: Array<IndexEntry> | undefined
  /**
   * The index `entries` were taken from (checked for form and spot-checked against the
   * segment, not verified record by record: readers pass it on to `readRange`, which names it
   * when a record disagrees); `undefined` when they come from a scan.
   */
  indexFile?: string | undefined
}

export const emptySegment = (name: string, firstSeq: number, bytes: number, keep: boolean): Segment => ({
  name,
  firstSeq,
  lastSeq: firstSeq - 1,
  bytes,
  records: 0,
  lastTime: 0,
  lastPoint: undefined,
  lastMarker: undefined,
  entries: keep ? [] : undefined
})

/** Folds one record into a segment's summary (the caller appends to `entries`). */
export const noteRecord = (segment: Segment, e: IndexEntry): void => {
  segment.lastSeq = e.seq
  segment.records++
  segment.lastTime = e.time
  if (isRecoveryPoint(e)) segment.lastPoint = { seq: e.seq, time: e.time }
  if (e.kind === Kind.ResyncBegin || e.kind === Kind.ResyncEnd)
    segment.lastMarker = { seq: e.seq, begin: e.kind === Kind.ResyncBegin }
}

export const summarize = (
  name: string,
  entries: ReadonlyArray<IndexEntry>,
  bytes: number,
  keep: boolean,
  indexFile?: string
): Segment => {
  const segment = emptySegment(name, entries[0]!.seq, bytes, false)
  for (const e of entries) noteRecord(segment, e)
  segment.entries = keep ? [...entries] : undefined
  segment.indexFile = indexFile
  return segment
}

/** The tables sealed segments were read as (read mode); a segment copied or given other entries has none. */
const tables = new WeakMap<Segment, EntryTable>()

/**
 * The records of `segment` as columns: the table its index was read as, or one made from its
 * entries (a segment scanned, or made by hand). What a pass over every record reads.
 */
export const tableOf = (segment: Segment): EntryTable =>
  tables.get(segment) ?? EntryTable.fromEntries(segment.entries ?? [])

/**
 * A sealed segment read from its index: the summary from the columns and, when `keep` (read
 * mode), `entries` made from them only when first asked for (opening a point needs none: `tableOf`).
 * A chain opened in read mode is not changed afterwards; giving the segment other entries
 * drops its table.
 */
export const summarizeTable = (
  name: string,
  table: EntryTable,
  bytes: number,
  indexFile: string,
  keep: boolean
): Segment => {
  const last = table.count - 1
  const segment = emptySegment(name, table.seq[0]!, bytes, false)
  segment.lastSeq = table.seq[last]!
  segment.records = table.count
  segment.lastTime = table.time[last]!
  for (let i = last; i >= 0 && segment.lastPoint === undefined; i--)
    if ((table.flags[i]! & FLAG_RECOVERY_POINT) !== 0)
      segment.lastPoint = { seq: table.seq[i]!, time: table.time[i]! }
  for (let i = last; i >= 0 && segment.lastMarker === undefined; i--)
    if (table.kind[i] === Kind.ResyncBegin || table.kind[i] === Kind.ResyncEnd)
      segment.lastMarker = { seq: table.seq[i]!, begin: table.kind[i] === Kind.ResyncBegin }
  segment.indexFile = indexFile
  if (!keep) return segment
  let entries: Array<IndexEntry> | undefined
  Object.defineProperty(segment, "entries", {
    enumerable: true,
    configurable: true,
    get: () => {
      entries ??= table.toEntries()
      return entries
    },
    set: (given: Array<IndexEntry> | undefined) => {
      entries = given
      tables.delete(segment)
    }
  })
  tables.set(segment, table)
  return segment
}

/** Whether the log after `baseSeq` ends inside a resync (the base itself is a recovery point). */
export const endsInResync = (segments: ReadonlyArray<Segment>, baseSeq: number): boolean => {
  for (let i = segments.length - 1; i >= 0; i--) {
    const marker = segments[i]!.lastMarker
    if (marker !== undefined) return marker.seq > baseSeq && marker.begin
  }
  return false
}

/** The segments whose entries are growing columns (`keepEntriesAsColumns`). */
const growing = new WeakMap<Segment, GrowingEntryTable>()

/**
 * The writer's active segment keeps its records as growing columns, not objects that live
 * until its seal: `entries` makes the objects when asked for (a snapshot: the live index's
 * build, the seal), `appendEntry` adds one. Setting `entries` (the seal clears it) drops
 * the columns.
 */
export const keepEntriesAsColumns = (segment: Segment): void => {
  const columns = new GrowingEntryTable()
  for (const e of segment.entries ?? []) columns.push(e)
  let given: Array<IndexEntry> | undefined
  growing.set(segment, columns)
  Object.defineProperty(segment, "entries", {
    enumerable: true,
    configurable: true,
    get: () => (growing.has(segment) ? columns.toEntries() : given),
    set: (entries: Array<IndexEntry> | undefined) => {
      given = entries
      growing.delete(segment)
    }
  })
}

/** A segment's entries as columns: its growing ones (a copy), else a table made from its objects. */
export const entryColumns = (segment: Segment): EntryTable =>
  growing.get(segment)?.toTable() ?? EntryTable.fromEntries(segment.entries ?? [])

/** Adds a committed record to a segment's entries (its columns, when it keeps them so). */
export const appendEntry = (segment: Segment, e: IndexEntry): void => {
  const columns = growing.get(segment)
  if (columns !== undefined) columns.push(e)
  else segment.entries?.push(e)
}

/**
 * The records a point reader serves from (`openPointReader`, `openLazyPointReader`: what a
 * mount's reads and `verify`'s digests go through), each read whole and checked against its
 * CRC and its index entry before a byte of it is used, the last few kept. A record's CRC
 * covers its header and its whole payload, so a 4 KiB read of a 64 KiB record reads and
 * checks the 64 KiB: what keeps that cheap is doing it once per record and without fresh
 * memory. The records live in slots whose buffers are read into again (a fresh buffer per
 * record, and the garbage it became, was a sixth of a mount's CPU under random reads); a
 * slot a read is using (`pins`) or is reading into is never given to another record, so
 * bytes handed to `use` are the checked ones and stay so until `use` returns. The read is
 * `fs.read` on the descriptor (the promise API's FileHandle.read costs more per call).
 */
import * as fs from "node:fs"
import type { FileHandle } from "node:fs/promises"
import * as path from "node:path"
import type { Chain, Segment } from "./chain.js"
import { tableOf } from "./chain.js"
import { crc32c } from "../../internal/crc32c.js"
import type { EntryTable } from "./entryTable.js"
import { LogCorrupt } from "./errors.js"
import { entryMismatch, indexEntryOffset, parseRecord, RECORD_HEADER_BYTES } from "./format.js"
import { ReceiverMutants } from "./mutants.js"
import { recordRefusal } from "./recordCheck.js"

/** How many records a reader keeps (a record split by later writes, or read again, is read once); tests shrink it. */
export const recordCacheTuning = { records: 64 }

/**
 * The payload of record `k` of `table` (of `segment`) in `bytes` (its header and payload as
 * read), once checked: the record's CRC, and every field against the entry (a disagreement
 * names the index file and entry when the segment has one). Whether it passes is
 * `recordRefusal`'s to say, the check restore's threads make too (recordCheck.ts); a refusal
 * is then told field by field.
 */
export const checkedRecord = (
  chain: Chain,
  segment: Segment,
  table: EntryTable,
  k: number,
  bytes: Buffer
): Buffer => {
  const refusal = recordRefusal(
    crc32c,
    bytes,
    0,
    table.length[k]!,
    table.seq[k]!,
    table.kind[k]!,
    table.flags[k]!,
    table.epoch[k]!,
    table.position[k]!,
    table.time[k]!,
    table.crc[k]!
  )
  if (refusal === undefined)
    return bytes.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + table.length[k]!)
  const entry = table.entry(k)
  const parsed = parseRecord(bytes, 0)
  const told =
    parsed._tag === "Record"
      ? entryMismatch(entry, parsed.header, entry.offset, parsed.crc)
      : [parsed._tag === "Short" ? "the segment ends inside the record" : parsed.reason]
  // `parseRecord` and `entryMismatch` see what `recordRefusal` sees (the property proves it); else its reason.
  const diffs = told.length > 0 ? told : [refusal]
  throw segment.indexFile === undefined || parsed._tag !== "Record"
    ? new LogCorrupt({
        file: path.join(chain.diskDir, segment.name),
        offset: entry.offset,
        reason: `record ${entry.seq}: ${diffs.join(", ")}`
      })
    : new LogCorrupt({
        file: segment.indexFile,
        offset: indexEntryOffset(k),
        reason: `the index disagrees with the record at byte ${entry.offset} of ${segment.name} (seq ${entry.seq}): ${diffs.join(", ")}`
      })
}

/** A record kept: its bytes (in `buf`, read into again when the slot is reused) once checked. */
interface Slot {
  readonly segment: number
  readonly seq: number
  buf: Buffer
  /** The checked payload (a view of `buf`), once read. */
  payload: Buffer | undefined
  /** Where the piece's record starts its payload in the segment file. */
  payloadOffset: number
  /** The read and check under way. */
  loading: Promise<void> | undefined
  /** Reads using the slot's bytes (or waiting for them): the slot is not reused meanwhile. */
  pins: number
}

/** Where a piece of a point lies: `use` is given its record's checked payload and the byte of it the piece starts at. */
export interface RecordPayloads {
  (segment: number, seq: number, fileOffset: number, use: (data: Buffer, at: number) => void): Promise<void>
  /** How many records are kept now. */
  kept(): number
  clear(): void
}

/** `read(2)` at `position`, into `buf`; the bytes read. */
const pread = (fd: number, buf: Buffer, length: number, position: number): Promise<number> =>
  new Promise((resolve, reject) => {
    fs.read(fd, buf, 0, length, position, (error, bytesRead) =>
      error === null ? resolve(bytesRead) : reject(error)
    )
  })

/**
 * The payloads a reader serves, read from the segments `handles` holds open (by the chain's
 * segment number) and checked, the last `recordCacheTuning.records` kept (more while more are
 * in use at once: a slot in use is never taken).
 */
export const recordPayloads = (chain: Chain, handles: ReadonlyMap<number, FileHandle>): RecordPayloads => {
  // Least recently used first (a hit moves its slot to the end). Keyed by segment, then seq.
  const slots = new Map<number, Map<number, Slot>>()
  const order = new Set<Slot>()
  const tables = new Map<number, EntryTable>()
  const tableAt = (s: number): EntryTable => {
    let t = tables.get(s)
    if (t === undefined) {
      t = tableOf(chain.segments[s]!)
      tables.set(s, t)
    }
    return t
  }
  const drop = (slot: Slot) => {
    order.delete(slot)
    const bySeq = slots.get(slot.segment)
    if (bySeq?.get(slot.seq) === slot) bySeq.delete(slot.seq)
  }
  /** A buffer of at least `size` bytes: the least recently used free slot's when the cache is full. */
  const bufferFor = (size: number): Buffer => {
    let reused: Buffer | undefined
    // Free slots go, oldest first, until there is room: the cache grows past its size only
    // while more records than that are in use at once, and shrinks back after.
    for (const old of order) {
      if (order.size < recordCacheTuning.records) break
      if (old.pins > 0 && !ReceiverMutants.recordCacheReusesPinned) continue
      drop(old)
      if (reused === undefined && old.buf.length >= size) reused = old.buf
    }
    return reused ?? Buffer.allocUnsafe(size)
  }
  const load = (s: number, seq: number): Slot => {
    const segment = chain.segments[s]!
    const table = tableAt(s)
    const k = table.indexOf(seq)
    if (k < 0)
      throw new LogCorrupt({
        file: path.join(chain.diskDir, segment.name),
        offset: 0,
        reason: `no record ${seq} listed`
      })
    const size = RECORD_HEADER_BYTES + table.length[k]!
    const slot: Slot = {
      segment: s,
      seq,
      buf: bufferFor(size),
      payload: undefined,
      payloadOffset: table.offset[k]! + RECORD_HEADER_BYTES,
      loading: undefined,
      pins: 0
    }
    slot.loading = pread(handles.get(s)!.fd, slot.buf, size, table.offset[k]!).then((read) => {
      slot.payload = checkedRecord(chain, segment, table, k, slot.buf.subarray(0, read))
      slot.loading = undefined
    })
    // A failed read or check keeps nothing (the reads waiting for it fail with it).
    slot.loading.catch(() => drop(slot))
    let bySeq = slots.get(s)
    if (bySeq === undefined) slots.set(s, (bySeq = new Map()))
    bySeq.set(seq, slot)
    order.add(slot)
    return slot
  }
  const payload = async (
    s: number,
    seq: number,
    fileOffset: number,
    use: (data: Buffer, at: number) => void
  ) => {
    let slot = slots.get(s)?.get(seq)
    if (slot === undefined) slot = load(s, seq)
    else {
      order.delete(slot)
      order.add(slot)
    }
    slot.pins++
    try {
      if (slot.loading !== undefined) await slot.loading
      use(slot.payload!, fileOffset - slot.payloadOffset)
    } finally {
      slot.pins--
    }
  }
  return Object.assign(payload, {
    kept: () => order.size,
    clear: () => {
      slots.clear()
      order.clear()
    }
  })
}

/**
 * A segment's index entries as columns (one typed array per field) instead of one object per
 * record. Opening a recovery point reads every sealed segment's index and checks every
 * `.bix` against it; on a 4 GiB log that is 115 k records, and as objects they cost more in
 * allocation and garbage collection than the checks themselves. `entry(i)` and `toEntries()`
 * give the objects (`IndexEntry`) the rest of the receiver works with.
 */
import type { IndexEntry, Kind } from "./format.js"

export class EntryTable {
  /** Byte of the record in its segment. */
  readonly offset: Float64Array
  readonly seq: Float64Array
  readonly position: Float64Array
  readonly time: Float64Array
  /** Payload length. */
  readonly length: Uint32Array
  readonly epoch: Uint32Array
  readonly crc: Uint32Array
  readonly kind: Uint8Array
  readonly flags: Uint8Array

  private constructor(readonly count: number) {
    // One allocation for the nine columns (each typed array of its own is memory of its own to map).
    const memory = new ArrayBuffer(count * 46)
    this.offset = new Float64Array(memory, 0, count)
    this.seq = new Float64Array(memory, 8 * count, count)
    this.position = new Float64Array(memory, 16 * count, count)
    this.time = new Float64Array(memory, 24 * count, count)
    this.length = new Uint32Array(memory, 32 * count, count)
    this.epoch = new Uint32Array(memory, 36 * count, count)
    this.crc = new Uint32Array(memory, 40 * count, count)
    this.kind = new Uint8Array(memory, 44 * count, count)
    this.flags = new Uint8Array(memory, 45 * count, count)
  }

  /** A table of `count` entries, all zero (the decoder fills it). */
  static allocate(count: number): EntryTable {
    return new EntryTable(count)
  }

  /** A table of `capacity` entries holding the first `count` of `from` (the rest zero). */
  static grownFrom(from: EntryTable | undefined, count: number, capacity: number): EntryTable {
    const t = new EntryTable(capacity)
    if (from === undefined) return t
    t.offset.set(from.offset.subarray(0, count))
    t.seq.set(from.seq.subarray(0, count))
    t.position.set(from.position.subarray(0, count))
    t.time.set(from.time.subarray(0, count))
    t.length.set(from.length.subarray(0, count))
    t.epoch.set(from.epoch.subarray(0, count))
    t.crc.set(from.crc.subarray(0, count))
    t.kind.set(from.kind.subarray(0, count))
    t.flags.set(from.flags.subarray(0, count))
    return t
  }

  static fromEntries(entries: ReadonlyArray<IndexEntry>): EntryTable {
    const t = new EntryTable(entries.length)
    for (let i = 0; i < entries.length; i++) t.set(i, entries[i]!)
    return t
  }

  set(i: number, e: IndexEntry): void {
    this.offset[i] = e.offset
    this.seq[i] = e.seq
    this.position[i] = e.position
    this.time[i] = e.time
    this.length[i] = e.length
    this.epoch[i] = e.epoch
    this.crc[i] = e.crc
    this.kind[i] = e.kind
    this.flags[i] = e.flags
  }

  entry(i: number): IndexEntry {
    return {
      offset: this.offset[i]!,
      seq: this.seq[i]!,
      position: this.position[i]!,
      time: this.time[i]!,
      length: this.length[i]!,
      epoch: this.epoch[i]!,
      kind: this.kind[i]! as Kind,
      flags: this.flags[i]!,
      crc: this.crc[i]!
    }
  }

  toEntries(): Array<IndexEntry> {
    const out = new Array<IndexEntry>(this.count)
    for (let i = 0; i < this.count; i++) out[i] = this.entry(i)
    return out
  }

  /** The entry of record `seq` (seqs ascend), or -1. */
  indexOf(seq: number): number {
    const seqs = this.seq
    // Seqs are consecutive but where a resync skipped some: try the direct place first.
    const guess = seq - (seqs[0] ?? 0)
    if (guess >= 0 && guess < this.count && seqs[guess] === seq) return guess
    let lo = 0
    let hi = this.count - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      const s = seqs[mid]!
      if (s === seq) return mid
      if (s < seq) lo = mid + 1
      else hi = mid - 1
    }
    return -1
  }
}

/**
 * The active segment's entries as the writer commits them: columns that grow by doubling.
 * An object per record kept until the seal (16 k for a segment of 4 KiB records) outlived
 * two scavenges and was then marked by every full collection; columns are one allocation.
 */
export class GrowingEntryTable {
  private table: EntryTable | undefined = undefined
  private n = 0

  get count(): number {
    return this.n
  }

  push(e: IndexEntry): void {
    if (this.table === undefined || this.n === this.table.count)
      this.table = EntryTable.grownFrom(this.table, this.n, Math.max(256, this.n * 2))
    this.table.set(this.n++, e)
  }

  /** The entries as a table of their own (a copy: later pushes are not in it). */
  toTable(): EntryTable {
    return EntryTable.grownFrom(this.table, this.n, this.n)
  }

  /** The entries as objects, made now (a snapshot: later pushes are not in it). */
  toEntries(): Array<IndexEntry> {
    const out = new Array<IndexEntry>(this.n)
    for (let i = 0; i < this.n; i++) out[i] = this.table!.entry(i)
    return out
  }
}

/**
 * The records in flight: every record with `watermark < seq < nextSeq`, in seq order.
 *
 * Records are only appended at `nextSeq` and only leave from the front (cumulative
 * ack) or all at once (link loss), so a persistent queue can share one append-only
 * array between versions: a version owns the slots `[start, end)`; appending where
 * `end` is the array's length pushes in place (older versions never look past their
 * own `end`), and appending from an older version copies first. O(1) amortised.
 */

export type FlightRecord =
  /** A live write; its blocks are `first..last`, `bytes` long. */
  | { readonly kind: "write"; readonly first: number; readonly last: number; readonly bytes: number }
  /** A resync block record. */
  | { readonly kind: "block"; readonly block: number }
  /** A resync-begin or resync-end marker: covers no block. */
  | { readonly kind: "marker" }

export const writeRecord = (first: number, last: number, bytes: number): FlightRecord => ({
  kind: "write",
  first,
  last,
  bytes
})
export const blockRecord = (block: number): FlightRecord => ({ kind: "block", block })
export const markerRecord: FlightRecord = { kind: "marker" }

export class Flight {
  constructor(
    /** Shared, append-only storage. */
    private readonly log: Array<FlightRecord>,
    private readonly start: number,
    private readonly end: number,
    /** Seq of the record at `start`. */
    readonly firstSeq: number,
    /** Sum of `bytes` over live write records in flight (the congestion measure). */
    readonly liveBytes: number,
    /** Number of block records in flight (drain window and the sync rule). */
    readonly blockRecords: number
  ) {}

  get size(): number {
    return this.end - this.start
  }

  /** Seq the next appended record must carry. */
  get nextSeq(): number {
    return this.firstSeq + this.size
  }

  /** The record with sequence number `seq`, if in flight. */
  get(seq: number): FlightRecord | undefined {
    const i = seq - this.firstSeq
    return i >= 0 && i < this.size ? this.log[this.start + i] : undefined
  }

  push(record: FlightRecord): Flight {
    let log = this.log
    let start = this.start
    if (log.length !== this.end) {
      // Another version appended here already: take a private copy.
      log = log.slice(start, this.end)
      start = 0
    }
    log.push(record)
    return new Flight(
      log,
      start,
      start + (this.end - this.start) + 1,
      this.firstSeq,
      record.kind === "write" ? this.liveBytes + record.bytes : this.liveBytes,
      record.kind === "block" ? this.blockRecords + 1 : this.blockRecords
    )
  }

  /** Drops every record with seq <= `seq` (a cumulative ack). */
  ackThrough(seq: number): Flight {
    const n = Math.min(Math.max(seq - this.firstSeq + 1, 0), this.size)
    if (n === 0) return this
    let liveBytes = this.liveBytes
    let blockRecords = this.blockRecords
    for (let i = this.start; i < this.start + n; i++) {
      const r = this.log[i]!
      if (r.kind === "write") liveBytes -= r.bytes
      else if (r.kind === "block") blockRecords--
    }
    let log = this.log
    let start = this.start + n
    let end = this.end
    // Compact once the acked prefix dominates, so the shared array does not grow without bound.
    if (start >= 1024 && start * 2 >= log.length) {
      log = log.slice(start, end)
      end -= start
      start = 0
    }
    return new Flight(log, start, end, this.firstSeq + n, liveBytes, blockRecords)
  }

  /** Visits the records in seq order. */
  forEach(f: (record: FlightRecord, seq: number) => void): void {
    for (let i = this.start; i < this.end; i++) f(this.log[i]!, this.firstSeq + (i - this.start))
  }

  toArray(): Array<FlightRecord> {
    return this.log.slice(this.start, this.end)
  }

  /** No record in flight; the next one will carry `nextSeq`. */
  static empty(nextSeq: number): Flight {
    return new Flight([], 0, 0, nextSeq, 0, 0)
  }

  static fromArray(firstSeq: number, records: ReadonlyArray<FlightRecord>): Flight {
    let flight = Flight.empty(firstSeq)
    for (const r of records) flight = flight.push(r)
    return flight
  }
}

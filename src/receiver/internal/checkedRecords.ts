/**
 * The records a checksum answer hashes (`checksums.ts`), read whole and checked (CRC32C, the
 * seq the live index names, their bounds in the file) before any byte of them is used.
 *
 * Reads go into buffers of one pool, shared by every answer of the process and given back
 * as soon as no run of an answer needs a record they hold: a fresh buffer per read cost more
 * than the hashing (the kernel faults in and zeroes its pages, and every one counts as
 * external memory, which had V8 run a full mark-compact every few MiB read; docs/performance.md,
 * "Session 11"). A run holds the spans its records lie in (`Hold`) from its read ahead to the
 * end of its hashing; a record in two runs is read once while either holds it.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { LogCorrupt } from "./errors.js"
import { preadFully } from "./files.js"
import { parseHeaderFields, parseRecord, RECORD_HEADER_BYTES } from "./format.js"
import type { LiveExtent } from "./liveIndex.js"

/** Records at most this far apart in a segment are read with one span read. */
const SPAN_GAP = 64 << 10
/**
 * A span read is at most this many bytes (unless one record alone is larger): a run's
 * 1 MiB of 64 KiB block records with their headers is one read into one pooled buffer.
 */
export const SPAN_BYTES = (1 << 20) + SPAN_GAP
/** Spans from this size on are read into pooled buffers (each then at least a quarter used). */
export const POOLED_FROM = SPAN_BYTES >> 2
/** Pooled buffers kept while none is in use, at most (the process's, across answers). */
const POOL_KEPT = 8

const free: Array<Buffer> = []
/** Pooled buffers made so far (tests: an answer reuses them rather than making one per read). */
export const spanPool = {
  made: 0,
  get kept() {
    return free.length
  }
}

/** One read's bytes; given back to the pool once no run holds it. */
export class Span {
  refs = 0
  /** The records kept from it (`Records.cache` keys). */
  readonly keys: Array<string> = []
  private constructor(
    readonly buffer: Buffer,
    private readonly pooled: boolean
  ) {}

  /**
   * A span of `bytes`: a pooled buffer from `POOLED_FROM` to `SPAN_BYTES`, else one of its
   * own size (a run of scattered small records holds as many spans as records: a pooled
   * buffer each would hold up to 1 MiB per record).
   */
  static take(bytes: number): Span {
    if (bytes < POOLED_FROM) return new Span(Buffer.allocUnsafe(bytes), false)
    if (bytes > SPAN_BYTES) return new Span(Buffer.allocUnsafeSlow(bytes), false)
    let buffer = free.pop()
    if (buffer === undefined) {
      buffer = Buffer.allocUnsafeSlow(SPAN_BYTES)
      spanPool.made++
    }
    return new Span(buffer, true)
  }

  giveBack(): void {
    if (this.pooled && free.length < POOL_KEPT) free.push(this.buffer)
  }
}

/** The spans a run's records lie in, held from its read ahead to the end of its hashing. */
export type Hold = Set<Span>

export class Records {
  /** Opened once per segment, even when a read ahead and a payload read ask at once. */
  private readonly handles = new Map<string, Promise<fs.FileHandle>>()
  /** Whole, checked payloads, each a view of the span it was read in. */
  private readonly cache = new Map<string, { readonly payload: Buffer; readonly span: Span }>()
  /** Every span not yet given back. */
  private readonly live = new Set<Span>()

  constructor(private readonly diskDir: string) {}

  private handleOf(segment: string): Promise<fs.FileHandle> {
    let handle = this.handles.get(segment)
    if (handle === undefined) {
      handle = fs.open(path.join(this.diskDir, segment), "r")
      this.handles.set(segment, handle)
    }
    return handle
  }

  private hold(hold: Hold, span: Span): void {
    if (hold.has(span)) return
    hold.add(span)
    span.refs++
  }

  private span(bytes: number, hold: Hold): Span {
    const span = Span.take(bytes)
    this.live.add(span)
    this.hold(hold, span)
    return span
  }

  private keep(key: string, payload: Buffer, span: Span): void {
    // Read twice (a record in two runs, read ahead and read alone): the first copy serves.
    if (this.cache.has(key)) return
    this.cache.set(key, { payload, span })
    span.keys.push(key)
  }

  /**
   * Reads the records `extents` lie in with one read per span of a segment (records close
   * together, as a drain or a run of writes leaves them, or one alone), and keeps each whole,
   * checked record's payload for `payload`, held by `hold`. A record the span does not hold
   * whole, or that does not check, is left to `payload`, which reads it alone and names the damage.
   */
  async prefetch(extents: ReadonlyArray<LiveExtent>, hold: Hold): Promise<void> {
    // Records already kept are held first, before any read: a run released meanwhile cannot drop them.
    const bySegment = new Map<string, Array<LiveExtent>>()
    for (const x of extents) {
      const hit = this.cache.get(`${x.segment.name}:${x.record}`)
      if (hit !== undefined) {
        this.hold(hold, hit.span)
        continue
      }
      const list = bySegment.get(x.segment.name)
      if (list === undefined) bySegment.set(x.segment.name, [x])
      else list.push(x)
    }
    for (const [name, list] of bySegment) {
      list.sort((a, b) => a.record - b.record)
      const limit = list[0]!.segment.bytes
      const endOf = (x: LiveExtent) => Math.min(limit, x.fileOffset + (x.end - x.start))
      let i = 0
      while (i < list.length) {
        const start = list[i]!.record
        let end = endOf(list[i]!)
        let j = i + 1
        while (
          j < list.length &&
          list[j]!.record <= end + SPAN_GAP &&
          endOf(list[j]!) - start <= SPAN_BYTES
        ) {
          end = Math.max(end, endOf(list[j]!))
          j++
        }
        if (end > start) {
          const span = this.span(end - start, hold)
          const bytes = span.buffer.subarray(0, end - start)
          await preadFully(await this.handleOf(name), bytes, start)
          for (let k = i; k < j; k++) {
            const x = list[k]!
            const at = x.record - start
            const parsed = parseRecord(bytes, at)
            if (parsed._tag !== "Record" || parsed.header.seq !== x.seq) continue
            this.keep(`${name}:${x.record}`, bytes.subarray(at + RECORD_HEADER_BYTES, at + parsed.size), span)
          }
        }
        i = j
      }
    }
  }

  /** The payload of the record `x` names, held by `hold`. */
  async payload(x: LiveExtent, hold: Hold): Promise<Buffer> {
    const key = `${x.segment.name}:${x.record}`
    const hit = this.cache.get(key)
    if (hit !== undefined) {
      this.hold(hold, hit.span)
      return hit.payload
    }
    const file = path.join(this.diskDir, x.segment.name)
    const damaged = (reason: string) =>
      new LogCorrupt({ file, offset: x.record, reason: `record ${x.seq}: ${reason}` })
    const handle = await this.handleOf(x.segment.name)
    const room = x.segment.bytes - x.record
    if (room < RECORD_HEADER_BYTES) throw damaged("the segment ends inside the record")
    const head = Buffer.allocUnsafe(RECORD_HEADER_BYTES)
    await preadFully(handle, head, x.record)
    const fields = parseHeaderFields(head, 0)
    if (typeof fields === "string") throw damaged(fields)
    if (RECORD_HEADER_BYTES + fields.length > room) throw damaged("the segment ends inside the record")
    const span = this.span(RECORD_HEADER_BYTES + fields.length, hold)
    const whole = span.buffer.subarray(0, RECORD_HEADER_BYTES + fields.length)
    await preadFully(handle, whole, x.record)
    const parsed = parseRecord(whole, 0)
    if (parsed._tag !== "Record") throw damaged(parsed._tag === "Bad" ? parsed.reason : "short")
    if (parsed.header.seq !== x.seq) throw damaged(`the record there is seq ${parsed.header.seq}`)
    const payload = whole.subarray(RECORD_HEADER_BYTES)
    this.keep(key, payload, span)
    return payload
  }

  /** A run is hashed: the spans no other run holds go back to the pool, their records forgotten. */
  release(hold: Hold): void {
    for (const span of hold) if (--span.refs === 0) this.drop(span)
    hold.clear()
  }

  private drop(span: Span): void {
    for (const key of span.keys) if (this.cache.get(key)?.span === span) this.cache.delete(key)
    this.live.delete(span)
    span.giveBack()
  }

  /**
   * Gives every span back and closes every segment opened; never fails (a file that cannot be
   * closed was only read). Called once no read is under way and no payload is used any more.
   */
  close(): Promise<void> {
    for (const span of [...this.live]) this.drop(span)
    this.cache.clear()
    return (async () => {
      for (const h of this.handles.values()) await h.then((handle) => handle.close()).catch(() => undefined)
    })()
  }

  /** A pooled buffer for bytes of the base image, given back by `close` (or `release` of `hold`). */
  scratch(bytes: number, hold: Hold): Buffer {
    return this.span(bytes, hold).buffer.subarray(0, bytes)
  }
}

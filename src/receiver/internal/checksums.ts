/**
 * The receiver's answer to a checksum request (docs/receiver.md, "Checksums"): for each
 * block asked for, the `Wire.blockDigest` of its newest version in the log — read through
 * the live block index (`liveIndex.ts`), every byte checked before it is hashed: a record's
 * payload against the record's CRC32C and the seq the index names, base bytes against their
 * unit's CRC32C. Damage is a `LogCorrupt` naming the file and byte, never a digest.
 *
 * The caller holds the disk's maintenance permit (no fold replaces the base or removes a
 * segment meanwhile) and has let the writer make every record before the request durable.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Data, Effect } from "effect"
import * as Wire from "../../protocol/Wire.js"
import type { Note } from "./chain.js"
import { LogCorrupt, LogIoError } from "./errors.js"
import { preadFully } from "./files.js"
import { parseHeaderFields, parseRecord, RECORD_HEADER_BYTES } from "./format.js"
import type { LiveExtent, LiveIndex, LogView } from "./liveIndex.js"
import { BaseRanges } from "./point.js"

/** The bytes have no checksum to check them by (a format-1 base image): no digest is given. */
export class Unverifiable extends Data.TaggedError("Unverifiable")<{ readonly file: string }> {
  override get message() {
    return `${this.file} is format 1, without data checksums: its bytes cannot be checked before they are hashed (the next retention fold writes format 2)`
  }
}

/** What an answer needs of a disk's log (`LogStore.DiskLog` is one). */
export interface ChecksumLog extends LogView {
  readonly live: LiveIndex
  readonly maintenance: Effect.Semaphore
}

/**
 * Consecutive blocks are read together, up to this many bytes at a time. Reads and runs stay
 * at 1 MiB: a fresh buffer larger than that comes from mmap, each page faulted and zeroed by
 * the kernel on first touch (on the 2-core VM, reading 256 MiB into fresh 16 MiB buffers took
 * 0.7–0.9 s of CPU, into 1 MiB ones 0.04 s).
 */
const RUN_BYTES = 1 << 20
/** Records kept decoded within one answer (a record spanning many requested blocks is read once). */
const CACHE_BYTES = 64 << 20
/** A span read takes in records at most this far apart, and at most this many bytes. */
const SPAN_GAP = 64 << 10
const SPAN_BYTES = 1 << 20

/** Runs of consecutive blocks, at most `RUN_BYTES` each: `[first block, count]`. */
const runsOf = (blocks: ReadonlyArray<number>, blockSize: number): Array<readonly [number, number]> => {
  const most = Math.max(1, Math.floor(RUN_BYTES / blockSize))
  const runs: Array<[number, number]> = []
  for (const b of blocks) {
    const last = runs[runs.length - 1]
    if (last !== undefined && last[0] + last[1] === b && last[1] < most) last[1]++
    else runs.push([b, 1])
  }
  return runs
}

/** Reads records whole, each checked (CRC32C, the seq the index names, its bounds in the file). */
class Records {
  /** Opened once per segment, even when a read ahead and a payload read ask at once. */
  private readonly handles = new Map<string, Promise<fs.FileHandle>>()
  private readonly cache = new Map<string, Buffer>()
  private cached = 0

  constructor(private readonly diskDir: string) {}

  private handleOf(segment: string): Promise<fs.FileHandle> {
    let handle = this.handles.get(segment)
    if (handle === undefined) {
      handle = fs.open(path.join(this.diskDir, segment), "r")
      this.handles.set(segment, handle)
    }
    return handle
  }

  /**
   * Reads the records `extents` lie in with one read per span of a segment (records close
   * together, as a drain or a run of writes leaves them), and keeps each whole, checked
   * record's payload for `payload`. A record the span does not hold whole, or that does
   * not check, is left to `payload`, which reads it alone and names the damage.
   */
  async prefetch(extents: ReadonlyArray<LiveExtent>): Promise<void> {
    const bySegment = new Map<string, Array<LiveExtent>>()
    for (const x of extents) {
      if (this.cache.has(`${x.segment.name}:${x.record}`)) continue
      const list = bySegment.get(x.segment.name)
      if (list === undefined) bySegment.set(x.segment.name, [x])
      else list.push(x)
    }
    for (const [name, list] of bySegment) {
      list.sort((a, b) => a.record - b.record)
      const limit = list[0]!.segment.bytes
      let i = 0
      while (i < list.length) {
        const start = list[i]!.record
        let end = Math.min(limit, list[i]!.fileOffset + (list[i]!.end - list[i]!.start))
        let j = i + 1
        while (
          j < list.length &&
          list[j]!.record <= end + SPAN_GAP &&
          list[j]!.fileOffset + (list[j]!.end - list[j]!.start) - start <= SPAN_BYTES
        ) {
          end = Math.max(end, Math.min(limit, list[j]!.fileOffset + (list[j]!.end - list[j]!.start)))
          j++
        }
        if (j - i > 1) {
          const span = Buffer.allocUnsafe(end - start)
          await preadFully(await this.handleOf(name), span, start)
          for (let k = i; k < j; k++) {
            const x = list[k]!
            const key = `${name}:${x.record}`
            if (this.cache.has(key)) continue
            const at = x.record - start
            const parsed = parseRecord(span, at)
            if (parsed._tag !== "Record" || parsed.header.seq !== x.seq) continue
            this.keep(key, span.subarray(at + RECORD_HEADER_BYTES, at + parsed.size))
          }
        }
        i = j
      }
    }
  }

  private keep(key: string, payload: Buffer): void {
    // Read twice (a record in two runs, read ahead and read alone): counted once.
    if (this.cache.has(key)) return
    while (this.cached + payload.byteLength > CACHE_BYTES && this.cache.size > 0) {
      const [oldest, bytes] = this.cache.entries().next().value!
      this.cache.delete(oldest)
      this.cached -= bytes.byteLength
    }
    if (payload.byteLength <= CACHE_BYTES) {
      this.cache.set(key, payload)
      this.cached += payload.byteLength
    }
  }

  /** The payload of the record `x` names. */
  async payload(x: LiveExtent): Promise<Buffer> {
    const key = `${x.segment.name}:${x.record}`
    const hit = this.cache.get(key)
    if (hit !== undefined) return hit
    const file = path.join(this.diskDir, x.segment.name)
    const damaged = (reason: string) =>
      new LogCorrupt({ file, offset: x.record, reason: `record ${x.seq}: ${reason}` })
    const handle = await this.handleOf(x.segment.name)
    const room = x.segment.bytes - x.record
    if (room < RECORD_HEADER_BYTES) throw damaged("the segment ends inside the record")
    const head = Buffer.alloc(RECORD_HEADER_BYTES)
    await preadFully(handle, head, x.record)
    const fields = parseHeaderFields(head, 0)
    if (typeof fields === "string") throw damaged(fields)
    if (RECORD_HEADER_BYTES + fields.length > room) throw damaged("the segment ends inside the record")
    const whole = Buffer.allocUnsafe(RECORD_HEADER_BYTES + fields.length)
    await preadFully(handle, whole, x.record)
    const parsed = parseRecord(whole, 0)
    if (parsed._tag !== "Record") throw damaged(parsed._tag === "Bad" ? parsed.reason : "short")
    if (parsed.header.seq !== x.seq) throw damaged(`the record there is seq ${parsed.header.seq}`)
    const payload = whole.subarray(RECORD_HEADER_BYTES)
    this.keep(key, payload)
    return payload
  }

  /** Closes every segment opened; never fails (a file that cannot be closed was only read). */
  async close(): Promise<void> {
    this.cache.clear()
    for (const h of this.handles.values()) await h.then((handle) => handle.close()).catch(() => undefined)
  }
}

/**
 * The digests of `blocks` (each `DIGEST_BYTES`, in order) as the log holds them now, and what
 * building the live index noted. The caller holds the maintenance permit.
 */
export const digestsOf = async (
  log: ChecksumLog,
  blocks: ReadonlyArray<number>
): Promise<{ readonly digests: Uint8Array; readonly notes: ReadonlyArray<Note> }> => {
  const notes = await log.live.ensure(log)
  const { blockSize } = log.geometry
  // Every extent taken at once, before any read: what the answer reflects is fixed here.
  const runs = runsOf(blocks, blockSize).map(([first, count]) => {
    const start = first * blockSize
    const end = start + count * blockSize
    return { start, end, extents: log.live.extentsIn(start, end) }
  })
  const baseSeq = log.base.seq
  const records = new Records(log.diskDir)
  let base: BaseRanges | undefined
  const baseBytes = async (start: number, end: number, out: Buffer, at: number) => {
    if (base === undefined) {
      base = await BaseRanges.openAt(log.diskDir, log.geometry, baseSeq)
      if (base === undefined) throw new Error("the base image changed under a checksum answer")
    }
    if (base.base.format !== 2) throw new Unverifiable({ file: base.file })
    await base.read(start, end, out, at)
  }
  // The next run's records are read (in the pool) while this run is hashed. A
  // read ahead that fails is told when its run comes (handled at once, so never unhandled).
  let ahead: Promise<void> | undefined
  const readAhead = (r: number) => {
    if (r >= runs.length) return undefined
    const reading = records.prefetch(runs[r]!.extents)
    reading.catch(() => undefined)
    return reading
  }
  try {
    const digests = new Uint8Array(blocks.length * Wire.DIGEST_BYTES)
    // One run's bytes (`RUN_BYTES` at most), used again by each run once the last is hashed.
    const buffer = Buffer.allocUnsafe(runs.reduce((most, r) => Math.max(most, r.end - r.start), 0))
    let k = 0
    ahead = readAhead(0)
    for (let r = 0; r < runs.length; r++) {
      const run = runs[r]!
      await ahead
      ahead = readAhead(r + 1)
      // Every byte of the run is written below (a record's or the base's), so not zero-filled.
      const bytes = buffer.subarray(0, run.end - run.start)
      let cursor = run.start
      for (const x of run.extents) {
        if (x.start > cursor) await baseBytes(cursor, x.start, bytes, cursor - run.start)
        const payload = await records.payload(x)
        const from = x.fileOffset - x.record - RECORD_HEADER_BYTES
        if (from < 0 || from + (x.end - x.start) > payload.byteLength)
          throw new LogCorrupt({
            file: path.join(log.diskDir, x.segment.name),
            offset: x.record,
            reason: `record ${x.seq}: ${payload.byteLength} bytes hold no bytes ${from}..${from + x.end - x.start}`
          })
        payload.copy(bytes, x.start - run.start, from, from + (x.end - x.start))
        cursor = x.end
      }
      if (cursor < run.end) await baseBytes(cursor, run.end, bytes, cursor - run.start)
      const count = bytes.byteLength / blockSize
      Wire.blockDigestsInto(bytes, blockSize, count, digests, k)
      k += count
    }
    return { digests, notes }
  } finally {
    // A read ahead still running when a run failed: done before the files close.
    await ahead?.catch(() => undefined)
    // Closed behind the answer: a close is a trip through the pool the reply need not wait for
    // (under load, one such trip took 15–60 ms). Its failure changes nothing already read.
    void records.close()
    await (base as BaseRanges | undefined)?.close()
  }
}

/**
 * The answer to `request` on `log`, whose records through `through` are all durable: a
 * `ChecksumReply`, or a `ChecksumRefused` (damage, a format-1 base, an I/O error) — logged,
 * with the file and byte when damage. The connection stays up either way.
 */
export const answer = (log: ChecksumLog, request: Wire.ChecksumRequest, through: number) =>
  log.maintenance
    .withPermits(1)(
      Effect.tryPromise({
        try: () => digestsOf(log, request.blocks),
        catch: (cause) =>
          cause instanceof LogCorrupt || cause instanceof Unverifiable
            ? cause
            : new LogIoError({ op: "read", path: log.diskDir, cause })
      })
    )
    .pipe(
      Effect.tap(({ notes }) =>
        Effect.forEach(notes, (note) =>
          Effect.logWarning(`${log.diskId}: ${note.message}`).pipe(Effect.annotateLogs(note.annotations))
        )
      ),
      Effect.map(({ digests }): Wire.ChecksumReply | Wire.ChecksumRefused => ({
        _tag: "ChecksumReply",
        id: request.id,
        through,
        digests
      })),
      Effect.catchAll((error) => {
        const reason =
          error._tag === "LogCorrupt" ? "damaged" : error._tag === "Unverifiable" ? "unverifiable" : "failed"
        const annotations =
          error._tag === "LogCorrupt" ? { file: error.file, offset: error.offset } : { error: error._tag }
        const refused: Wire.ChecksumRefused = {
          _tag: "ChecksumRefused",
          id: request.id,
          reason,
          detail: error.message
        }
        return Effect.as(
          Effect.logError(`${log.diskId}: checksum request ${request.id} refused: ${error.message}`).pipe(
            Effect.annotateLogs({ reason, blocks: request.blocks.length, ...annotations })
          ),
          refused
        )
      })
    )

/**
 * Writes a recovery point's image through its block index (`restore`): each byte once, from
 * where the point's newest version of it lives. First the base image in disk order (read
 * whole and checked against its checksums, as before), skipping what the log overrides and,
 * into a new file, what is zero (holes stay holes); then the log's surviving extents in file
 * order, segment by segment: the records holding them read in runs (neighbours share a read,
 * a record no later write left a byte of is not read, long stretches of them are skipped),
 * a few reads ahead of the writes, each record checked against its CRC and its index entry
 * before any of it is written. Writes go out several at a time: on a restore of a dense
 * image from a long log, waiting for each read and each write in turn cost more than the
 * I/O itself (bench/mount.ts).
 */
import type * as fs from "node:fs/promises"
import { openBase, walkBase } from "./base.js"
import { entryOf } from "./blockIndex.js"
import { preadFully, pwriteFully } from "./files.js"
import { RECORD_HEADER_BYTES } from "./format.js"
import { ReceiverMutants } from "./mutants.js"
import { checkedPayload, openSegments, type PointExtent, type PointMap, payloadIndex } from "./point.js"

/**
 * How far a restore is, `bytes` of `total` in each phase: `indexing`, the sealed segments'
 * block indexes read and checked, or rebuilt (their segments' bytes; `openPointMap`); then
 * `writing`, the image's bytes, then the log's bytes placed over them.
 */
export interface Progress {
  readonly phase: "indexing" | "writing"
  readonly bytes: number
  readonly total: number
}

const PROGRESS_STEP = 1 << 20
/**
 * How a restore reads and writes; the properties shrink them so reads split at every edge.
 * `writesInFlight`: writes outstanding at once (each waits a round trip through libuv's
 * thread pool). `runGap`: records closer than this in a segment are read in one go (the
 * bytes between read and dropped). `runBytes`: a read covers at most this much (unless one
 * record is larger), its buffer reused. `readsAhead`: reads started ahead of the one being
 * written out.
 */
export const tuning = { writesInFlight: 32, runGap: 64 << 10, runBytes: 4 << 20, readsAhead: 4 }

/**
 * Writes into the image without waiting for each: up to `tuning.writesInFlight` at once (into the
 * page cache, each at its own place: a point's pieces never overlap, so order does not
 * matter). `done` runs once the write is over (its bytes may then be reused); the first
 * failure is thrown by the next `put` or by `drain`.
 */
class Writes {
  private readonly pending = new Set<Promise<void>>()
  private failed: { readonly cause: unknown } | undefined
  constructor(private readonly image: fs.FileHandle) {}

  async put(bytes: Uint8Array, at: number, done?: () => void): Promise<void> {
    while (this.pending.size >= tuning.writesInFlight) await Promise.race(this.pending)
    if (this.failed !== undefined) throw this.failed.cause
    const write: Promise<void> = pwriteFully(this.image, bytes, at).then(
      () => {
        this.pending.delete(write)
        done?.()
      },
      (cause: unknown) => {
        this.failed ??= { cause }
        this.pending.delete(write)
      }
    )
    this.pending.add(write)
  }

  async drain(): Promise<void> {
    await Promise.all(this.pending)
    if (this.failed !== undefined) throw this.failed.cause
  }
}

/** A record of a segment the point keeps bytes of, and those bytes' extents (file order). */
interface Needed {
  readonly k: number
  readonly extents: Array<PointExtent>
}

/** One read: bytes `[start, end)` of segment `segment`, holding the records `records` whole. */
interface Run {
  readonly segment: number
  readonly start: number
  readonly end: number
  readonly records: ReadonlyArray<Needed>
}

/**
 * The reads that fetch every record the point keeps bytes of, segment by segment in file
 * order: neighbours closer than `tuning.runGap` share a read of at most `tuning.runBytes`. A record no
 * later write left a byte of is not read; long stretches of them are skipped.
 */
const planReads = (map: PointMap): Array<Run> => {
  const bySegment = new Map<number, Array<PointExtent>>()
  for (const x of map.extents) {
    const list = bySegment.get(x.segment)
    if (list === undefined) bySegment.set(x.segment, [x])
    else list.push(x)
  }
  const runs: Array<Run> = []
  for (const [s, list] of [...bySegment].sort((a, b) => a[0] - b[0])) {
    const segment = map.chain.segments[s]!
    const entries = segment.entries ?? []
    // File order is record order: a record's extents come together.
    list.sort((a, b) => a.fileOffset - b.fileOffset)
    let records: Array<Needed> = []
    let start = 0
    let end = 0
    for (const x of list) {
      const last = records.at(-1)
      if (last !== undefined && entries[last.k]!.seq === x.seq) {
        last.extents.push(x)
        continue
      }
      const k = entryOf(entries, x.seq)
      const entry = entries[k]!
      const recordEnd = Math.min(segment.bytes, entry.offset + RECORD_HEADER_BYTES + entry.length)
      if (records.length > 0 && (entry.offset - end > tuning.runGap || recordEnd - start > tuning.runBytes)) {
        runs.push({ segment: s, start, end, records })
        records = []
      }
      if (records.length === 0) start = entry.offset
      records.push({ k, extents: [x] })
      end = recordEnd
    }
    if (records.length > 0) runs.push({ segment: s, start, end, records })
  }
  return runs
}

/**
 * Buffers for reads, handed back once nothing refers to their bytes any more (the run
 * written out and every write from it over): a restore reads gigabytes, and fresh buffers
 * for each would keep the garbage collector busy walking the point's map.
 */
class BufferPool {
  private readonly free: Array<Buffer> = []
  private readonly size = tuning.runBytes
  take(bytes: number): Buffer {
    if (bytes > this.size) return Buffer.allocUnsafeSlow(bytes)
    return (this.free.pop() ?? Buffer.allocUnsafeSlow(this.size)).subarray(0, bytes)
  }
  give(buf: Buffer): void {
    if (buf.buffer.byteLength === this.size && buf.byteOffset === 0)
      this.free.push(Buffer.from(buf.buffer, 0, this.size))
  }
}

/**
 * Writes the point `map` describes into `image` (a new file of the disk's size, all holes, or
 * a device written in full). `false` when a fold removed a file first (read the chain again).
 */
export const writePoint = async (
  map: PointMap,
  image: fs.FileHandle,
  device: boolean,
  onProgress?: (progress: Progress) => void
): Promise<boolean> => {
  const { chain, extents } = map
  const geometry = { blockSize: chain.meta.blockSize, blockCount: chain.meta.blockCount }
  const diskBytes = geometry.blockSize * geometry.blockCount
  let logBytes = 0
  for (const x of extents) logBytes += x.end - x.start
  const total = diskBytes + logBytes
  let done = 0
  let reported = 0
  const report = (force: boolean) => {
    if (onProgress !== undefined && (force || done - reported >= PROGRESS_STEP)) {
      reported = done
      onProgress({ phase: "writing", bytes: done, total })
    }
  }
  report(true)
  // The open handles keep this base and these segments even if a fold replaces them now.
  const base = await openBase(chain.diskDir, geometry)
  const handles = await (async () => {
    try {
      return base.base.seq === chain.base.seq ? await openSegments(map) : undefined
    } catch (e) {
      await base.handle.close()
      throw e
    }
  })()
  if (handles === undefined) {
    await base.handle.close()
    return false
  }
  const writes = new Writes(image)
  const runs = planReads(map)
  const pool = new BufferPool()
  const reads: Array<Promise<Buffer> | undefined> = []
  let started = 0
  const startRead = () => {
    const run = runs[started]!
    const buf = pool.take(run.end - run.start)
    const read = preadFully(handles.get(run.segment)!, buf, run.start).then(() => buf)
    // Failures are seen when the run's turn comes; one never waited for is no unhandled rejection.
    read.catch(() => undefined)
    reads[started++] = read
  }
  try {
    let i = 0
    await walkBase(base.handle, base.file, base.base, geometry, {
      onChunk: async (at, data, zero) => {
        const end = at + data.length
        const write = device || !zero || ReceiverMutants.restoreFillsHoles
        let cursor = at
        while (cursor < end) {
          while (i < extents.length && extents[i]!.end <= cursor) i++
          const x = extents[i]
          if (x !== undefined && x.start <= cursor && !ReceiverMutants.restoreWritesOverriddenBase) {
            cursor = Math.min(end, x.end)
            continue
          }
          const gapEnd =
            x === undefined ? end : ReceiverMutants.restoreWritesOverriddenBase ? end : Math.min(end, x.start)
          if (write) await writes.put(data.subarray(cursor - at, gapEnd - at), cursor)
          cursor = gapEnd
        }
        // walkBase reads the next chunk into the same buffer.
        await writes.drain()
        done += data.length
        report(false)
      }
    })
    for (let r = 0; r < runs.length; r++) {
      while (started < runs.length && started <= r + tuning.readsAhead) startRead()
      const run = runs[r]!
      const buf = await reads[r]!
      reads[r] = undefined
      const segment = chain.segments[run.segment]!
      // The buffer goes back to the pool once the run is placed and its last write is over.
      let holds = 1
      const release = () => {
        if (--holds === 0) pool.give(buf)
      }
      for (const { k, extents: pieces } of run.records) {
        const entry = segment.entries![k]!
        const from = entry.offset - run.start
        const size = Math.min(RECORD_HEADER_BYTES + entry.length, run.end - entry.offset)
        const payload = checkedPayload(chain, segment, k, buf.subarray(from, from + size))
        for (const x of pieces) {
          const at = payloadIndex(segment, x)
          holds++
          await writes.put(payload.subarray(at, at + (x.end - x.start)), x.start, release)
          done += x.end - x.start
          report(false)
        }
      }
      release()
    }
    await writes.drain()
    report(true)
    return true
  } finally {
    await writes.drain().catch(() => undefined)
    for (const read of reads) await read?.catch(() => undefined)
    for (const h of handles.values()) await h.close()
    await base.handle.close()
  }
}

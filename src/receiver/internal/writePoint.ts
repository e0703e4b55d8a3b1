/**
 * Writes a recovery point's image through its block index (`restore`): each byte once, from
 * where the point's newest version of it lives. First the base image's bytes no extent
 * covers (only the units holding them are read, each checked against its checksum; into a
 * new file, zero units are skipped: holes stay holes), then the log's surviving extents in
 * file order, segment by segment: the records holding them read in runs (neighbours share a
 * read, a record no later write left a byte of is not read, long stretches of them are
 * skipped), each record checked against its CRC and its index entry before any of it is
 * written. The log's reads are made by a few worker threads, each reading, checking and
 * writing whole reads of the plan with synchronous calls (`restoreThreads.ts`); the base's
 * (and, where no thread can be started, the log's) on the main thread: reads a few ahead,
 * bypassing the page cache where they can (`directReads.ts`), writes in batches made by a
 * worker thread (`imageWriter.ts`). Where the time goes: docs/receiver.md, "Restore on the
 * index".
 */
import type * as fs from "node:fs/promises"
import * as path from "node:path"
import { crc32c } from "../../internal/crc32c.js"
import { type Base, baseLayout, openBase, tuning as baseTuning, zeroCrc } from "./base.js"
import { ALIGN, BufferPool, ReadFile } from "./directReads.js"
import { LogCorrupt } from "./errors.js"
import { isEnoent, preadFully } from "./files.js"
import { HandleWriter, type ImageWriter, imageWrites, WorkerWriter } from "./imageWriter.js"
import { RECORD_HEADER_BYTES } from "./format.js"
import { ReceiverMutants } from "./mutants.js"
import type { PointMap } from "./point.js"
import { checkedRecord } from "./recordCache.js"
import { bufferFor, planBase, planLog, type Run, tuning } from "./restorePlan.js"
import {
  BootedThreads,
  type Refused,
  type RestoreThreads,
  type ThreadFile,
  type ThreadRun
} from "./restoreThreads.js"

/**
 * How far a restore is, `bytes` of `total` in each phase: `indexing`, the sealed segments'
 * block indexes read and checked, or rebuilt (their segments' bytes; `openPointMap`); then
 * `writing`, the image's bytes, each counted once where it is placed (from the base, then
 * from the log); then `syncing`, the image written back to the disk (0 of the image's bytes
 * at its start, all at its end: the page cache does not say how far it is).
 */
export interface Progress {
  readonly phase: "indexing" | "writing" | "syncing"
  readonly bytes: number
  readonly total: number
}

const PROGRESS_STEP = 1 << 20
/** Base bytes to read beside the threads above which the base's writes get a thread of their own. */
const SMALL_BASE = 64 << 20
/** How often the threads' progress is looked at (ms). */
const SAMPLE_MS = 20

/** `CDP_SYNC_RESTORE_THREADS` (0–16), else 3. */
function threadsOf(text: string | undefined): number {
  const n = Number(text)
  return text !== undefined && text !== "" && Number.isInteger(n) && n >= 0 && n <= 16 ? n : 3
}

/** How a restore reads and writes (`restorePlan.ts`; the properties shrink it). */
export { tuning }

/**
 * Worker threads reading, checking and writing the log's part (`restoreThreads.ts`; 0: the
 * main thread does, as the base's). `CDP_SYNC_RESTORE_THREADS` sets it (the bench compares
 * counts).
 */
export const threadTuning = { threads: threadsOf(process.env.CDP_SYNC_RESTORE_THREADS) }

/** The threads for a restore's log (`threadTuning.threads`), started ahead of its plan; `undefined`: none. */
export const bootThreads = (): BootedThreads | undefined =>
  threadTuning.threads > 0 ? BootedThreads.boot(threadTuning.threads) : undefined

/** The base's checksum table, checked against the trailer; `undefined` for format 1 (none). */
const readTable = async (
  handle: fs.FileHandle,
  file: string,
  base: Base,
  diskBytes: number
): Promise<Buffer | undefined> => {
  if (base.format !== 2) return undefined
  const layout = baseLayout(diskBytes, base.unitBytes)
  const table = Buffer.allocUnsafe(layout.tableBytes)
  await preadFully(handle, table, layout.tableOffset)
  if (crc32c(table) !== base.tableCrc)
    throw new LogCorrupt({
      file,
      offset: layout.tableOffset,
      reason: `the checksum table (${layout.units} entries) does not match its CRC32C in the trailer`
    })
  return table
}

/** Opens the segments the runs read; `undefined` when one is gone or replaced (a fold). */
const openSegments = async (
  map: PointMap,
  runs: ReadonlyArray<Run>
): Promise<Map<number, ReadFile> | undefined> => {
  const files = new Map<number, ReadFile>()
  const fail = async () => {
    for (const f of files.values()) await f.close()
    return undefined
  }
  for (const run of runs) {
    if (run._tag !== "Log" || files.has(run.segment)) continue
    const name = path.join(map.chain.diskDir, map.chain.segments[run.segment]!.name)
    const file = await ReadFile.open(name, tuning.direct).catch(async (e: unknown) => {
      await fail()
      if (isEnoent(e)) return undefined
      throw e
    })
    if (file === undefined) return fail()
    files.set(run.segment, file)
  }
  return files
}

/** The threads writing the log's part (`logRuns`), given their plan. */
const startThreads = (
  booted: BootedThreads,
  map: PointMap,
  logRuns: ReadonlyArray<Run>,
  segments: ReadonlyMap<number, ReadFile>,
  image: fs.FileHandle
): RestoreThreads | undefined => {
  const files: Array<ThreadFile> = []
  const fileOf = new Map<number, number>()
  const runs: Array<ThreadRun> = []
  let largest = 0
  for (const run of logRuns) {
    if (run._tag !== "Log") continue
    let file = fileOf.get(run.segment)
    if (file === undefined) {
      const f = segments.get(run.segment)!
      file = files.push({ fd: f.handle.fd, direct: f.directFd }) - 1
      fileOf.set(run.segment, file)
    }
    runs.push({ ...run, file })
    largest = Math.max(largest, bufferFor(run.end - run.start))
  }
  return booted.start({
    runs,
    extents: map.table,
    files,
    image: image.fd,
    bufferBytes: largest + 2 * ALIGN,
    logWrites: imageWrites.observe !== undefined
  })
}

/**
 * The error for a record a thread refused: `checkedRecord`'s on the record read again (the
 * error a restore without threads throws), or the thread's reason at the record.
 */
const refusal = async (
  map: PointMap,
  logRuns: ReadonlyArray<Run>,
  segments: ReadonlyMap<number, ReadFile>,
  refused: Refused
): Promise<unknown> => {
  const run = logRuns[refused.run]!
  if (run._tag !== "Log") return new Error("a restore thread refused a read of the base")
  const { k } = run.records[refused.record]!
  const segment = map.chain.segments[run.segment]!
  const t = run.table
  const offset = t.offset[k]!
  const bytes = Buffer.alloc(
    Math.max(0, Math.min(RECORD_HEADER_BYTES + t.length[k]!, segment.bytes - offset))
  )
  const handle = segments.get(run.segment)!.handle
  let got = 0
  for (let n = 1; got < bytes.length && n > 0; got += n)
    n = (await handle.read(bytes, got, bytes.length - got, offset + got)).bytesRead
  try {
    checkedRecord(map.chain, segment, t, k, bytes.subarray(0, got))
  } catch (e) {
    return e
  }
  return new LogCorrupt({
    file: path.join(map.chain.diskDir, segment.name),
    offset,
    reason: `record ${t.seq[k]}: ${refused.reason}`
  })
}

/**
 * Writes the point `map` describes into `image` (a new file of the disk's size, all holes, or
 * a device written in full). `false` when a fold removed a file first (read the chain again).
 * `booted`: the threads for the log's part, started ahead (`bootThreads`); ended here.
 */
export const writePoint = async (
  map: PointMap,
  image: fs.FileHandle,
  device: boolean,
  onProgress?: (progress: Progress) => void,
  booted: BootedThreads | undefined = bootThreads()
): Promise<boolean> => {
  const { chain } = map
  const pt = map.table
  const geometry = { blockSize: chain.meta.blockSize, blockCount: chain.meta.blockCount }
  const diskBytes = geometry.blockSize * geometry.blockCount
  const total = diskBytes
  let done = 0
  let flushedAt = 0
  let flushing: Promise<void> | undefined
  let flushFailed: { readonly cause: unknown } | undefined
  let reported = 0
  let threads: RestoreThreads | undefined
  let sampler: ReturnType<typeof setInterval> | undefined
  /** Bytes placed: by the main thread (`done`) and by the threads. */
  const placed = () => done + (threads?.placed ?? 0)
  const report = (force: boolean) => {
    const now = placed()
    if (onProgress !== undefined && (force || now - reported >= PROGRESS_STEP)) {
      reported = now
      onProgress({ phase: "writing", bytes: now, total })
    }
  }
  // The page cache starts writing the image back now, not all of it at the final fsync.
  const flushSome = () => {
    const now = placed()
    if (tuning.flushBytes > 0 && now - flushedAt >= tuning.flushBytes && flushing === undefined) {
      flushedAt = now
      flushing = image.datasync().then(
        () => {
          flushing = undefined
        },
        (cause: unknown) => {
          flushFailed ??= { cause }
          flushing = undefined
        }
      )
    }
  }
  report(true)
  // The open handles keep this base and these segments even if a fold replaces them now.
  const opened = await openBase(chain.diskDir, geometry)
  const { base, file: baseFile } = opened
  const closing: Array<{ close(): Promise<void> }> = [opened.handle]
  let writer: ImageWriter | undefined
  const reads: Array<Promise<{ readonly buf: Buffer; readonly bytes: Buffer }> | undefined> = []
  try {
    if (base.seq !== chain.base.seq) return false
    const baseRead = await ReadFile.beside(opened.handle, baseFile, tuning.direct)
    if (baseRead === undefined) return false
    closing[0] = baseRead
    const table = await readTable(opened.handle, baseFile, base, diskBytes)
    const unit = base.format === 2 ? base.unitBytes : baseTuning.unitBytes
    const logRuns = planLog(map)
    const segments = await openSegments(map, logRuns)
    if (segments === undefined) return false
    closing.push(...segments.values())
    const baseRuns = planBase(pt, diskBytes, unit)
    if (booted !== undefined && logRuns.length > 0)
      threads = startThreads(booted, map, logRuns, segments, image)
    const runs = threads === undefined ? [...baseRuns, ...logRuns] : baseRuns
    if (threads !== undefined)
      sampler = setInterval(() => {
        report(false)
        flushSome()
      }, SAMPLE_MS)
    // A read's ends are rounded out to ALIGN; each read ahead, the run placed and the runs
    // whose writes are out hold a buffer (no larger than the largest run needs).
    let largest = 0
    for (const run of runs) largest = Math.max(largest, bufferFor(run.end - run.start))
    const pool = new BufferPool(largest + 2 * ALIGN, tuning.readsAhead + 8, tuning.direct)
    // A thread of its own for the writes when they are many: starting one costs 0.1–0.2 s of CPU
    // here, more than the handle's round trips for the base's few writes beside the threads.
    let baseBytes = 0
    if (threads !== undefined) for (const run of baseRuns) baseBytes += run.end - run.start
    const own = tuning.worker && (threads === undefined || baseBytes > SMALL_BASE)
    const out: ImageWriter = (own ? WorkerWriter.start(image) : undefined) ?? new HandleWriter(image)
    writer = out
    closing.push(out)
    let started = 0
    const startRead = async () => {
      const run = runs[started]!
      // A record larger than the pool's buffers is read into one of its own.
      const pooled = run.end - run.start <= pool.size - 2 * ALIGN
      // Buffers come back as the batches holding their writes end: send the one being filled.
      if (pooled && pool.empty) await out.send(tuning.writesInFlight)
      const buf = pooled ? await pool.take() : BufferPool.outside(run.end - run.start)
      const file = run._tag === "Base" ? baseRead : segments.get(run.segment)!
      const read = file.read(run.start, run.end, buf, pooled && pool.aligned).then((bytes) => ({
        buf: pooled ? buf : Buffer.alloc(0),
        bytes
      }))
      // Failures are seen when the run's turn comes; one never waited for is no unhandled rejection.
      read.catch(() => undefined)
      reads[started++] = read
    }
    // The base's units in order: which was checked last, and whether it is all zeros.
    let checkedUnit = -1
    let zeroUnit = false
    /** Checks unit `u` of the base, in `bytes` (the disk's bytes from `runStart`). */
    const checkUnit = (bytes: Buffer, runStart: number, u: number) => {
      const from = u * unit
      const data = bytes.subarray(from - runStart, Math.min(diskBytes, from + unit) - runStart)
      zeroUnit = data.equals(zerosOf(data.length))
      if (table === undefined || (ReceiverMutants.restoreChecksFirstUnitOnly && from > runStart)) return
      const crc = zeroUnit ? zeroCrc(data.length) : crc32c(data)
      if (crc !== table.readUInt32LE(u * 4))
        throw new LogCorrupt({
          file: baseFile,
          offset: from,
          reason: `image bytes ${from}..${from + data.length - 1} do not match their CRC32C (checksum table entry at byte ${diskBytes + u * 4})`
        })
    }
    for (let r = 0; r < runs.length; r++) {
      while (started < runs.length && started <= r + tuning.readsAhead) await startRead()
      const run = runs[r]!
      const { buf, bytes } = await reads[r]!
      reads[r] = undefined
      if (run._tag === "Base") {
        if (bytes.length < run.end - run.start)
          throw new LogCorrupt({
            file: baseFile,
            offset: run.start + bytes.length,
            reason: "the file ends inside the image"
          })
        // Adjacent pieces to write go out as one: bytes [from, to) of the disk.
        let from = 0
        let to = 0
        const put = () => {
          if (to > from) out.put(bytes.subarray(from - run.start, to - run.start), from)
          from = to = 0
        }
        for (const piece of run.pieces) {
          const u = Math.floor(piece.start / unit)
          if (u !== checkedUnit) {
            checkUnit(bytes, run.start, u)
            checkedUnit = u
          }
          if (device || !zeroUnit || ReceiverMutants.restoreFillsHoles) {
            if (to !== piece.start) {
              put()
              from = piece.start
            }
            to = piece.end
          } else put()
          done += piece.end - piece.start
        }
        put()
      } else {
        const segment = chain.segments[run.segment]!
        const t = run.table
        for (const { k, from: first, to } of run.records) {
          const from = t.offset[k]! - run.start
          const payload = checkedRecord(
            chain,
            segment,
            t,
            k,
            bytes.subarray(from, from + RECORD_HEADER_BYTES + t.length[k]!)
          )
          const payloadStart = t.offset[k]! + RECORD_HEADER_BYTES
          for (let o = first; o < to; o++) {
            const x = run.order[o]!
            const at = pt.fileOffset[x]! - payloadStart
            const length = pt.end[x]! - pt.start[x]!
            out.put(payload.subarray(at, at + length), pt.start[x]!)
            done += length
          }
        }
      }
      // The buffer goes back to the pool once the run's writes are over.
      if (buf.length > 0) out.after(() => pool.give(buf))
      if (out.batched >= tuning.batchBytes) await out.send(tuning.writesInFlight)
      flushSome()
      report(false)
    }
    await out.drain()
    if (threads !== undefined) {
      const { refused, writes } = await threads.done
      if (refused !== undefined) throw await refusal(map, logRuns, segments, refused)
      for (let i = 0; i < writes.length; i += 2) imageWrites.observe?.(writes[i]!, writes[i + 1]!)
    }
    await flushing
    if (flushFailed !== undefined) throw flushFailed.cause
    report(true)
    // With no early flush most of the image is still in the page cache: writing it back is
    // a phase of its own, not a bar standing at 100 % (the caller's fsync then has little left).
    onProgress?.({ phase: "syncing", bytes: 0, total })
    await image.datasync()
    onProgress?.({ phase: "syncing", bytes: total, total })
    return true
  } finally {
    if (sampler !== undefined) clearInterval(sampler)
    threads?.stop()
    await threads?.close()
    if (threads === undefined) await booted?.close()
    await writer?.drain().catch(() => undefined)
    await flushing
    for (const read of reads) await read?.catch(() => undefined)
    for (const c of closing) await c.close()
  }
}

let zeroChunk = Buffer.alloc(0)
const zerosOf = (length: number): Buffer => {
  if (zeroChunk.length < length) zeroChunk = Buffer.alloc(length)
  return zeroChunk.subarray(0, length)
}

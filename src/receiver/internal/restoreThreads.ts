/**
 * The log's part of a restore made by a few worker threads (`writePoint`'s `tuning.threads`),
 * each doing the whole loop itself with synchronous calls: take the next read of the plan
 * (an `Atomics` counter, so the threads' reads stay next to each other in file order), `pread`
 * it (`O_DIRECT` where the file allows it, into the thread's own page-aligned buffer), check
 * every record it holds against its CRC32C and its index entry (the checks `checkedRecord`
 * makes), then `pwrite` the record's surviving extents into the image. No message per read or
 * write: on this VM waking another thread cost 0.15–0.3 ms (docs/performance.md, "Session 12:
 * restore"), so a thread reports once, at its end (or at the first record it refuses), and its
 * progress goes through a shared counter the main thread samples.
 *
 * A record a thread refuses is checked again on the main thread by `checkedRecord`, which
 * throws the typed error a restore without threads throws (the same file, offset and reason);
 * the thread's check is `checkedRecord`'s, the one function `recordRefusal` (recordCheck.ts)
 * whose source the thread's code holds, so it refuses nothing that one takes (and should it,
 * its reason is raised as a `LogCorrupt` at the record). When a thread refuses the record of
 * read `r`, reads after `r` are not started; those before it are finished, so the damage
 * reported is the first in the plan's order, as without threads.
 *
 * The worker's code is evaluated from a string (as `imageWriter.ts`'s is), so it is found from
 * the library's modules and from the command line's bundle alike; it loads the CRC32C addon
 * from the path this module resolves.
 */
import { createRequire } from "node:module"
import { Worker } from "node:worker_threads"
import { ALIGN } from "./directReads.js"
import type { EntryTable } from "./entryTable.js"
import { RECORD_HEADER_BYTES } from "./format.js"
import { ReceiverMutants } from "./mutants.js"
import { recordRefusal } from "./recordCheck.js"

/** What the threads' plan holds of a read: the file (index into `files`), its bytes, its records. */
export interface ThreadRun {
  readonly file: number
  readonly start: number
  readonly end: number
  readonly table: EntryTable
  /** The records the read holds whole (entries of `table`), each with its extents' range in `order`. */
  readonly records: ReadonlyArray<{ readonly k: number; readonly from: number; readonly to: number }>
  readonly order: Uint32Array
}

/** The point's extents (columns of its table), for the plan. */
export interface ExtentColumns {
  readonly start: ArrayLike<number>
  readonly end: ArrayLike<number>
  readonly fileOffset: ArrayLike<number>
}

/** A file the threads read: its descriptor, and one without the page cache (-1: none). */
export interface ThreadFile {
  readonly fd: number
  readonly direct: number
}

/** How many restores the threads made (tests see that the log went through them). */
export const threadRestores = { started: 0 }

/** A record a thread refused: which read of the plan, which of its records, and why. */
export interface Refused {
  readonly run: number
  readonly record: number
  readonly reason: string
}

/** Fields of a record in the plan, after the read's four (file, start, end, record count). */
const RECORD_FIELDS = 10

/**
 * The plan as one shared `Float64Array` (u64 fields are safe integers): per read `file, start,
 * end, records`, then per record `offset, length, seq, kind, flags, epoch, position, time, crc,
 * extents`, then per extent `payload offset, length, image offset`; and where each read begins.
 */
export const encodePlan = (
  runs: ReadonlyArray<ThreadRun>,
  extents: ExtentColumns
): { readonly plan: Float64Array; readonly at: Float64Array } => {
  let size = 0
  for (const run of runs) {
    size += 4
    for (const r of run.records) size += RECORD_FIELDS + 3 * (r.to - r.from)
  }
  const plan = new Float64Array(new SharedArrayBuffer(Math.max(8, size * 8)))
  const at = new Float64Array(new SharedArrayBuffer(Math.max(8, runs.length * 8)))
  let p = 0
  for (let i = 0; i < runs.length; i++) {
    const run = runs[i]!
    const t = run.table
    at[i] = p
    plan[p++] = run.file
    plan[p++] = run.start
    plan[p++] = run.end
    plan[p++] = run.records.length
    for (const { k, from, to } of run.records) {
      plan[p++] = t.offset[k]!
      plan[p++] = t.length[k]!
      plan[p++] = t.seq[k]!
      plan[p++] = t.kind[k]!
      plan[p++] = t.flags[k]!
      plan[p++] = t.epoch[k]!
      plan[p++] = t.position[k]!
      plan[p++] = t.time[k]!
      plan[p++] = t.crc[k]!
      plan[p++] = to - from
      const payloadStart = t.offset[k]! + RECORD_HEADER_BYTES
      for (let o = from; o < to; o++) {
        const x = run.order[o]!
        plan[p++] = extents.fileOffset[x]! - payloadStart
        plan[p++] = extents.end[x]! - extents.start[x]!
        plan[p++] = extents.start[x]!
      }
    }
  }
  return { plan, at }
}

/**
 * The threads' record check, as their code holds it: `recordRefusal`'s own source, and
 * `check`, which gives it the plan's entry at `p` (the record's offset is the entry's by
 * construction: the read is placed there): a reason, or `undefined` for a record whose bytes
 * may be written. Evaluated with `crc32c` (the addon's), `k` (the threads' `workerData`,
 * `threadData`) and `plan` in scope, in the threads and in the tests alike.
 */
export const checkSource = `
const recordRefusal = ${recordRefusal.toString()}
const check = (bytes, o, p) => recordRefusal(crc32c, bytes, o, plan[p + 1], plan[p + 2], plan[p + 3], plan[p + 4],
  k.checkSkipsEpoch && bytes.length - o >= 12 ? bytes.readUInt32LE(o + 8) : plan[p + 5], plan[p + 6], plan[p + 7], plan[p + 8])
`

/** The threads' `workerData` (`crc`: where the CRC32C addon is). */
export const threadData = (crc: string) => ({
  crc,
  align: ALIGN,
  header: RECORD_HEADER_BYTES,
  checkSkipsEpoch: ReceiverMutants.restoreThreadCheckSkipsEpoch
})

/** The threads' code. */
const WORKER = `
const { parentPort, workerData: k } = require("node:worker_threads")
const { readSync, writeSync } = require("node:fs")
const { crc32c } = require(k.crc)
const ALIGN = k.align, HEADER = k.header
let w, plan, at, ctl, placed, files
// Started before the plan is made (a thread's start costs 0.1-0.2 s of CPU here); the plan
// is its one message. Kept alive until the main thread ends it (its reply is never lost to an exit).
parentPort.on("message", (m) => {
  if (w !== undefined) return
  w = m
  plan = w.plan; at = w.at; ctl = new Int32Array(w.control); placed = new BigInt64Array(w.placed)
  files = w.files.map((f) => ({ fd: f.fd, direct: f.direct }))
  run()
})
${checkSource}
const readUntil = (fd, buf, length, position, direct) => {
  let done = 0
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done)
    if (n === 0) break
    done += n
    if (direct && done % ALIGN !== 0) break
  }
  return done
}
const writeAll = (bytes, from, length, pos) => {
  while (length > 0) {
    const n = writeSync(w.image, bytes, from, length, pos)
    from += n; length -= n; pos += n
  }
}
let own, aligned
const writes = []
const write = (bytes, from, length, pos) => {
  writeAll(bytes, from, length, pos)
  if (w.logWrites) writes.push(pos, length)
}
/** The bytes of read r (a view of the thread's buffer, or of one of its own for a larger read). */
const read = (file, start, end) => {
  const from = Math.floor(start / ALIGN) * ALIGN, to = Math.ceil(end / ALIGN) * ALIGN
  if (file.direct >= 0 && aligned && to - from <= own.length) {
    try {
      const got = readUntil(file.direct, own, to - from, from, true)
      return own.subarray(start - from, Math.max(start - from, Math.min(end - from, got)))
    } catch (e) {
      if (!e || e.code !== "EINVAL") throw e
      file.direct = -1
    }
  }
  const into = end - start <= own.length ? own : Buffer.allocUnsafe(end - start)
  return into.subarray(0, readUntil(file.fd, into, end - start, start, false))
}
const refuse = (r) => {
  for (;;) {
    const stop = Atomics.load(ctl, 1)
    if (stop <= r || Atomics.compareExchange(ctl, 1, stop, r) === stop) return
  }
}
const run = () => {
try {
  try {
    const pages = Math.ceil(w.bufferBytes / 65536)
    own = Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer, 0, w.bufferBytes)
  } catch {
    own = undefined
  }
  aligned = own !== undefined
  if (own === undefined) own = Buffer.allocUnsafe(w.bufferBytes)
  let refused
  for (;;) {
    const r = Atomics.add(ctl, 0, 1)
    if (r >= at.length || r >= Atomics.load(ctl, 1)) break
    let p = at[r]
    const start = plan[p + 1], count = plan[p + 3]
    const bytes = read(files[plan[p]], start, plan[p + 2])
    p += 4
    let bytesPlaced = 0
    for (let i = 0; i < count && refused === undefined; i++) {
      const o = plan[p] - start, extents = plan[p + 9], payload = o + HEADER
      if (w.writesBeforeCheck) for (let e = 0; e < extents; e++) {
        const x = p + 10 + 3 * e
        if (payload + plan[x] + plan[x + 1] <= bytes.length) write(bytes, payload + plan[x], plan[x + 1], plan[x + 2])
      }
      const reason = check(bytes, o, p)
      if (reason !== undefined) refused = { run: r, record: i, reason }
      else for (let e = 0; e < extents; e++) {
        const x = p + 10 + 3 * e
        if (!w.writesBeforeCheck) write(bytes, payload + plan[x], plan[x + 1], plan[x + 2])
        bytesPlaced += plan[x + 1]
      }
      p += 10 + 3 * extents
    }
    Atomics.add(placed, 0, BigInt(bytesPlaced))
    if (refused !== undefined) {
      refuse(r)
      break
    }
  }
  parentPort.postMessage({ refused, writes })
} catch (e) {
  Atomics.store(ctl, 1, 0)
  parentPort.postMessage({ error: { message: String(e && e.message), code: e && e.code, errno: e && e.errno, syscall: e && e.syscall } })
}
}
`

/** Where the CRC32C addon is, for the threads (their `require` resolves from the working directory). */
const crcModule = (): string | undefined => {
  try {
    return createRequire(import.meta.url).resolve("@node-rs/crc32")
  } catch {
    return undefined
  }
}

/** An I/O error a thread reported, as `fs` would have thrown it. */
const errorOf = (m: { message: string; code?: string; errno?: number; syscall?: string }): Error =>
  Object.assign(new Error(m.message), { code: m.code, errno: m.errno, syscall: m.syscall })

/** What the threads did: the first record refused (in plan order), and (if asked) every write. */
export interface ThreadsDone {
  readonly refused: Refused | undefined
  readonly writes: ReadonlyArray<number>
}

/** A thread started, waiting for its plan: how it ended, once it has. */
type Ended = ThreadsDone | { readonly error: Error }

/**
 * Restore threads started ahead of their plan (`boot`: a thread's start costs 0.1–0.2 s of
 * CPU on this VM, overlapped with opening the point), then given it (`start`), once.
 */
export class BootedThreads {
  private used = false
  private constructor(
    private readonly workers: ReadonlyArray<Worker>,
    private readonly ends: ReadonlyArray<Promise<Ended>>
  ) {}

  /** `count` threads started; `undefined` when none can be here (no CRC32C addon to give them, no worker threads). */
  static boot(count: number): BootedThreads | undefined {
    const crc = crcModule()
    if (crc === undefined || count < 1) return undefined
    const workerData = threadData(crc)
    const workers: Array<Worker> = []
    const ends: Array<Promise<Ended>> = []
    try {
      for (let i = 0; i < count; i++) {
        const worker = new Worker(WORKER, { eval: true, workerData })
        workers.push(worker)
        ends.push(
          new Promise((resolve) => {
            let settled = false
            const end = (v: Ended) => {
              if (!settled) resolve(v)
              settled = true
            }
            worker.on(
              "message",
              (m: { refused?: Refused; writes?: Array<number>; error?: { message: string } }) =>
                end(
                  m.error !== undefined
                    ? { error: errorOf(m.error) }
                    : { refused: m.refused, writes: m.writes ?? [] }
                )
            )
            worker.on("error", (error) => end({ error }))
            worker.on("exit", () => end({ error: new Error("a restore thread stopped before its end") }))
          })
        )
      }
    } catch {
      for (const worker of workers) void worker.terminate()
      return undefined
    }
    return new BootedThreads(workers, ends)
  }

  /** Gives the threads their plan: they write the plan's reads into `image` (a file descriptor). */
  start(options: {
    readonly runs: ReadonlyArray<ThreadRun>
    readonly extents: ExtentColumns
    readonly files: ReadonlyArray<ThreadFile>
    readonly image: number
    /** Bytes of each thread's buffer (a larger read gets one of its own). */
    readonly bufferBytes: number
    /** Every write reported back (`imageWrites.observe`: tests). */
    readonly logWrites: boolean
  }): RestoreThreads {
    if (this.used) throw new Error("restore threads are given one plan")
    this.used = true
    const { plan, at } = encodePlan(options.runs, options.extents)
    const control = new Int32Array(new SharedArrayBuffer(8))
    control[1] = options.runs.length
    const placed = new BigInt64Array(new SharedArrayBuffer(8))
    const message = {
      plan,
      at,
      control: control.buffer,
      placed: placed.buffer,
      files: options.files,
      image: options.image,
      bufferBytes: Math.ceil(options.bufferBytes / ALIGN) * ALIGN,
      logWrites: options.logWrites,
      writesBeforeCheck: ReceiverMutants.restoreThreadWritesBeforeCheck
    }
    for (const worker of this.workers) worker.postMessage(message)
    const done = Promise.all(this.ends).then((results) => {
      let refused: Refused | undefined
      const writes: Array<number> = []
      for (const r of results) {
        if ("error" in r) throw r.error
        if (r.refused !== undefined && (refused === undefined || r.refused.run < refused.run))
          refused = r.refused
        for (const x of r.writes) writes.push(x)
      }
      return { refused, writes }
    })
    // Seen by the caller's `await`; a failure never waited for is no unhandled rejection.
    done.catch(() => undefined)
    threadRestores.started++
    return new RestoreThreads(this, control, placed, done)
  }

  /** Ends the threads (after their plan is done, or given none). */
  async close(): Promise<void> {
    for (const worker of this.workers) await worker.terminate()
  }
}

/** The threads at work on their plan. */
export class RestoreThreads {
  constructor(
    private readonly booted: BootedThreads,
    /** [0] the next read to take; [1] reads from this one on are not started (a refusal, or a stop). */
    private readonly control: Int32Array,
    /** Bytes placed by the threads (records checked and their extents written). */
    private readonly placedBytes: BigInt64Array,
    readonly done: Promise<ThreadsDone>
  ) {}

  /** Bytes the threads have placed so far (records checked and their extents written). */
  get placed(): number {
    return Number(Atomics.load(this.placedBytes, 0))
  }

  /** No read is started from now on (the threads end after the one each is making). */
  stop(): void {
    Atomics.store(this.control, 1, 0)
  }

  /** Waits for the threads' end (after `stop`, or to give up), whatever it was, and ends them. */
  async close(): Promise<void> {
    await this.done.catch(() => undefined)
    await this.booted.close()
  }
}

/**
 * The log receiver's store (docs/receiver.md): per disk, a base image and a chain of
 * segment files holding every accepted record, fsynced before it is acked.
 *
 * Over 600 lines for now: the writer, the retention fold and the background verifier
 * share `DiskLog`'s fields; they split along those seams (writer, fold, verifier) with
 * one state record, as the replicator did (issue 14).
 *
 * One writer fiber per disk owns the end of its log. Records are appended to a queue as
 * they are accepted; the writer takes everything queued while the previous fsync ran,
 * writes it with one positional write per segment, fsyncs once and then reports the
 * whole batch durable (group commit: one cumulative ack per fsync). Segments roll at
 * `segmentBytes`; a sealed segment gets an index. Retention folds old segments into a
 * new base image, atomically (write aside, fsync, rename, fsync the directory).
 *
 * One process owns a receiver directory at a time (`DIR/.lock`).
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Duration, Effect, Either, Fiber, Metric, Queue, Scope } from "effect"
import { crc32c } from "../internal/crc32c.js"
import * as Inbox from "../internal/inbox.js"
import * as Wire from "../protocol/Wire.js"
import * as Geometry from "../domain/Geometry.js"
import { BASE_FILE, type Base, rewriteBase } from "./internal/base.js"
import { blockIndexName, buildMap, encodeBlockIndex } from "./internal/blockIndex.js"
import {
  type Chain,
  type DiskMeta,
  diskDirName,
  emptySegment,
  inspectDiskDir,
  LOCK_FILE,
  noteRecord,
  openChain,
  type Segment
} from "./internal/chain.js"
import { clearUnfinished, createDisk } from "./internal/create.js"
import { appendEntry, entryColumns, keepEntriesAsColumns } from "./internal/segmentSummary.js"
import { LiveIndex } from "./internal/liveIndex.js"
import { ReceiverMutants } from "./internal/mutants.js"
import * as Metrics from "./internal/metrics.js"
import {
  HelloRefused,
  type LogError,
  LogCorrupt,
  LogIoError,
  type LogOp,
  ReceiverLocked
} from "./internal/errors.js"
import { pwriteFully, pwritevFully, removeIfExists, syncDirectory } from "./internal/files.js"
import {
  encodeIndex,
  encodeRecordHeader,
  encodeSegmentHeader,
  FLAG_RECOVERY_POINT,
  type IndexEntry,
  indexName,
  isRecoveryPoint,
  Kind,
  RECORD_HEADER_BYTES,
  type RecordHeader,
  recordAnchor,
  SEGMENT_HEADER_BYTES,
  segmentName,
  withBatchStart
} from "./internal/format.js"
import { type Clocks, ReceiveClock, systemClocks } from "./internal/clock.js"
import { defaultTuning, type Expected, readIndex, readRange } from "./internal/segment.js"
import { takeLock } from "./internal/pidLock.js"
import { verifyDisk } from "./internal/verify.js"
import * as Retention from "./Retention.js"

export { HelloRefused, LogCorrupt, LogIoError, ReceiverLocked }
/** The receiver's metrics (docs/metrics.md): every series tagged with its disk. */
export const metrics = Metrics.metrics
export type { LogError }

export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
/** Above this many queued bytes a connection stops reading until the writer catches up. */
const HIGH_WATER_BYTES = 64 * 1024 * 1024
const LOW_WATER_BYTES = 16 * 1024 * 1024

export interface StoreOptions {
  readonly dir: string
  /** A segment is sealed once it holds this many bytes (default 64 MiB). */
  readonly segmentBytes?: number | undefined
  readonly retain?: Retention.Policy | undefined
  /**
   * Wall clock for receive times, ms since the Unix epoch (default `Date.now`). Receive
   * times never run backwards within a log whatever it does (`internal/clock.ts`).
   */
  readonly now?: (() => number) | undefined
  /**
   * Monotonic clock, ms from any origin (default `performance.now`): how fast receive times
   * advance while the wall clock is behind, and the clock retention judges ages by.
   */
  readonly monotonic?: (() => number) | undefined
  /** How often retention is checked besides after each segment roll (default 10 seconds). */
  readonly retentionInterval?: Duration.DurationInput | undefined
  /**
   * Bytes per second the background verification reads of the sealed segments (every record's
   * CRC and seq, the index against the segment; a pass, then an hour's pause); 0 turns it off.
   * Default `DEFAULT_VERIFY_RATE`.
   */
  readonly verifyRate?: number | undefined
}

/** 8 MiB/s: a 64 MiB segment every 8 seconds, a small share of any disk's bandwidth. */
export const DEFAULT_VERIFY_RATE = 8 * 1024 * 1024
const VERIFY_PAUSE = "1 hour"

export interface Stats {
  /** Group commits (one write + one fsync each, per segment touched). */
  commits: number
  records: number
  bytes: number
  rolls: number
  folds: number
  /** Retention rounds run (each decides, for every disk, whether a fold is due). */
  retentionRounds: number
  /** Sealed segments verified in full by the background verification. */
  verified: number
  /** Passes of the background verification over every disk. */
  verifyPasses: number
}

export type HelloInfo = Omit<Wire.Hello, "_tag">

const attempt = <A>(op: LogOp, file: string, f: () => Promise<A>): Effect.Effect<A, LogError> =>
  Effect.tryPromise({
    try: f,
    catch: (cause) =>
      cause instanceof LogCorrupt || cause instanceof LogIoError
        ? cause
        : new LogIoError({ op, path: file, cause })
  })

const EMPTY = new Uint8Array(0)

interface Pending {
  readonly header: Buffer
  readonly payload: Uint8Array
  /** The payload's CRC32C (0 for none): the header's CRC is redone from it if its flags change. */
  readonly payloadCrc: number
  /** The record's index entry, made once: its offset, flags and CRC are set when it is written. */
  readonly entry: { -readonly [K in keyof IndexEntry]: IndexEntry[K] }
  /** The monotonic clock when it was received. */
  readonly monotonic: number
  /** Hands back the decoder's pooled copy of the payload: called once its bytes are written. */
  readonly release: (() => void) | undefined
}

/** One disk's log: the chain on disk, the writer's queue and the durable seq. */
export class DiskLog {
  readonly diskId: string
  readonly geometry: Geometry.Geometry
  readonly diskDir: string
  base: Base
  readonly segments: Array<Segment>
  /** The log ended inside a resync when it was opened. */
  readonly openedInResync: boolean
  /** Seq of the last record handed to `append`. */
  accepted: number
  /** Seq of the last durable record. */
  durable: number
  pendingBytes = 0
  failure: LogError | undefined = undefined
  /** Damage a fold found in `base.img`: folds are refused until the receiver restarts. */
  baseDamage: LogCorrupt | undefined = undefined
  /**
   * Held by a retention fold, by the background verification's index repair and by a checksum
   * answer (which reads the base and segments a fold replaces): one at a time.
   */
  readonly maintenance = Effect.unsafeMakeSemaphore(1)
  /** Where the newest version of each byte lives (built on first use; `internal/liveIndex.ts`). */
  readonly live: LiveIndex

  private active: fs.FileHandle | undefined = undefined
  private readonly clock: ReceiveClock
  /** Per segment, the monotonic time of its newest record (retention judges ages by it). */
  private readonly newest = new WeakMap<Segment, number>()
  private readonly waiters = new Set<() => boolean>()
  private readonly listeners = new Set<(seq: number) => void>()

  constructor(
    chain: Chain,
    private readonly queue: Inbox.Inbox<Pending | "close">,
    private readonly options: {
      readonly segmentBytes: number
      readonly clocks: Clocks
      readonly stats: Stats
      readonly onRoll: () => void
    }
  ) {
    this.diskId = chain.meta.diskId
    this.geometry = { blockSize: chain.meta.blockSize, blockCount: chain.meta.blockCount }
    this.diskDir = chain.diskDir
    this.base = chain.base
    this.segments = chain.segments
    this.openedInResync = chain.inResync
    this.live = new LiveIndex(this.geometry)
    this.accepted = chain.lastSeq
    this.durable = chain.lastSeq
    this.clock = new ReceiveClock(
      options.clocks,
      chain.segments.reduce((t, s) => Math.max(t, s.lastTime), chain.base.time)
    )
    // Received before this process: only wall times exist; placed once, as old as they look now.
    for (const s of chain.segments) this.newest.set(s, this.clock.monotonicOf(s.lastTime))
    // The active segment's records, as the writer adds them, in columns until its seal.
    const tail = chain.segments[chain.segments.length - 1]
    if (tail?.entries !== undefined) keepEntriesAsColumns(tail)
  }

  /** Queues an accepted record for the writer; its receive time is taken now. Synchronous. */
  append(record: Wire.Record, recoveryPoint: boolean): void {
    const payload = record._tag === "Write" || record._tag === "Block" ? record.data : EMPTY
    // Receive times never go backwards in the log, and keep advancing while the wall clock is behind.
    const stamp = this.clock.stamp()
    const entry = {
      length: payload.byteLength,
      kind: Wire.recordKindCode(record),
      flags: recoveryPoint ? FLAG_RECOVERY_POINT : 0,
      epoch: record.epoch,
      seq: record.seq,
      position:
        record._tag === "Write"
          ? record.offset
          : record._tag === "Block"
            ? record.block
            : record._tag === "ResyncBegin"
              ? record.base
              : 0,
      time: stamp.time,
      offset: 0,
      crc: 0
    }
    // The wire checked the payload's CRC on arrival: the record's CRC continues from it.
    const payloadCrc =
      payload.byteLength === 0
        ? 0
        : ((record._tag === "Write" || record._tag === "Block"
            ? Wire.verifiedPayloadCrc(record)
            : undefined) ?? crc32c(payload))
    let release = record._tag === "Write" || record._tag === "Block" ? Wire.payloadRelease(record) : undefined
    if (release !== undefined && ReceiverMutants.releasesCopyBeforeWrite) {
      release()
      release = undefined
    }
    this.queue.offer({
      header: encodeRecordHeader(entry, payload, payloadCrc),
      payload,
      payloadCrc,
      entry,
      monotonic: stamp.monotonic,
      release
    })
    this.pendingBytes += RECORD_HEADER_BYTES + payload.byteLength
    this.accepted = record.seq
  }

  /** Calls `listener` with the durable seq after every group commit; returns the unsubscribe. */
  onDurable(listener: (seq: number) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** Suspends while too many bytes wait for the writer (the caller stops reading its socket). */
  readonly backpressure: Effect.Effect<void> = Effect.suspend(() =>
    this.pendingBytes <= HIGH_WATER_BYTES
      ? Effect.void
      : this.wait(() => this.pendingBytes <= LOW_WATER_BYTES || this.failure !== undefined)
  )

  /** Every accepted record is durable (or the log failed). */
  readonly flushed: Effect.Effect<void, LogError> = Effect.suspend(() =>
    this.wait(() => this.durable >= this.accepted || this.failure !== undefined)
  ).pipe(Effect.flatMap(() => (this.failure === undefined ? Effect.void : Effect.fail(this.failure))))

  private wait(done: () => boolean): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      if (done()) return resume(Effect.void)
      const waiter = () => {
        if (!done()) return false
        resume(Effect.void)
        return true
      }
      this.waiters.add(waiter)
      return Effect.sync(() => {
        this.waiters.delete(waiter)
      })
    })
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) if (waiter()) this.waiters.delete(waiter)
  }

  fail(error: LogError): void {
    this.failure ??= error
    this.notify()
    for (const listener of this.listeners) listener(this.durable)
  }

  /** Summaries for retention: every segment but the last is sealed. */
  summaries(): ReadonlyArray<Retention.SegmentSummary> {
    return this.segments.map((s, i) => ({
      lastSeq: s.lastSeq,
      bytes: s.bytes,
      lastMonotonic: this.newest.get(s) ?? this.clock.monotonicOf(s.lastTime),
      lastPoint: s.lastPoint?.seq,
      sealed: i < this.segments.length - 1
    }))
  }

  // -------------------------------------------------------------------------------------------
  // The writer (one fiber per disk).

  /** Writes and fsyncs a batch; returns whether a segment was sealed. */
  async commit(batch: ReadonlyArray<Pending>): Promise<boolean> {
    const { segmentBytes, stats } = this.options
    let rolled = false
    let i = 0
    while (i < batch.length) {
      let segment = this.segments[this.segments.length - 1]
      const first = batch[i]!
      const firstSize = RECORD_HEADER_BYTES + first.payload.byteLength
      let fresh = false
      if (segment === undefined || segment.bytes + firstSize > segmentBytes) {
        if (segment !== undefined) {
          await this.seal(segment)
          rolled = true
        }
        segment = emptySegment(segmentName(first.entry.seq), first.entry.seq, 0, true)
        keepEntriesAsColumns(segment)
        fresh = true
      }
      // The records that still fit (at least one: a record larger than a segment gets its own).
      let end = i + 1
      let size = firstSize
      while (end < batch.length) {
        const next = RECORD_HEADER_BYTES + batch[end]!.payload.byteLength
        if (segment.bytes + (fresh ? SEGMENT_HEADER_BYTES : 0) + size + next > segmentBytes) break
        size += next
        end++
      }
      const file = path.join(this.diskDir, segment.name)
      // Headers and payloads go out as they are (one pwritev): no copy of the batch.
      const buffers: Array<Uint8Array> = []
      let at = segment.bytes
      if (fresh) {
        buffers.push(encodeSegmentHeader({ firstSeq: first.entry.seq, created: first.entry.time }))
        at += SEGMENT_HEADER_BYTES
      }
      for (let k = i; k < end; k++) {
        const p = batch[k]!
        // The first record of each commit's write says so: it tells a torn tail from damage.
        withBatchStart(p.header, p.payload, k === i, p.payloadCrc)
        p.entry.offset = at
        buffers.push(p.header)
        if (p.payload.byteLength > 0) buffers.push(p.payload)
        at += RECORD_HEADER_BYTES + p.payload.byteLength
      }
      if (fresh) {
        this.active = await fs.open(file, "wx+", 0o644)
      } else if (this.active === undefined) {
        this.active = await fs.open(file, "r+")
      }
      await pwritevFully(this.active, buffers, segment.bytes)
      // The kernel holds the bytes now: the decoder may copy other payloads over the copies.
      for (let k = i; k < end; k++) batch[k]!.release?.()
      await this.active.datasync()
      // A new file's directory entry must be durable before its records are acked.
      if (fresh) {
        await syncDirectory(this.diskDir)
        this.segments.push(segment)
      }
      for (let k = i; k < end; k++) {
        const p = batch[k]!
        const entry = p.entry
        entry.flags = p.header[5]!
        entry.crc = p.header.readUInt32LE(36)
        appendEntry(segment, entry)
        noteRecord(segment, entry)
        this.live.add(segment, entry)
      }
      this.newest.set(segment, batch[end - 1]!.monotonic)
      segment.bytes = at
      stats.commits++
      i = end
    }
    return rolled
  }

  /**
   * Seals the active segment: its index and its block index are written (not fsynced: both
   * are checked against the segment when read, and rebuilt if torn).
   */
  private async seal(segment: Segment): Promise<void> {
    // Columns, no object per record (`keepEntriesAsColumns`).
    const entries = entryColumns(segment)
    await fs.writeFile(path.join(this.diskDir, indexName(segment.name)), encodeIndex(segment.bytes, entries))
    const covers = {
      ...this.geometry,
      firstSeq: segment.firstSeq,
      lastSeq: segment.lastSeq,
      segmentBytes: segment.bytes,
      records: segment.records
    }
    await fs.writeFile(
      path.join(this.diskDir, blockIndexName(segment.name)),
      encodeBlockIndex(covers, buildMap(this.geometry, entries))
    )
    segment.entries = undefined
    await this.active?.close()
    this.active = undefined
    this.options.stats.rolls++
  }

  /** Reports a committed batch durable. */
  committed(batch: ReadonlyArray<Pending>, rolled: boolean): void {
    let bytes = 0
    for (const p of batch) bytes += RECORD_HEADER_BYTES + p.payload.byteLength
    this.pendingBytes -= bytes
    this.durable = batch[batch.length - 1]!.entry.seq
    this.options.stats.records += batch.length
    this.options.stats.bytes += bytes
    this.notify()
    for (const listener of this.listeners) listener(this.durable)
    if (rolled) this.options.onRoll()
  }

  async close(): Promise<void> {
    await this.active?.close()
    this.active = undefined
  }

  // -------------------------------------------------------------------------------------------
  // Retention

  /**
   * Folds every record through the recovery point `seq` into a new base image, then drops
   * the sealed segments it covers. Only sealed segments are read; the writer carries on.
   */
  async foldTo(seq: number): Promise<number> {
    // Damage a fold found in the base stays until a restart: no full read of it every round.
    if (this.baseDamage !== undefined) throw this.baseDamage
    const sealed = this.segments.slice(0, -1)
    const from = this.base.seq
    const reading = sealed.filter((s) => s.lastSeq > from && s.firstSeq <= seq)
    if (reading.length === 0 || reading[reading.length - 1]!.lastSeq < seq)
      throw new Error(`cannot fold to seq ${seq}: it is not in a sealed segment`)
    const baseFile = path.join(this.diskDir, BASE_FILE)
    const temp = `${baseFile}.tmp`
    // The current base is checked as it is copied; the units the records change are hashed again.
    const next = await rewriteBase(this.diskDir, temp, this.geometry, from, async (out, touch) => {
      let last: RecordHeader | undefined
      for (const segment of reading) {
        const file = path.join(this.diskDir, segment.name)
        const handle = await fs.open(file, "r")
        try {
          // The index chose the fold's target: every record read must be the one it lists.
          const expected = await sealedIndex(file, segment)
          await readRange(
            handle,
            file,
            SEGMENT_HEADER_BYTES,
            segment.bytes,
            undefined,
            async (h, payload, offset) => {
              if (h.seq <= from) return false
              if (h.seq > seq) return true
              if (h.seq === seq && !isRecoveryPoint(h))
                throw new LogCorrupt({
                  file,
                  offset,
                  reason: `the fold's target, seq ${seq}, is no recovery point`
                })
              await applyRecord(out, this.geometry, h, payload)
              if (h.kind === Kind.Write) touch(h.position, payload.byteLength)
              else if (h.kind === Kind.Block)
                touch(Geometry.blockOffset(this.geometry, h.position), payload.byteLength)
              if (h.seq === seq) {
                last = h
                return true
              }
              return false
            },
            defaultTuning,
            expected
          )
        } finally {
          await handle.close()
        }
      }
      if (last === undefined) throw new Error(`cannot fold to seq ${seq}: no such record`)
      return { seq, time: last.time, anchor: recordAnchor(last) }
    }).catch((e: unknown) => {
      if (e instanceof LogCorrupt && e.file === baseFile) this.baseDamage = e
      throw e
    })
    await fs.rename(temp, baseFile)
    await syncDirectory(this.diskDir)
    this.base = next
    this.live.folded(seq)
    // Oldest first, so a crash in between leaves a chain that opening tidies up; each index
    // before its segment, so a crash between the two leaves no index without its segment.
    const dropped = sealed.filter((s) => s.lastSeq <= seq)
    for (const segment of dropped) {
      await removeIfExists(path.join(this.diskDir, blockIndexName(segment.name)))
      await removeIfExists(path.join(this.diskDir, indexName(segment.name)))
      await removeIfExists(path.join(this.diskDir, segment.name))
      const at = this.segments.indexOf(segment)
      if (at >= 0) this.segments.splice(at, 1)
    }
    await syncDirectory(this.diskDir)
    this.options.stats.folds++
    return dropped.length
  }
}

/** The index of a sealed segment, to check the records a fold reads; damage when it is gone or bad. */
const sealedIndex = async (file: string, segment: Segment): Promise<Expected> => {
  const indexFile = indexName(file)
  const read = await readIndex(indexFile, segment.bytes, segment.firstSeq)
  if (read._tag === "Entries") return { entries: read.entries, indexFile }
  throw new LogCorrupt({
    file: indexFile,
    offset: read._tag === "Unusable" ? read.defect.offset : 0,
    reason: `the index of a sealed segment ${read._tag === "Unusable" ? `is damaged: ${read.defect.reason}` : "is missing"} (it was checked when the log was opened)`
  })
}

/** Applies a record's data to an image file (markers carry none). */
export const applyRecord = async (
  image: fs.FileHandle,
  geometry: Geometry.Geometry,
  h: RecordHeader,
  payload: Uint8Array
): Promise<void> => {
  if (h.kind === Kind.Write) await pwriteFully(image, payload, h.position)
  else if (h.kind === Kind.Block)
    await pwriteFully(image, payload, Geometry.blockOffset(geometry, h.position))
}

// ---------------------------------------------------------------------------------------------

export interface Store {
  readonly dir: string
  /**
   * The disk a hello names, created on first contact; refused when its geometry is invalid
   * or differs from the one the directory holds, or when its log failed.
   */
  readonly disk: (hello: HelloInfo) => Effect.Effect<DiskLog, HelloRefused | LogError>
  readonly disks: () => ReadonlyArray<DiskLog>
  readonly stats: Stats
}

/**
 * Takes `DIR/.lock` (`pid starttime`, `internal/pidLock.ts`); a lock whose process is gone (a
 * crash) is taken over. Advisory: it keeps a second receiver from sharing the directory by mistake.
 */
const lock = async (dir: string): Promise<ReceiverLocked | undefined> => {
  const pid = await takeLock(path.join(dir, LOCK_FILE))
  return pid === undefined ? undefined : new ReceiverLocked({ dir, pid })
}

const logNotes = (chain: Chain) =>
  Effect.forEach(chain.notes, (note) =>
    Effect.logWarning(`${chain.meta.diskId}: ${note.message}`).pipe(Effect.annotateLogs(note.annotations))
  )

/**
 * Opens (creating it if needed) a receiver directory: takes its lock, recovers every disk
 * in it (cutting off torn tails, logged) and starts their writers. Closing the scope lets the
 * writers commit what is queued, then releases the lock.
 */
export const open = (options: StoreOptions): Effect.Effect<Store, LogError | ReceiverLocked, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = path.resolve(options.dir)
    const segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES
    const clocks: Clocks = {
      wall: options.now ?? systemClocks.wall,
      monotonic: options.monotonic ?? systemClocks.monotonic
    }
    const stats: Stats = {
      commits: 0,
      records: 0,
      bytes: 0,
      rolls: 0,
      folds: 0,
      retentionRounds: 0,
      verified: 0,
      verifyPasses: 0
    }
    const scope = yield* Effect.scope

    yield* attempt("open", dir, () => fs.mkdir(dir, { recursive: true }))
    // Its entry in the parent must be durable too (it may have just been created).
    yield* attempt("open", dir, () => syncDirectory(path.dirname(dir)))
    const locked = yield* attempt("lock", dir, () => lock(dir))
    if (locked !== undefined) return yield* locked
    yield* Effect.addFinalizer(() =>
      Effect.promise(() => removeIfExists(path.join(dir, LOCK_FILE)).catch(() => false))
    )

    const rollSignal = yield* Queue.sliding<void>(1)
    const disks = new Map<string, DiskLog>()
    const failedWriter = (disk: DiskLog, error: LogError) =>
      Effect.zipRight(
        Effect.logError(
          `${disk.diskId}: the log failed; its connections are refused until the receiver restarts`
        ).pipe(Effect.annotateLogs({ error: error.message })),
        Effect.sync(() => disk.fail(error))
      )

    const start = (chain: Chain) =>
      Effect.gen(function* () {
        const queue = Inbox.make<Pending | "close">()
        const disk = new DiskLog(chain, queue, {
          segmentBytes,
          clocks,
          stats,
          onRoll: () => rollSignal.unsafeOffer(undefined)
        })
        const metrics = Metrics.forDisk(disk.diskId)
        yield* Metric.set(metrics.durableSeq, disk.durable)
        // Never interrupted: a take that lost a race with interruption would drop records.
        const writer = yield* Effect.forkDaemon(
          Effect.gen(function* () {
            for (;;) {
              const taken = yield* queue.takeAll
              const batch = taken.filter((p): p is Pending => p !== "close")
              if (batch.length > 0 && disk.failure === undefined) {
                const result = yield* Effect.either(
                  attempt("append", disk.diskDir, () => disk.commit(batch)).pipe(
                    Metric.trackDurationWith(metrics.commit, Duration.toSeconds)
                  )
                )
                if (Either.isLeft(result)) yield* failedWriter(disk, result.left)
                else {
                  const bytesBefore = stats.bytes
                  disk.committed(batch, result.right)
                  yield* Metric.incrementBy(metrics.records, batch.length)
                  yield* Metric.incrementBy(metrics.bytes, stats.bytes - bytesBefore)
                  yield* Metric.set(metrics.durableSeq, disk.durable)
                }
              }
              if (batch.length < taken.length) return
            }
          })
        )
        yield* Effect.addFinalizer(() =>
          Effect.gen(function* () {
            queue.offer("close")
            yield* Fiber.await(writer)
            yield* Effect.promise(() => disk.close().catch(() => undefined))
          })
        )
        disks.set(disk.diskId, disk)
        return disk
      }).pipe(Scope.extend(scope))

    const recover = (diskDir: string, meta: DiskMeta) =>
      Effect.gen(function* () {
        const chain = yield* attempt("open", diskDir, () => openChain(diskDir, meta, "recover"))
        yield* logNotes(chain)
        return yield* start(chain)
      })

    // Every disk found is recovered now (torn tails cut off and logged). One whose log cannot be
    // opened — or whose disk.json is missing or damaged while it may hold acked records — is
    // logged and refused, and the others are served. Nothing is removed here.
    const broken = new Map<string, LogError>()
    const refused = (name: string, diskDir: string, error: LogError) =>
      Effect.zipRight(
        Effect.sync(() => broken.set(diskDir, error)),
        Effect.logError(`${name}: cannot open the log; its connections are refused`).pipe(
          Effect.annotateLogs({ error: error.message })
        )
      )
    const names = yield* attempt("open", dir, () => fs.readdir(dir))
    for (const name of names.sort()) {
      if (name.startsWith(".")) continue
      const diskDir = path.join(dir, name)
      const opened = yield* Effect.either(
        Effect.gen(function* () {
          const isDirectory = yield* attempt("open", diskDir, () =>
            fs.stat(diskDir).then((s) => s.isDirectory())
          )
          if (!isDirectory) return undefined
          const found = yield* attempt("open", diskDir, () => inspectDiskDir(diskDir))
          switch (found._tag) {
            case "Disk":
              return yield* recover(diskDir, found.meta)
            case "Refused":
              return yield* found.error
            case "Misplaced":
              yield* Effect.logWarning(
                `${name}: holds disk ${JSON.stringify(found.meta.diskId)}, whose directory is ${diskDirName(found.meta.diskId)}: ignored (a copy or a directory moved aside?)`
              )
              return undefined
            case "Unfinished":
              yield* Effect.logWarning(
                `${name}: a disk creation cut short (no disk.json, nothing acked): moved aside when the disk says hello`
              )
              return undefined
            case "Absent":
              return undefined
          }
        })
      )
      if (Either.isLeft(opened)) yield* refused(name, diskDir, opened.left)
      else if (opened.right !== undefined) {
        const disk = opened.right
        yield* Effect.logInfo(`${disk.diskId}: opened`).pipe(
          Effect.annotateLogs({
            durableSeq: disk.durable,
            baseSeq: disk.base.seq,
            segments: disk.segments.length,
            inResync: disk.openedInResync
          })
        )
        if (disk.base.format === 1)
          yield* Effect.logWarning(
            `${disk.diskId}: base.img is format 1, without data checksums: it cannot be verified until the next retention fold writes format 2`
          )
      }
    }

    const refuse = (diskId: string, reason: HelloRefused["reason"], detail: string) =>
      Effect.fail(new HelloRefused({ diskId, reason, detail }))

    const disk = (hello: HelloInfo): Effect.Effect<DiskLog, HelloRefused | LogError> =>
      Effect.gen(function* () {
        const geometry = Geometry.make(hello.blockSize, hello.blockCount)
        if (Either.isLeft(geometry)) return yield* refuse(hello.diskId, "bad-geometry", geometry.left.message)
        const diskDir = path.join(dir, diskDirName(hello.diskId))
        const failed = broken.get(diskDir)
        if (failed !== undefined) return yield* refuse(hello.diskId, "log-failed", failed.message)
        let found = disks.get(hello.diskId)
        if (found === undefined) {
          const state = yield* attempt("open", diskDir, () => inspectDiskDir(diskDir))
          if (state._tag === "Refused") {
            yield* refused(path.basename(diskDir), diskDir, state.error)
            return yield* refuse(hello.diskId, "log-failed", state.error.message)
          }
          if (state._tag === "Misplaced" || (state._tag === "Disk" && state.meta.diskId !== hello.diskId))
            return yield* refuse(
              hello.diskId,
              "log-failed",
              `directory ${diskDir} holds disk ${JSON.stringify(state.meta.diskId)}`
            )
          if (state._tag === "Disk") found = yield* recover(diskDir, state.meta)
          else {
            if (state._tag === "Unfinished") {
              const aside = yield* attempt("create", diskDir, () => clearUnfinished(dir, diskDir))
              yield* Effect.logWarning(
                `${hello.diskId}: ${diskDir} held a disk creation cut short (no disk.json, nothing acked): ${aside === undefined ? "removed (it was empty)" : `moved aside to ${aside}`}`
              )
            }
            const created = yield* attempt("create", diskDir, () =>
              createDisk(dir, hello.diskId, geometry.right)
            )
            if (created.movedAside !== undefined)
              yield* Effect.logWarning(
                `${hello.diskId}: an unexpected file in an unfinished creation: moved aside to ${created.movedAside}`
              )
            const meta = yield* attempt("open", diskDir, () => inspectDiskDir(diskDir))
            if (meta._tag !== "Disk")
              return yield* new LogCorrupt({
                file: path.join(diskDir, "disk.json"),
                offset: 0,
                reason: `not readable right after the disk's creation (${meta._tag})`
              })
            found = yield* recover(diskDir, meta.meta)
            yield* Effect.logInfo(`${found.diskId}: created`).pipe(
              Effect.annotateLogs({ blockSize: hello.blockSize, blockCount: hello.blockCount })
            )
          }
        }
        const g = found.geometry
        if (g.blockSize !== hello.blockSize || g.blockCount !== hello.blockCount)
          return yield* refuse(
            hello.diskId,
            "geometry-mismatch",
            `disk ${hello.diskId} has ${g.blockCount} blocks of ${g.blockSize} bytes, the hello says ${hello.blockCount} of ${hello.blockSize}`
          )
        if (found.failure !== undefined)
          return yield* refuse(hello.diskId, "log-failed", found.failure.message)
        return found
      })

    if (options.retain !== undefined) {
      const policy = options.retain
      const interval = options.retentionInterval ?? "10 seconds"
      const retain = (d: DiskLog) =>
        Effect.gen(function* () {
          if (d.failure !== undefined) return
          // Ages by the monotonic clock: a wall clock that jumps ahead folds nothing young.
          const seq = Retention.planFold(policy, d.base.seq, d.summaries(), clocks.monotonic())
          if (seq === undefined) return
          yield* d.maintenance
            .withPermits(1)(attempt("fold", d.diskDir, () => d.foldTo(seq)))
            .pipe(
              Effect.tap((dropped) =>
                Effect.logInfo(`${d.diskId}: folded the log into the base image`).pipe(
                  Effect.annotateLogs({ baseSeq: seq, segmentsDropped: dropped })
                )
              ),
              // A failed fold leaves the chain as it was (its temporary file is removed on the next open);
              // damage it found fails the disk's log, like damage found by the writer.
              Effect.catchAll((error) =>
                error._tag === "LogCorrupt"
                  ? failedWriter(d, error)
                  : Effect.logError(`${d.diskId}: retention fold failed`).pipe(
                      Effect.annotateLogs({ error: error.message })
                    )
              )
            )
        })
      yield* Effect.forkIn(
        Effect.forever(
          Effect.zipRight(
            // Suspended: the disks opened since the last round count too.
            Effect.suspend(() => Effect.forEach([...disks.values()], retain, { discard: true })).pipe(
              Effect.tap(() => {
                stats.retentionRounds++
              })
            ),
            // The next round: after a segment roll, or on the timer (age-based horizons move by themselves).
            Effect.raceFirst(Queue.take(rollSignal), Effect.sleep(Duration.decode(interval)))
          )
        ),
        scope
      )
    }

    const verifyRate = options.verifyRate ?? DEFAULT_VERIFY_RATE
    if (verifyRate > 0)
      yield* Effect.forkIn(
        Effect.forever(
          Effect.gen(function* () {
            // Suspended: the disks opened since the last pass count too.
            for (const d of [...disks.values()]) yield* verifyDisk(d, verifyRate, stats)
            stats.verifyPasses++
            yield* Effect.sleep(VERIFY_PAUSE)
          })
        ),
        scope
      )

    const store: Store = { dir, disk, disks: () => [...disks.values()], stats }
    return store
  })

/**
 * The file-backed EventJournal: `events.log` (length + CRC32C framed trace lines)
 * and `snapshot.json` (written atomically) in one directory. See `EventJournal.ts`
 * and docs/adapters.md for the format and the recovery rules.
 *
 * One writer fiber owns the end of the log: it takes every batch queued while the
 * previous fsync ran, writes them with one positional write, fsyncs once, then
 * completes them all (group commit). Readers use positional reads below the
 * committed end, so they never see a batch before it is durable.
 * Opening's scan (from the start, or from a snapshot's log anchor) is in `journalScan.ts`.
 * Over 400 lines on purpose: the writer, the readers and the snapshot's anchor share the
 * committed-end bookkeeping (end, count, the last record, the index). It splits next
 * into the writer fiber and the readers.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Chunk, Deferred, Effect, Either, Fiber, Option, type Scope, Stream } from "effect"
import type * as Event from "../../domain/Event.js"
import * as State from "../../domain/State.js"
import type { EventJournal } from "../EventJournal.js"
import {
  checkEvents,
  checkFrom,
  checkSnapshotPosition,
  decodePayload,
  decodeSnapshotFile,
  decodeSnapshotJson,
  encodeSnapshotFile,
  type Entry,
  frame,
  JournalCorrupt,
  JournalInvalidRequest,
  type JournalError,
  JournalIoError,
  type JournalOp,
  type LogAnchor,
  parseAt,
  type Recovery,
  type SavedSnapshot
} from "./journal.js"
import { isEnoent, preadFully, pwriteFully, syncDirectory } from "../../internal/fileIo.js"
import * as Inbox from "../../internal/inbox.js"
import { CHUNK, INDEX_EVERY, type Last, openScan, type ScanKnobs } from "./journalScan.js"
import {
  checkClosedAt,
  checkHeader,
  decodeRunMark,
  encodeRunMark,
  type Header,
  type LastRun,
  lastRunOf,
  MAX_RUN_FILE,
  RUN_FILE,
  RUN_TEMP,
  type RunMark
} from "./journalRun.js"

export type { OpenReport } from "./journalScan.js"

export const LOG_FILE = "events.log"
export const SNAPSHOT_FILE = "snapshot.json"
const SNAPSHOT_TEMP = "snapshot.json.tmp"

export interface FileOptions {
  readonly directory: string
}

/** The calls that change the log after it is open; replaceable in tests to inject faults. */
export interface LogIo {
  readonly write: (handle: fs.FileHandle, bytes: Uint8Array, position: number) => Promise<void>
  readonly sync: (handle: fs.FileHandle) => Promise<void>
  readonly truncate: (handle: fs.FileHandle, length: number) => Promise<void>
  /** Replaces a small file atomically and durably (the run file). */
  readonly replace: (file: string, temp: string, text: string) => Promise<void>
}

/** Write aside, make it durable, then swap it in: a crash leaves the old or the new file. */
const replaceFile = async (file: string, temp: string, text: string): Promise<void> => {
  const handle = await fs.open(temp, "w", 0o644)
  try {
    await handle.writeFile(text, "utf8")
    await handle.sync()
  } finally {
    await handle.close()
  }
  await fs.rename(temp, file)
  await syncDirectory(path.dirname(file))
}

export const nodeIo: LogIo = {
  write: pwriteFully,
  sync: (handle) => handle.sync(),
  truncate: (handle, length) => handle.truncate(length),
  replace: replaceFile
}

/** Reads the run file, or `undefined` when there is none. */
const readRunFile = async (file: string): Promise<Uint8Array | undefined> => {
  let handle: fs.FileHandle
  try {
    handle = await fs.open(file, "r")
  } catch (e) {
    if (isEnoent(e)) return undefined
    throw e
  }
  try {
    // One byte more than a run file may hold, so an oversized one is seen as such.
    const buf = Buffer.alloc(MAX_RUN_FILE + 1)
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0)
    return buf.subarray(0, bytesRead)
  } finally {
    await handle.close()
  }
}

/**
 * The header a journal directory's run file records (what its events fold from), or
 * `undefined` when it has none, or one that does not decode (opening the journal then
 * says what is wrong with it).
 */
export const recordedHeader = (directory: string): Effect.Effect<Header | undefined> =>
  Effect.promise(async () => {
    const file = path.join(directory, RUN_FILE)
    const bytes = await readRunFile(file).catch(() => undefined)
    if (bytes === undefined) return undefined
    const mark = decodeRunMark(bytes, file)
    return Either.isRight(mark) ? mark.right.header : undefined
  })

const readU32 = (bytes: Uint8Array, at: number): number =>
  new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0, true)

const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  if (a.length === 0) return b
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}

// ---------------------------------------------------------------------------

interface Pending {
  readonly _tag: "Append"
  readonly bytes: Uint8Array
  readonly sizes: ReadonlyArray<number>
  readonly deferred: Deferred.Deferred<number, JournalError>
}

/** A run file to write once the appends queued before it are committed. */
interface MarkRun {
  readonly _tag: "Mark"
  /** The mark, given the position after those appends. */
  readonly mark: (position: number) => RunMark
  readonly deferred: Deferred.Deferred<void, JournalError>
}

/** Internal knobs for tests: fault injection, what opening did, and a mutant. */
export interface FileTestOptions extends FileOptions, ScanKnobs {
  readonly io?: LogIo
}

export const make = (
  options: FileTestOptions
): Effect.Effect<EventJournal.Service, JournalError, Scope.Scope> =>
  Effect.gen(function* () {
    const io = options.io ?? nodeIo
    const { directory } = options
    const logPath = path.join(directory, LOG_FILE)
    const snapshotPath = path.join(directory, SNAPSHOT_FILE)
    const tempPath = path.join(directory, SNAPSHOT_TEMP)
    const runPath = path.join(directory, RUN_FILE)
    const runTemp = path.join(directory, RUN_TEMP)
    const attempt = <A>(op: JournalOp, f: () => Promise<A>) =>
      Effect.tryPromise({
        try: f,
        catch: (cause) =>
          cause instanceof JournalCorrupt || cause instanceof JournalIoError
            ? cause
            : new JournalIoError({ op, cause })
      })

    yield* attempt("open", () => fs.mkdir(directory, { recursive: true }))
    const handle = yield* Effect.acquireRelease(
      attempt("open", () => fs.open(logPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644)),
      (h) => Effect.promise(() => h.close().catch(() => undefined))
    )
    // The log's directory entry must be durable too (it may have just been created).
    yield* attempt("open", () => syncDirectory(directory))
    const size = (yield* attempt("open", () => handle.stat())).size

    // The snapshot and the run file first: a snapshot's anchor lets the scan start at its position.
    yield* attempt("open", () =>
      fs.unlink(tempPath).catch((e) => (isEnoent(e) ? undefined : Promise.reject(e)))
    )
    const snapshotText = yield* attempt("open", () =>
      fs.readFile(snapshotPath, "utf8").catch((e) => (isEnoent(e) ? undefined : Promise.reject(e)))
    )
    const snapshotFile =
      snapshotText === undefined ? undefined : decodeSnapshotJson(snapshotText, snapshotPath)
    yield* attempt("open", () =>
      fs.unlink(runTemp).catch((e) => (isEnoent(e) ? undefined : Promise.reject(e)))
    )
    const runBytes = yield* attempt("open", () => readRunFile(runPath))
    const runFile = runBytes === undefined ? undefined : decodeRunMark(runBytes, runPath)
    let run: RunMark | undefined =
      runFile !== undefined && Either.isRight(runFile) ? runFile.right : undefined

    const outcome = yield* openScan({
      handle,
      size,
      snapshot: snapshotFile !== undefined && Either.isRight(snapshotFile) ? snapshotFile.right : undefined,
      run,
      files: { log: logPath, snapshot: snapshotPath, run: runPath },
      test: options
    }).pipe(Effect.mapError((cause) => new JournalIoError({ op: "scan", cause })))
    if (outcome._tag === "Corrupt")
      return yield* new JournalCorrupt({ file: logPath, offset: outcome.offset, reason: outcome.reason })
    const scanned = outcome.scanned

    let saved: SavedSnapshot | undefined
    if (snapshotFile !== undefined) {
      if (Either.isLeft(snapshotFile)) return yield* snapshotFile.left
      saved = snapshotFile.right.saved
      // Snapshots are only taken of durable events, so this means the log lost durable data.
      if (saved.position > scanned.count)
        return yield* new JournalCorrupt({
          file: snapshotPath,
          offset: 0,
          reason: `the snapshot is at position ${saved.position} but the log holds only ${scanned.count} events`
        })
    }
    if (runFile !== undefined && Either.isLeft(runFile)) return yield* runFile.left
    // Before a torn tail is cut: a clean close beyond the log's end is lost data, not a tear.
    const lost = checkClosedAt(run, scanned.count, { run: runPath, log: logPath }, scanned.end)
    if (lost !== undefined) return yield* lost

    let recovery: Recovery | undefined
    if (outcome._tag === "Torn") {
      recovery = { at: scanned.end, truncatedBytes: outcome.size - scanned.end, reason: outcome.reason }
      yield* attempt("truncate", async () => {
        await io.truncate(handle, scanned.end)
        await io.sync(handle)
      })
      yield* Effect.logWarning("EventJournal: cut off a torn last record").pipe(
        Effect.annotateLogs({
          file: logPath,
          at: recovery.at,
          truncatedBytes: recovery.truncatedBytes,
          reason: recovery.reason
        })
      )
    }

    // The committed state: only the writer changes it, after each durable batch.
    let end = scanned.end
    let count = scanned.count
    // The record that ends at `end`, for the anchor of a snapshot at `count`.
    let last = scanned.last
    const index = scanned.index
    const { origin } = scanned
    /** The nearest known record start at or below `position` (`position` ≤ `count`). */
    const seek = (position: number): { readonly position: number; readonly offset: number } => {
      let slot = Math.floor(position / INDEX_EVERY)
      while (index[slot] === undefined) slot--
      return origin.position <= position && origin.position > slot * INDEX_EVERY
        ? origin
        : { position: slot * INDEX_EVERY, offset: index[slot]! }
    }
    let unusable: JournalIoError | undefined
    let closed = false

    const commit = (batch: ReadonlyArray<Pending>) =>
      Effect.gen(function* () {
        const bytes = batch.length === 1 ? batch[0]!.bytes : Buffer.concat(batch.map((p) => p.bytes))
        const written = yield* Effect.either(
          attempt("append", async () => {
            await io.write(handle, bytes, end)
            await io.sync(handle)
          })
        )
        if (Either.isLeft(written)) {
          // Cut whatever reached the file so the log still ends on a record boundary.
          const undone = yield* Effect.either(
            attempt("append", async () => {
              await io.truncate(handle, end)
              await io.sync(handle)
            })
          )
          if (Either.isLeft(undone))
            unusable = new JournalIoError({
              op: "append",
              cause: new Error("a failed append could not be rolled back; reopen the journal to recover", {
                cause: undone.left.cause
              })
            })
          for (const p of batch) yield* Deferred.fail(p.deferred, written.left)
          return
        }
        for (const p of batch) {
          let at = 0
          for (const recordSize of p.sizes) {
            last = { start: end, crc: readU32(p.bytes, at + 4) }
            at += recordSize
            end += recordSize
            count++
            if (count % INDEX_EVERY === 0) index[count / INDEX_EVERY] = end
          }
          yield* Deferred.succeed(p.deferred, count)
        }
      }).pipe(
        // A defect here must not leave appenders waiting forever.
        Effect.catchAllDefect((defect) =>
          Effect.gen(function* () {
            unusable = new JournalIoError({ op: "append", cause: defect })
            for (const p of batch) yield* Deferred.fail(p.deferred, unusable)
          })
        ),
        Effect.uninterruptible
      )

    /** Writes the run file; only the writer calls it, so it sees the committed position. */
    const writeMark = (request: MarkRun) =>
      Effect.gen(function* () {
        const mark = request.mark(count)
        const written = yield* Effect.either(
          attempt("run", () => io.replace(runPath, runTemp, encodeRunMark(mark)))
        )
        if (Either.isLeft(written)) return yield* Deferred.fail(request.deferred, written.left)
        run = mark
        yield* Deferred.succeed(request.deferred, undefined)
      }).pipe(
        Effect.catchAllDefect((defect) =>
          Deferred.fail(request.deferred, new JournalIoError({ op: "run", cause: defect }))
        ),
        Effect.uninterruptible
      )

    // `close` is offered once, after `closed` is set, so no batch can queue behind it.
    const queue = Inbox.make<Pending | MarkRun | "close">()
    // Never interrupted: a take that loses a race with interruption would drop a batch.
    const writer = yield* Effect.forkDaemon(
      Effect.gen(function* () {
        while (true) {
          const taken = yield* queue.takeAll
          let batch: Array<Pending> = []
          let closing = false
          for (const item of taken) {
            if (item === "close") closing = true
            else if (item._tag === "Append") batch.push(item)
            else {
              // A mark goes after the appends queued before it, at the position they reach.
              if (batch.length > 0) yield* commit(batch)
              batch = []
              yield* writeMark(item)
            }
          }
          if (batch.length > 0) yield* commit(batch)
          if (closing) return
        }
      })
    )
    // Runs before the handle closes: refuse new appends, let the writer commit what is queued.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        closed = true
        queue.offer("close")
        yield* Fiber.await(writer)
      })
    )

    /** Queues a run file write behind the appends already queued. */
    const mark = (f: (position: number) => RunMark) =>
      Effect.gen(function* () {
        const deferred = yield* Deferred.make<void, JournalError>()
        const refused = yield* Effect.sync(() => {
          if (closed) return new JournalIoError({ op: "run", cause: new Error("the journal is closed") })
          if (unusable !== undefined) return unusable
          queue.offer({ _tag: "Mark", mark: f, deferred })
          return undefined
        })
        if (refused !== undefined) return yield* refused
        return yield* Deferred.await(deferred)
      })

    const beginRun = Effect.fn("EventJournal.beginRun")(function* (header: Header) {
      const mismatch = checkHeader(header, run, saved, { run: runPath, snapshot: snapshotPath })
      if (mismatch !== undefined) return yield* mismatch
      const last: LastRun = lastRunOf(run, count, saved !== undefined, recovery)
      const recorded = run?.header ?? header
      yield* mark(() => ({ header: recorded, run: "open", closedAt: null }))
      // What opening repaired belongs to the run before this one.
      recovery = undefined
      return last
    })

    const endRun = Effect.suspend(() => {
      const current = run
      if (current === undefined) return Effect.fail(new JournalInvalidRequest({ reason: "no run was begun" }))
      return mark((position) => ({ header: current.header, run: "closed", closedAt: position }))
    }).pipe(Effect.withSpan("EventJournal.endRun"))

    const append = Effect.fn("EventJournal.append")(function* (events: ReadonlyArray<Event.Event>) {
      if (events.length === 0) return count
      const checked = checkEvents(events, count)
      if (Either.isLeft(checked)) return yield* checked.left
      const { bytes, sizes } = frame(checked.right.texts)
      const deferred = yield* Deferred.make<number, JournalError>()
      const pending: Pending = { _tag: "Append", bytes, sizes, deferred }
      const refused = yield* Effect.sync(() => {
        if (closed) return new JournalIoError({ op: "append", cause: new Error("the journal is closed") })
        if (unusable !== undefined) return unusable
        queue.offer(pending)
        return undefined
      })
      if (refused !== undefined) return yield* refused
      return yield* Deferred.await(deferred)
    })

    const read = (from: number): Stream.Stream<Entry, JournalError> =>
      Stream.suspend((): Stream.Stream<Entry, JournalError> => {
        const invalid = checkFrom(from, count)
        if (invalid !== undefined) return Stream.fail(invalid)
        // Only what is durable when the stream starts.
        const stopCount = count
        const stopEnd = end
        if (from === stopCount) return Stream.empty
        const start = seek(from)
        interface Cursor {
          readonly offset: number
          readonly position: number
          readonly carry: Uint8Array
        }
        const pull = async (
          cursor: Cursor
        ): Promise<readonly [Chunk.Chunk<Entry>, Option.Option<Cursor>]> => {
          const readAt = cursor.offset + cursor.carry.length
          const fresh = new Uint8Array(Math.min(CHUNK, stopEnd - readAt))
          await preadFully(handle, fresh, readAt)
          const buf = concat(cursor.carry, fresh)
          const entries: Array<Entry> = []
          let at = 0
          let position = cursor.position
          while (position < stopCount) {
            const parsed = parseAt(buf, at)
            if (parsed._tag === "Short") {
              if (readAt + fresh.length >= stopEnd)
                throw new JournalCorrupt({
                  file: logPath,
                  offset: cursor.offset + at,
                  reason: "the log ends inside a record"
                })
              break
            }
            if (parsed._tag === "Bad")
              throw new JournalCorrupt({ file: logPath, offset: cursor.offset + at, reason: parsed.reason })
            if (position >= from) {
              const event = decodePayload(parsed.payload, position)
              if (Either.isLeft(event))
                throw new JournalCorrupt({ file: logPath, offset: cursor.offset + at, reason: event.left })
              entries.push({ position, event: event.right })
            }
            position++
            at += parsed.size
          }
          const next: Cursor = { offset: cursor.offset + at, position, carry: buf.subarray(at) }
          return [Chunk.unsafeFromArray(entries), position < stopCount ? Option.some(next) : Option.none()]
        }
        return Stream.paginateChunkEffect(
          { offset: start.offset, position: start.position, carry: new Uint8Array(0) } as Cursor,
          (cursor) => attempt("read", () => pull(cursor))
        )
      })

    /** Walks the committed records from `from` to event `to` (> `from.position`): the anchor there. */
    const walk = async (
      from: { readonly position: number; readonly offset: number },
      to: number,
      stopEnd: number
    ): Promise<LogAnchor | undefined> => {
      let buf: Uint8Array = new Uint8Array(0)
      let bufStart = from.offset
      let at = from.offset
      let position = from.position
      let previous: Last | undefined
      while (position < to) {
        const parsed = parseAt(buf, at - bufStart)
        if (parsed._tag === "Short") {
          if (bufStart + buf.length >= stopEnd) return undefined
          buf = new Uint8Array(Math.min(stopEnd - at, Math.max(parsed.need, CHUNK)))
          await preadFully(handle, buf, at)
          bufStart = at
          continue
        }
        if (parsed._tag === "Bad") return undefined
        previous = { start: at, crc: parsed.crc }
        at += parsed.size
        position++
      }
      return previous === undefined
        ? undefined
        : { offset: at, previous: previous.start, crc32c: previous.crc }
    }

    /**
     * The anchor of a snapshot at `position` (`undefined` at 0): at the current position
     * it is what the writer last committed; below, a walk from the nearest index entry.
     * A walk that fails leaves the snapshot without one (the next open scans it all).
     */
    const anchorAt = (position: number): Effect.Effect<LogAnchor | undefined> =>
      Effect.suspend(() => {
        if (position === 0) return Effect.succeed(undefined)
        if (position === count && last !== undefined)
          return Effect.succeed<LogAnchor>({ offset: end, previous: last.start, crc32c: last.crc })
        const stopEnd = end
        return Effect.tryPromise(() => walk(seek(position - 1), position, stopEnd)).pipe(
          Effect.catchAll((e) =>
            Effect.as(
              Effect.logWarning("EventJournal: a snapshot is saved without its log anchor", e),
              undefined
            )
          )
        )
      })

    const snapshotLock = yield* Effect.makeSemaphore(1)
    const saveSnapshot = Effect.fn("EventJournal.saveSnapshot")(function* (
      snapshot: State.Snapshot,
      position: number
    ) {
      const invalid = checkSnapshotPosition(position, count)
      if (invalid !== undefined) return yield* invalid
      const text = encodeSnapshotFile({ position, snapshot }, yield* anchorAt(position))
      if (Either.isLeft(text)) return yield* text.left
      // Never write what would not load; the fast check spares the Schema pass.
      const decoded = State.isWellFormedSnapshot(snapshot)
        ? Either.right<SavedSnapshot>({ position, snapshot })
        : decodeSnapshotFile(text.right, snapshotPath)
      if (Either.isLeft(decoded)) return yield* decoded.left
      // Write aside, make it durable, then swap it in: a crash leaves the old or the new snapshot.
      yield* snapshotLock.withPermits(1)(
        attempt("snapshot", async () => {
          const temp = await fs.open(tempPath, "w", 0o644)
          try {
            await temp.writeFile(text.right, "utf8")
            await temp.sync()
          } finally {
            await temp.close()
          }
          await fs.rename(tempPath, snapshotPath)
          await syncDirectory(directory)
        }).pipe(Effect.tap(() => Effect.sync(() => (saved = decoded.right))))
      )
    })

    const service: EventJournal.Service = {
      append,
      read,
      position: Effect.sync(() => count),
      saveSnapshot,
      loadSnapshot: Effect.sync(() => Option.fromNullable(saved)),
      recovery,
      beginRun,
      endRun
    }
    return service
  })

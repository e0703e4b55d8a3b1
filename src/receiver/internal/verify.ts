/**
 * Verifying a sealed segment in full, in the background of a running receiver: opening a
 * disk trusts each sealed segment's index once it passes its checks (chain.ts), so damage
 * inside a sealed segment would otherwise go unseen until a restore or fold reads it. The
 * receiver reads every sealed segment at a bounded rate (`LogStore`'s `verifyRate`): every
 * record's CRC, the seqs, and the index entry by entry.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect, Either } from "effect"
import type { Segment } from "./chain.js"
import { type LogError, LogCorrupt, LogIoError } from "./errors.js"
import { isEnoent, writeFileAtomic } from "./files.js"
import { encodeIndex, type IndexEntry, indexName } from "./format.js"
import {
  compareIndex,
  DEFAULT_WINDOW,
  defaultTuning,
  describeDamage,
  readIndex,
  scanSegment
} from "./segment.js"

export type Verdict =
  | { readonly _tag: "Good" }
  /** Removed meanwhile (a retention fold). */
  | { readonly _tag: "Gone" }
  /** The segment is damaged: the disk's log fails. */
  | { readonly _tag: "Damaged"; readonly error: LogCorrupt }
  /** The segment is good, its index missing or failing its own checks: rebuilt from `entries` (a cache). */
  | { readonly _tag: "BadIndex"; readonly error: LogCorrupt; readonly entries: ReadonlyArray<IndexEntry> }

/** The sealed segment `name` of `diskDir` (committed size `bytes`), read in full. */
export const verifySealed = async (
  diskDir: string,
  segment: { readonly name: string; readonly firstSeq: number; readonly bytes: number },
  pace: (bytes: number) => Promise<void>
): Promise<Verdict> => {
  const file = path.join(diskDir, segment.name)
  let handle: fs.FileHandle
  try {
    handle = await fs.open(file, "r")
  } catch (e) {
    if (isEnoent(e)) return { _tag: "Gone" }
    throw e
  }
  try {
    const { size } = await handle.stat()
    if (size !== segment.bytes)
      return {
        _tag: "Damaged",
        error: new LogCorrupt({
          file,
          offset: Math.min(size, segment.bytes),
          reason: `a sealed segment of ${segment.bytes} bytes now has ${size}`
        })
      }
    // Small reads, each followed by the pause that keeps the rate: the writer is not starved.
    const tuning = { ...defaultTuning, window: Math.min(DEFAULT_WINDOW, 1 << 20), onRead: pace }
    const scan = await scanSegment(handle, size, { firstSeq: segment.firstSeq, prevSeq: undefined }, tuning)
    if (scan.damage !== undefined)
      return {
        _tag: "Damaged",
        error: new LogCorrupt({ file, offset: scan.damage.offset, reason: describeDamage(scan.damage) })
      }
    if (scan.entries.length === 0)
      return {
        _tag: "Damaged",
        error: new LogCorrupt({ file, offset: scan.end, reason: "a sealed segment holds no record" })
      }
    const indexFile = indexName(file)
    const index = await readIndex(indexFile, size, segment.firstSeq)
    if (index._tag !== "Entries") {
      const error =
        index._tag === "Missing"
          ? new LogCorrupt({ file: indexFile, offset: 0, reason: "missing" })
          : new LogCorrupt({ file: indexFile, ...index.defect })
      return { _tag: "BadIndex", error, entries: scan.entries }
    }
    // A well-formed index at odds with a segment whose CRCs hold: a forgery of one of them.
    const error = compareIndex(indexFile, index.entries, scan.entries)
    return error === undefined ? { _tag: "Good" } : { _tag: "Damaged", error }
  } finally {
    await handle.close()
  }
}

/** Rewrites a sealed segment's index from a verified scan (atomically: readers never see half of it). */
export const rebuildIndex = (
  diskDir: string,
  name: string,
  bytes: number,
  entries: ReadonlyArray<IndexEntry>
) => writeFileAtomic(indexName(path.join(diskDir, name)), encodeIndex(bytes, entries))

/** What the verification needs of a disk's log (`LogStore.DiskLog`). */
export interface VerifiedDisk {
  readonly diskId: string
  readonly diskDir: string
  /** Oldest first; every one but the last is sealed. */
  readonly segments: ReadonlyArray<Segment>
  readonly failure: LogError | undefined
  fail(error: LogError): void
  /** Held by a retention fold too: an index is never rebuilt for a segment being folded away. */
  readonly maintenance: Effect.Semaphore
}

/** Waits as long as reading `bytes` takes at `rate` bytes per second (rejects when `signal` aborts). */
const pacer =
  (rate: number, signal: AbortSignal) =>
  (bytes: number): Promise<void> =>
    new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason)
      const onAbort = () => {
        clearTimeout(timer)
        reject(signal.reason)
      }
      const timer = setTimeout(
        () => {
          signal.removeEventListener("abort", onAbort)
          resolve()
        },
        (bytes / rate) * 1000
      )
      signal.addEventListener("abort", onAbort, { once: true })
    })

/**
 * One pass of the background verification over a disk's sealed segments (internal/verify.ts).
 * Damage in a segment fails the disk's log (logged, with the file and byte offset; nothing is
 * deleted); an index that disagrees with its good segment is rebuilt from it (a cache).
 */
export const verifyDisk = (d: VerifiedDisk, rate: number, stats: { verified: number }) =>
  Effect.gen(function* () {
    for (const segment of d.segments.slice(0, -1)) {
      if (d.failure !== undefined) return
      const file = path.join(d.diskDir, segment.name)
      const verdict = yield* Effect.either(
        Effect.tryPromise({
          try: (signal) => verifySealed(d.diskDir, segment, pacer(rate, signal)),
          catch: (cause) => new LogIoError({ op: "scan", path: file, cause })
        })
      )
      if (Either.isLeft(verdict)) {
        // An I/O error is no proof of damage: logged, the next pass tries again.
        yield* Effect.logWarning(`${d.diskId}: the background verification could not read a segment`).pipe(
          Effect.annotateLogs({ error: verdict.left.message })
        )
        continue
      }
      const v = verdict.right
      if (v._tag === "Damaged") {
        yield* Effect.logError(
          `${d.diskId}: the background verification found damage; the log failed, its connections are refused until the receiver restarts`
        ).pipe(
          Effect.annotateLogs({
            error: v.error.message,
            file: v.error.file,
            at: v.error.offset,
            reason: v.error.reason
          })
        )
        d.fail(v.error)
        return
      }
      if (v._tag === "BadIndex")
        yield* d.maintenance
          .withPermits(1)(
            Effect.gen(function* () {
              // Not folded away meanwhile: rebuilding it now would leave an orphan index.
              if (!d.segments.includes(segment)) return
              yield* Effect.tryPromise({
                try: () => rebuildIndex(d.diskDir, segment.name, segment.bytes, v.entries),
                catch: (cause) => new LogIoError({ op: "scan", path: file, cause })
              })
              yield* Effect.logWarning(`${d.diskId}: rebuilt an index that disagreed with its segment`).pipe(
                Effect.annotateLogs({ file: v.error.file, at: v.error.offset, reason: v.error.reason })
              )
            })
          )
          .pipe(
            Effect.catchAll((error) =>
              Effect.logWarning(`${d.diskId}: could not rebuild an index`).pipe(
                Effect.annotateLogs({ error: error.message })
              )
            )
          )
      if (v._tag !== "Gone") stats.verified++
    }
  })

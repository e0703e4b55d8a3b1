/**
 * Opening the file journal's log: the scan that finds its end and tells a torn tail
 * from damage, from the log's start or from a snapshot's log anchor once that anchor
 * checks against the log (docs/adapters.md, "The snapshot's log anchor").
 */
import type * as fs from "node:fs/promises"
import { Effect, Either } from "effect"
import { preadFully } from "../../internal/fileIo.js"
import {
  decodeLogAnchor,
  decodePayload,
  HEADER_BYTES,
  isValidRecordAt,
  type LogAnchor,
  MAX_PAYLOAD,
  parseAt,
  type SavedSnapshot
} from "./journal.js"
import { checkClosedAt, type RunMark } from "./journalRun.js"

/** One index entry (byte offset) every this many events, so `read(from)` seeks close to `from`. */
export const INDEX_EVERY = 1024
export const CHUNK = 256 * 1024

/** The last record before a point of the log: where it starts and the CRC its header holds. */
export interface Last {
  readonly start: number
  readonly crc: number
}

/** Where a scan starts: the log's start, or a snapshot's checked anchor. */
export interface Start {
  readonly offset: number
  readonly count: number
  readonly last: Last | undefined
}

export const LOG_START: Start = { offset: 0, count: 0, last: undefined }

export interface Scanned {
  /** Byte offset of the end of the last good record. */
  readonly end: number
  readonly count: number
  /** The record that ends at `end` (`undefined` when the log is empty). */
  readonly last: Last | undefined
  /**
   * `index[i]` is the byte offset of event `i * INDEX_EVERY`; sparse below a scan's
   * start (slot 0 is always there), so readers fall back to the nearest slot below.
   */
  readonly index: Array<number | undefined>
  /** Where the scan started: a record start (or the end) the readers may seek to. */
  readonly origin: { readonly position: number; readonly offset: number }
}

export type ScanOutcome =
  | { readonly _tag: "Clean"; readonly scanned: Scanned }
  | { readonly _tag: "Torn"; readonly scanned: Scanned; readonly reason: string; readonly size: number }
  | { readonly _tag: "Corrupt"; readonly offset: number; readonly reason: string }

/** Whether the file holds only zero bytes from `from` to `size` (a zero-filled tail after a crash). */
const zeroFrom = async (handle: fs.FileHandle, from: number, size: number): Promise<boolean> => {
  const buf = new Uint8Array(Math.min(CHUNK, size - from))
  for (let at = from; at < size; at += buf.length) {
    const part = buf.subarray(0, Math.min(buf.length, size - at))
    await preadFully(handle, part, at)
    if (part.some((b) => b !== 0)) return false
  }
  return true
}

/** The whole checked record at `at`, if one starts there and lies within `size`. */
const recordAt = async (
  handle: fs.FileHandle,
  at: number,
  size: number
): Promise<{ readonly size: number; readonly crc: number } | undefined> => {
  if (at + HEADER_BYTES > size) return undefined
  const header = new Uint8Array(HEADER_BYTES)
  await preadFully(handle, header, at)
  const length = new DataView(header.buffer).getUint32(0, true)
  if (length > MAX_PAYLOAD || at + HEADER_BYTES + length > size) return undefined
  const buf = new Uint8Array(HEADER_BYTES + length)
  await preadFully(handle, buf, at)
  const parsed = parseAt(buf, 0)
  if (parsed._tag !== "Record" || Either.isLeft(decodePayload(parsed.payload, 0))) return undefined
  return parsed
}

/**
 * Why a snapshot's anchor cannot be where the scan starts, or `undefined` when it can:
 * the record it names as the one before must start at `previous`, end exactly at
 * `offset` and hold the same CRC, and a checked record must start at `offset` (or the
 * log end there). Anything else falls back to the full scan.
 */
const anchorFault = async (
  handle: fs.FileHandle,
  size: number,
  anchor: LogAnchor
): Promise<string | undefined> => {
  if (anchor.offset > size) return `its offset ${anchor.offset} is past the log's end (${size})`
  const previous = await recordAt(handle, anchor.previous, anchor.offset)
  if (previous === undefined || anchor.previous + previous.size !== anchor.offset)
    return `no checked record runs from byte ${anchor.previous} to its offset ${anchor.offset}`
  if (previous.crc !== anchor.crc32c) return `the record before its offset ${anchor.offset} holds another CRC`
  if (anchor.offset < size && (await recordAt(handle, anchor.offset, size)) === undefined)
    return `no checked record starts at its offset ${anchor.offset}`
  return undefined
}

const scan = async (handle: fs.FileHandle, size: number, start: Start): Promise<ScanOutcome> => {
  let buf: Uint8Array = new Uint8Array(0)
  let bufStart = start.offset
  let offset = start.offset
  let count = start.count
  let last = start.last
  const index: Array<number | undefined> = [0]
  if (count % INDEX_EVERY === 0) index[count / INDEX_EVERY] = offset
  const origin = { position: count, offset }
  // Makes `buf` cover [offset, offset + need) or up to the end of the file.
  const fill = async (need: number) => {
    const want = Math.min(size, offset + Math.max(need, CHUNK))
    if (bufStart + buf.length >= want) return
    const keep = buf.subarray(offset - bufStart)
    const next = new Uint8Array(want - offset)
    next.set(keep)
    await preadFully(handle, next.subarray(keep.length), offset + keep.length)
    buf = next
    bufStart = offset
  }
  while (offset < size) {
    let parsed = parseAt(buf, offset - bufStart)
    while (parsed._tag === "Short" && bufStart + buf.length < size) {
      await fill(parsed.need)
      parsed = parseAt(buf, offset - bufStart)
    }
    if (parsed._tag === "Record") {
      const event = decodePayload(parsed.payload, count)
      // The CRC matched, so these are the bytes that were written: no crash makes them.
      if (Either.isLeft(event)) return { _tag: "Corrupt", offset, reason: event.left }
      last = { start: offset, crc: parsed.crc }
      count++
      offset += parsed.size
      if (count % INDEX_EVERY === 0) index[count / INDEX_EVERY] = offset
      continue
    }
    const scanned: Scanned = { end: offset, count, last, index, origin }
    let reason: string
    if (parsed._tag === "Short") {
      reason = size - offset < HEADER_BYTES ? "short header" : "short payload"
    } else if (offset + parsed.size === size) {
      reason = `${parsed.reason} on the last record`
    } else if (await zeroFrom(handle, offset, size)) {
      return { _tag: "Torn", scanned, reason: "zero-filled tail", size }
    } else {
      return { _tag: "Corrupt", offset, reason: `${parsed.reason}, followed by more data` }
    }
    // A torn tail runs to the end of the file (at most one record) and hides no whole record.
    const rest = new Uint8Array(size - offset)
    await preadFully(handle, rest, offset)
    for (let at = 1; at < rest.length; at++)
      if (isValidRecordAt(rest, at))
        return {
          _tag: "Corrupt",
          offset,
          reason: `${reason}, yet a valid record follows at byte ${offset + at}`
        }
    return { _tag: "Torn", scanned, reason, size }
  }
  return { _tag: "Clean", scanned: { end: offset, count, last, index, origin } }
}

/** How opening scanned the log (told to tests through `FileTestOptions.onOpen`). */
export interface OpenReport {
  /** From the snapshot's anchor, or the whole log. */
  readonly scan: "anchored" | "full"
  /** The byte offset the scan started at. */
  readonly from: number
  /** Why a snapshot's anchor was not used, when it has one. */
  readonly fallback?: string
}

/** Internal knobs for tests: what opening did, and a mutant. */
export interface ScanKnobs {
  readonly onOpen?: (report: OpenReport) => void
  /** Scans the whole log whatever the snapshot says: the reference an anchored open must equal. */
  readonly ignoreAnchor?: boolean
  /** A deliberately broken open for the tests' mutant: scans from the anchor without checking the log there. */
  readonly trustAnchor?: boolean
}

/**
 * Scans the log from the snapshot's anchor when it checks, else from the start (and
 * says why at warning level, or debug for a snapshot that has none). A scan from the
 * anchor that meets damage, or ends short of a clean close the run file records, is
 * redone from the start: the full scan is the authority, the anchor only a shortcut.
 */
export const openScan = (args: {
  readonly handle: fs.FileHandle
  readonly size: number
  readonly snapshot: { readonly saved: SavedSnapshot; readonly log: unknown } | undefined
  readonly run: RunMark | undefined
  readonly files: { readonly log: string; readonly snapshot: string; readonly run: string }
  readonly test: ScanKnobs
}): Effect.Effect<ScanOutcome, unknown> =>
  Effect.gen(function* () {
    const { handle, size, snapshot, test } = args
    const scanFrom = (start: Start) =>
      Effect.tryPromise({ try: () => scan(handle, size, start), catch: (e) => e })
    const full = (fallback: string | undefined, level: "debug" | "warning") =>
      Effect.gen(function* () {
        if (fallback !== undefined)
          yield* (level === "debug" ? Effect.logDebug : Effect.logWarning)(
            `EventJournal: scanning the whole log: the snapshot's anchor is not used: ${fallback}`
          ).pipe(Effect.annotateLogs({ file: args.files.snapshot }))
        test.onOpen?.(
          fallback === undefined ? { scan: "full", from: 0 } : { scan: "full", from: 0, fallback }
        )
        return yield* scanFrom(LOG_START)
      })
    if (snapshot === undefined || test.ignoreAnchor === true) return yield* full(undefined, "debug")
    const position = snapshot.saved.position
    const decoded = decodeLogAnchor(position, snapshot.log)
    if (decoded === undefined)
      return yield* full(
        position === 0 ? "it is at position 0" : "it has none (written before anchors were kept)",
        "debug"
      )
    if (decoded._tag === "Unusable") return yield* full(decoded.reason, "warning")
    const { anchor } = decoded
    if (test.trustAnchor !== true) {
      const fault = yield* Effect.tryPromise({
        try: () => anchorFault(handle, size, anchor),
        catch: (e) => e
      })
      if (fault !== undefined) return yield* full(fault, "warning")
    }
    const outcome = yield* scanFrom({
      offset: anchor.offset,
      count: position,
      last: { start: anchor.previous, crc: anchor.crc32c }
    })
    if (outcome._tag === "Corrupt")
      return yield* full(`the log is damaged after it, at byte ${outcome.offset}`, "warning")
    if (
      test.trustAnchor !== true &&
      checkClosedAt(args.run, outcome.scanned.count, args.files, outcome.scanned.end) !== undefined
    )
      return yield* full(
        `the log from it holds fewer events than the run file's clean close (${args.run?.closedAt})`,
        "warning"
      )
    test.onOpen?.({ scan: "anchored", from: anchor.offset })
    return outcome
  })

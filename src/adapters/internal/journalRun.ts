/**
 * The journal's run file: what its events fold from (the disk's geometry and the
 * initial state, as a trace's header says) and whether the run that wrote it last
 * closed cleanly. Shared by the file and memory layers.
 *
 * The file (`journal.json`) is one line of JSON whose last field is the CRC32C of the
 * line without it:
 *
 *   {"format":"cdp-sync-journal","version":1,"blockSize":65536,"blockCount":4096,
 *    "initial":"in-sync","run":"closed","closedAt":1234,"crc32c":"1a2b3c4d"}
 *
 * `crc32c` is over the UTF-8 bytes of the same object without that field (the text up
 * to `,"crc32c"` followed by `}`). `closedAt` is the number of events the log held
 * when the run closed cleanly, `null` while a run is open.
 */
import { Data, Either, Schema } from "effect"
import * as Config from "../../domain/Config.js"
import { Count } from "../../domain/Event.js"
import * as Geometry from "../../domain/Geometry.js"
import { crc32c } from "../../internal/crc32c.js"
import { JournalCorrupt, type Recovery, type SavedSnapshot } from "./journal.js"

export const RUN_FILE = "journal.json"
export const RUN_TEMP = "journal.json.tmp"
/** A run file is a few hundred bytes; anything much larger is not one. */
export const MAX_RUN_FILE = 4096

/** What a journal's events fold from: the disk's geometry and the initial state (a trace's header). */
export interface Header {
  readonly blockSize: number
  readonly blockCount: number
  readonly initial: Config.Initial
}

/** The run file's content. */
export interface RunMark {
  readonly header: Header
  readonly run: "open" | "closed"
  /** The journal's position at the clean close; `null` while the run is open. */
  readonly closedAt: number | null
}

/** How the previous run of the journal's writer ended, as `beginRun` found it. */
export type LastRun =
  /** Nothing was ever written: no run, no event, no snapshot. */
  | { readonly _tag: "New" }
  /** The last run closed cleanly, and nothing was appended after. */
  | { readonly _tag: "Clean" }
  /** The last run did not close cleanly (killed, crashed, lost power), or the journal cannot tell. */
  | { readonly _tag: "Unclean"; readonly reason: string }

/** The journal records another geometry (or initial state) than the run that opens it. */
export class JournalGeometryMismatch extends Data.TaggedError("JournalGeometryMismatch")<{
  /** The run file (or snapshot) that records the journal's geometry. */
  readonly file: string
  readonly recorded: Header
  readonly given: Header
}> {
  override get message() {
    const show = (h: Header) => `${h.blockCount} blocks of ${h.blockSize} bytes (${h.initial})`
    return `the journal in ${this.file} belongs to a disk of ${show(this.recorded)}, but this disk has ${show(this.given)}: a journal describes one disk. Give the disk back its size, or start a new journal (then with a new disk id at the receiver, or its log moved aside)`
  }
}

export const sameHeader = (a: Header, b: Header): boolean =>
  a.blockSize === b.blockSize && a.blockCount === b.blockCount && a.initial === b.initial

const Fields = Schema.Struct({
  format: Schema.Literal("cdp-sync-journal"),
  version: Schema.Literal(1),
  blockSize: Count,
  blockCount: Count,
  initial: Config.Initial,
  run: Schema.Literal("open", "closed"),
  closedAt: Schema.NullOr(Count)
})

const CRC_FIELD = ',"crc32c":"'

const hex8 = (n: number) => n.toString(16).padStart(8, "0")

export const encodeRunMark = (mark: RunMark): string => {
  const body = JSON.stringify({
    format: "cdp-sync-journal",
    version: 1,
    blockSize: mark.header.blockSize,
    blockCount: mark.header.blockCount,
    initial: mark.header.initial,
    run: mark.run,
    closedAt: mark.closedAt
  })
  const crc = crc32c(Buffer.from(body, "utf8"))
  return `${body.slice(0, -1)}${CRC_FIELD}${hex8(crc)}"}\n`
}

// A byte-order mark is kept, not skipped: the file is exactly what the encoder wrote, or damaged.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** Decodes a run file; damage is refused with the byte offset where it shows, never repaired. */
export const decodeRunMark = (bytes: Uint8Array, file: string): Either.Either<RunMark, JournalCorrupt> => {
  const corrupt = (offset: number, reason: string) =>
    Either.left(new JournalCorrupt({ file, offset, reason: `run file: ${reason}` }))
  if (bytes.length > MAX_RUN_FILE) return corrupt(MAX_RUN_FILE, `longer than ${MAX_RUN_FILE} bytes`)
  let text: string
  try {
    text = decoder.decode(bytes)
  } catch {
    return corrupt(0, "not UTF-8")
  }
  const at = text.lastIndexOf(CRC_FIELD)
  const tail = /^([0-9a-f]{8})"\}\n?$/.exec(text.slice(at + CRC_FIELD.length))
  if (at < 0 || tail === null)
    return corrupt(at < 0 ? 0 : Buffer.byteLength(text.slice(0, at)), "no checksum at its end")
  const body = `${text.slice(0, at)}}`
  const offset = Buffer.byteLength(text.slice(0, at), "utf8")
  if (crc32c(Buffer.from(body, "utf8")) !== Number.parseInt(tail[1]!, 16))
    return corrupt(offset, "CRC32C mismatch")
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch (e) {
    return corrupt(0, `not JSON: ${(e as Error).message}`)
  }
  const fields = Schema.decodeUnknownEither(Fields, { onExcessProperty: "error" })(json)
  if (Either.isLeft(fields)) return corrupt(0, `does not decode: ${fields.left.message}`)
  const f = fields.right
  const geometry = Geometry.make(f.blockSize, f.blockCount)
  if (Either.isLeft(geometry)) return corrupt(0, geometry.left.message)
  if ((f.run === "closed") !== (f.closedAt !== null))
    return corrupt(0, `a ${f.run} run with closedAt ${f.closedAt}`)
  return Either.right({
    header: { blockSize: f.blockSize, blockCount: f.blockCount, initial: f.initial },
    run: f.run,
    closedAt: f.closedAt
  })
}

/** The header a journal without a run file implies: its snapshot's, if it has one. */
const snapshotHeader = (saved: SavedSnapshot | undefined): Header | undefined =>
  saved === undefined
    ? undefined
    : {
        blockSize: saved.snapshot.config.blockSize,
        blockCount: saved.snapshot.config.blockCount,
        initial: saved.snapshot.config.initial
      }

/**
 * Checks the header a run opens with against the journal's: the run file's, or (for a
 * journal written before run files) its snapshot's.
 */
export const checkHeader = (
  given: Header,
  mark: RunMark | undefined,
  saved: SavedSnapshot | undefined,
  files: { readonly run: string; readonly snapshot: string }
): JournalGeometryMismatch | undefined => {
  const recorded = mark?.header ?? snapshotHeader(saved)
  if (recorded === undefined || sameHeader(recorded, given)) return undefined
  return new JournalGeometryMismatch({
    file: mark === undefined ? files.snapshot : files.run,
    recorded,
    given
  })
}

/** How the previous run ended, from the run file and what the log holds. */
export const lastRunOf = (
  mark: RunMark | undefined,
  position: number,
  hasSnapshot: boolean,
  recovery: Recovery | undefined
): LastRun => {
  if (mark === undefined) {
    if (position === 0 && !hasSnapshot && recovery === undefined) return { _tag: "New" }
    return {
      _tag: "Unclean",
      reason:
        "the journal records no clean close (written before run files were kept, or its run file is gone)"
    }
  }
  if (mark.run === "open") return { _tag: "Unclean", reason: "the last run did not close cleanly" }
  if (recovery !== undefined)
    return {
      _tag: "Unclean",
      reason: "a torn record was cut off the journal's end after the last clean close"
    }
  if (mark.closedAt !== position)
    return {
      _tag: "Unclean",
      reason: `the last run closed cleanly at event ${mark.closedAt}, but the journal holds ${position} events`
    }
  return { _tag: "Clean" }
}

/** A clean close recorded beyond the log's end: durable events were lost. */
export const checkClosedAt = (
  mark: RunMark | undefined,
  position: number,
  files: { readonly run: string; readonly log: string },
  logEnd: number
): JournalCorrupt | undefined =>
  mark?.closedAt != null && mark.closedAt > position
    ? new JournalCorrupt({
        file: files.log,
        offset: logEnd,
        reason: `the run file (${files.run}) records a clean close at event ${mark.closedAt}, but the log holds only ${position} events`
      })
    : undefined

/**
 * Shared pieces of the EventJournal layers: errors, the record format and the
 * snapshot file schema.
 *
 * A record is `[u32 LE payload length][u32 LE CRC32C of payload][payload]`, the
 * payload being the event's trace line (`Trace.encodeEvent`, UTF-8, no newline).
 */
import { Data, Either, Schema } from "effect"
import * as Event from "../../domain/Event.js"
import * as State from "../../domain/State.js"
import * as Trace from "../../domain/Trace.js"
import { crc32c } from "../../internal/crc32c.js"

export const HEADER_BYTES = 8
/** Events encode to a few hundred bytes; anything longer is refused, and read back as corruption. */
export const MAX_PAYLOAD = 1024 * 1024
/** The shortest payload that can be an event (`{}` is not one, but nothing shorter is JSON). */
export const MIN_PAYLOAD = 2

export type JournalOp = "open" | "scan" | "append" | "read" | "truncate" | "snapshot" | "run" | "close"

/** The operating system failed an I/O call, or the journal can no longer accept appends. */
export class JournalIoError extends Data.TaggedError("JournalIoError")<{
  readonly op: JournalOp
  readonly cause: unknown
}> {
  override get message() {
    return `journal ${this.op} failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** Damage the journal will not repair by itself: it names the file and the byte offset. */
export class JournalCorrupt extends Data.TaggedError("JournalCorrupt")<{
  readonly file: string
  readonly offset: number
  readonly reason: string
}> {
  override get message() {
    return `journal corrupt: ${this.file} at byte ${this.offset}: ${this.reason}`
  }
}

/** A request the journal refuses: a position beyond its end, an event it cannot encode. */
export class JournalInvalidRequest extends Data.TaggedError("JournalInvalidRequest")<{
  readonly reason: string
}> {
  override get message() {
    return `journal request refused: ${this.reason}`
  }
}

export type JournalError = JournalIoError | JournalCorrupt | JournalInvalidRequest

export interface Entry {
  /** The event's index: folding it brings the journal's state to `position + 1`. */
  readonly position: number
  readonly event: Event.Event
}

export interface SavedSnapshot {
  /** The snapshot is the state after folding the first `position` events. */
  readonly position: number
  readonly snapshot: State.Snapshot
}

/** What opening found and repaired: a torn last record cut off at byte `at`. */
export interface Recovery {
  readonly at: number
  readonly truncatedBytes: number
  readonly reason: string
}

// ---------------------------------------------------------------------------
// Events: checked both ways, so the journal never holds a record it cannot read back.

const decoder = new TextDecoder("utf-8", { fatal: true })

export interface Checked {
  /** Each event's trace line. */
  readonly texts: ReadonlyArray<string>
  /** The events as they will read back (decoded from their own encoding). */
  readonly events: ReadonlyArray<Event.Event>
}

/** Encodes each event and decodes it back; why the first bad one is refused. */
export const checkEvents = (
  events: ReadonlyArray<Event.Event>,
  firstPosition: number
): Either.Either<Checked, JournalInvalidRequest> => {
  const texts: Array<string> = []
  const checkedEvents: Array<Event.Event> = []
  for (let i = 0; i < events.length; i++) {
    const event = events[i]!
    const text = Trace.encodeEvent(event)
    // A well-formed event reads back as itself; anything else takes the full round trip.
    const checked = Trace.isWellFormedEvent(event)
      ? Either.right(event)
      : Trace.decodeEvent(text, firstPosition + i + 1)
    if (Either.isLeft(checked))
      return Either.left(
        new JournalInvalidRequest({
          reason: `event ${firstPosition + i} is not a valid event: ${checked.left.detail}`
        })
      )
    // UTF-16 length bounds the UTF-8 length from below, so only long lines need counting.
    if (text.length * 3 > MAX_PAYLOAD && Buffer.byteLength(text, "utf8") > MAX_PAYLOAD)
      return Either.left(
        new JournalInvalidRequest({
          reason: `event ${firstPosition + i} encodes to ${Buffer.byteLength(text, "utf8")} bytes (max ${MAX_PAYLOAD})`
        })
      )
    texts.push(text)
    checkedEvents.push(checked.right)
  }
  return Either.right({ texts, events: checkedEvents })
}

export interface Framed {
  readonly bytes: Uint8Array
  /** Each record's size in bytes (header included). */
  readonly sizes: ReadonlyArray<number>
}

/** Frames trace lines as consecutive records in one buffer. */
export const frame = (texts: ReadonlyArray<string>): Framed => {
  const sizes: Array<number> = []
  let total = 0
  for (const text of texts) {
    const size = HEADER_BYTES + Buffer.byteLength(text, "utf8")
    sizes.push(size)
    total += size
  }
  const out = Buffer.allocUnsafe(total)
  let at = 0
  for (let i = 0; i < texts.length; i++) {
    const size = sizes[i]!
    out.write(texts[i]!, at + HEADER_BYTES, "utf8")
    out.writeUInt32LE(size - HEADER_BYTES, at)
    out.writeUInt32LE(crc32c(out.subarray(at + HEADER_BYTES, at + size)), at + 4)
    at += size
  }
  return { bytes: out, sizes }
}

/** Decodes a payload whose CRC matched; the reason when it is no event. */
export const decodePayload = (payload: Uint8Array, position: number): Either.Either<Event.Event, string> => {
  let text: string
  try {
    text = decoder.decode(payload)
  } catch {
    return Either.left("payload is not UTF-8")
  }
  return Either.mapLeft(Trace.decodeEvent(text, position + 1), (e) => `undecodable event: ${e.detail}`)
}

/** `from` must be a position the journal has reached. */
export const checkFrom = (from: number, position: number): JournalInvalidRequest | undefined =>
  Number.isSafeInteger(from) && from >= 0 && from <= position
    ? undefined
    : new JournalInvalidRequest({
        reason: `cannot read from position ${from}: the journal holds ${position} events`
      })

export const checkSnapshotPosition = (at: number, position: number): JournalInvalidRequest | undefined =>
  Number.isSafeInteger(at) && at >= 0 && at <= position
    ? undefined
    : new JournalInvalidRequest({
        reason: `cannot save a snapshot at position ${at}: the journal holds ${position} durable events`
      })

// ---------------------------------------------------------------------------
// Parsing one record out of a buffer.

export type Parsed =
  | { readonly _tag: "Record"; readonly payload: Uint8Array; readonly size: number; readonly crc: number }
  /** More bytes are needed: `need` from the record's start. */
  | { readonly _tag: "Short"; readonly need: number }
  | { readonly _tag: "Bad"; readonly reason: string; readonly size: number }

/**
 * Parses the record at `at` in `buf` (holding bytes up to `buf.length`). A record is
 * `Bad` when its length is implausible or its CRC does not match; `size` is then the
 * extent its header claims.
 */
export const parseAt = (buf: Uint8Array, at: number): Parsed => {
  const available = buf.length - at
  if (available < HEADER_BYTES) return { _tag: "Short", need: HEADER_BYTES }
  const view = new DataView(buf.buffer, buf.byteOffset + at, HEADER_BYTES)
  const length = view.getUint32(0, true)
  const crc = view.getUint32(4, true)
  const size = HEADER_BYTES + length
  if (length < MIN_PAYLOAD || length > MAX_PAYLOAD)
    return { _tag: "Bad", reason: `implausible payload length ${length}`, size }
  if (available < size) return { _tag: "Short", need: size }
  const payload = buf.subarray(at + HEADER_BYTES, at + size)
  if (crc32c(payload) !== crc) return { _tag: "Bad", reason: "CRC32C mismatch", size }
  return { _tag: "Record", payload, size, crc }
}

/** Whether a whole, checked, decodable record starts at `at` (used to tell a torn tail from damage). */
export const isValidRecordAt = (buf: Uint8Array, at: number): boolean => {
  const parsed = parseAt(buf, at)
  return parsed._tag === "Record" && Either.isRight(decodePayload(parsed.payload, 0))
}

// ---------------------------------------------------------------------------
// The snapshot file: `{ position, snapshot }` as JSON.

export const SnapshotFile = Schema.Struct({ position: Event.Count, snapshot: State.Snapshot })

/**
 * Where in the log the entry after a snapshot's position starts (`offset`), with the
 * record before it (`previous`, its start, and `crc32c`, the CRC its header holds), so
 * opening can scan from there instead of from the log's start. `check` is the CRC32C of
 * `[position, offset, previous, crc32c]` as JSON: it ties the anchor to the snapshot's
 * position, so an anchor damaged or moved to another record reads as unusable.
 * Only the file layer writes it, only for positions above 0; it is a hint, checked
 * against the log on open (docs/adapters.md).
 */
export interface LogAnchor {
  readonly offset: number
  readonly previous: number
  readonly crc32c: number
}

const anchorCheck = (position: number, anchor: LogAnchor): number =>
  crc32c(Buffer.from(JSON.stringify([position, anchor.offset, anchor.previous, anchor.crc32c]), "utf8"))

const isU32 = (v: unknown): v is number => Event.isCount(v) && v <= 0xffffffff

/**
 * The snapshot file's `log` field: the anchor, or why it cannot be used (`undefined`
 * when there is none: a snapshot at position 0, or one written before anchors).
 */
export const decodeLogAnchor = (
  position: number,
  field: unknown
):
  | { readonly _tag: "Anchor"; readonly anchor: LogAnchor }
  | { readonly _tag: "Unusable"; readonly reason: string }
  | undefined => {
  if (field === undefined) return undefined
  if (typeof field !== "object" || field === null || Array.isArray(field))
    return { _tag: "Unusable", reason: "its log field is not an object" }
  const { offset, previous, crc32c: crc, check } = field as Record<string, unknown>
  if (!Event.isCount(offset) || !Event.isCount(previous) || !isU32(crc) || !isU32(check))
    return {
      _tag: "Unusable",
      reason: "its log field does not hold offset, previous, crc32c and check as counts"
    }
  if (position === 0 || previous + HEADER_BYTES + MIN_PAYLOAD > offset)
    return {
      _tag: "Unusable",
      reason: `its log field (previous ${previous}, offset ${offset}) cannot be at position ${position}`
    }
  const anchor: LogAnchor = { offset, previous, crc32c: crc }
  if (anchorCheck(position, anchor) !== check)
    return { _tag: "Unusable", reason: "its log field's check does not match" }
  return { _tag: "Anchor", anchor }
}

/**
 * A snapshot's encoded form is its own shape (numbers, literals, arrays), so it is
 * written as JSON without a Schema pass: with thousands of records in flight that pass
 * took tens of milliseconds on the journal stage. Loading decodes with the Schema.
 */
export const encodeSnapshotFile = (
  saved: SavedSnapshot,
  anchor?: LogAnchor
): Either.Either<string, JournalInvalidRequest> =>
  Number.isSafeInteger(saved.position) && saved.position >= 0
    ? Either.right(
        JSON.stringify(
          anchor === undefined || saved.position === 0
            ? { position: saved.position, snapshot: saved.snapshot }
            : {
                position: saved.position,
                log: { ...anchor, check: anchorCheck(saved.position, anchor) },
                snapshot: saved.snapshot
              }
        )
      )
    : Either.left(new JournalInvalidRequest({ reason: `snapshot position ${saved.position} is not a count` }))

export const decodeSnapshotFile = (
  text: string,
  file: string
): Either.Either<SavedSnapshot, JournalCorrupt> => Either.map(decodeSnapshotJson(text, file), (d) => d.saved)

/** The snapshot file, and its `log` field as it stands (read by `decodeLogAnchor`). */
export const decodeSnapshotJson = (
  text: string,
  file: string
): Either.Either<{ readonly saved: SavedSnapshot; readonly log: unknown }, JournalCorrupt> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return Either.left(
      new JournalCorrupt({ file, offset: 0, reason: `snapshot is not JSON: ${(e as Error).message}` })
    )
  }
  return Either.map(
    Either.mapLeft(
      Schema.decodeUnknownEither(SnapshotFile)(json),
      (e) => new JournalCorrupt({ file, offset: 0, reason: `snapshot does not decode: ${e.message}` })
    ),
    // The anchor is a hint beside the snapshot: its damage never makes the snapshot unreadable.
    (saved) => ({ saved, log: (json as { readonly log?: unknown }).log })
  )
}

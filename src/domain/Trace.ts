/**
 * The trace codec (design §5): JSON Lines, a header line then one event per line.
 * Decoding is streaming and line-numbered; every failure is a `TraceError` value.
 * Unknown fields are ignored; unknown `type`s are an error.
 *
 * Over 600 lines on purpose: it is the schema of every event kind of the trace contract
 * (design §5) in one place, so the contract reads as one document.
 */
import { Data, Either, ParseResult, Schema } from "effect"
import { Initial } from "./Config.js"
import * as Event from "./Event.js"
import * as Geometry from "./Geometry.js"
import { decodeFlat } from "./internal/traceFlat.js"

export const Header = Schema.Struct({
  type: Schema.Literal("header"),
  /**
   * 1: the events of design §5; 2: also checksum-based resync (`BlockCompared`,
   * `BlockMatched`, `BlockMismatched`, `BlockDiffered`); 3: also runs (`RunCompared`, `RunMatched`).
   */
  version: Schema.Literal(1, 2, 3),
  blockSize: Event.Count,
  blockCount: Event.Count,
  initial: Initial
})
export type Header = typeof Header.Type

export type TraceErrorKind =
  | "line-too-long"
  | "bad-json"
  | "not-an-object"
  | "missing-header"
  | "bad-header"
  | "unknown-type"
  | "missing-field"
  | "wrong-type"

export class TraceError extends Data.TaggedError("TraceError")<{
  readonly line: number
  readonly kind: TraceErrorKind
  readonly detail: string
  /** The offending line, cut to a readable length. */
  readonly text: string
  /** Byte offset of the offending line's start in the stream (set for `line-too-long`). */
  readonly offset?: number
}> {
  override get message() {
    return `line ${this.line}: ${this.kind}: ${this.detail}`
  }
}

const excerpt = (text: string) => (text.length > 200 ? `${text.slice(0, 200)}…` : text)

/**
 * The longest line a reader accepts by default: 1 MiB of UTF-8, not counting its line
 * end. An event line is a few hundred bytes; the cap keeps a reader's memory bounded
 * whatever it is fed (a file without newlines, `/dev/zero`).
 */
export const DEFAULT_MAX_LINE_BYTES = 1 << 20

export interface ReadOptions {
  /** Lines longer than this many bytes (not counting `\n` / `\r\n`) are refused (default 1 MiB). */
  readonly maxLineBytes?: number | undefined
}

const maxLineBytesOf = (options: ReadOptions | undefined): number => {
  const max = options?.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES
  if (!Number.isSafeInteger(max) || max < 1)
    throw new RangeError(`maxLineBytes must be a positive integer, got ${max}`)
  return max
}

const lineTooLong = (line: number, offset: number, max: number, head: string): TraceError =>
  new TraceError({
    line,
    kind: "line-too-long",
    detail: `the line starting at byte ${offset} is longer than ${max} bytes`,
    text: excerpt(head),
    offset
  })

/** UTF-8 length of a string (lone surrogates count 3, as `TextEncoder` writes U+FFFD). */
const utf8Length = (text: string): number => {
  let n = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x80) n += 1
    else if (c < 0x800) n += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4
        i++
      } else n += 3
    } else n += 3
  }
  return n
}

/**
 * The header line; `version` 1 unless given. Write the oldest version that has every
 * event type the trace holds (`versionFor`), so a version 1 checker reads what it can.
 */
export const encodeHeader = (
  header: Omit<Header, "type" | "version"> & { readonly version?: Event.TraceVersion | undefined }
): string =>
  JSON.stringify({
    type: "header",
    version: header.version ?? 1,
    blockSize: header.blockSize,
    blockCount: header.blockCount,
    initial: header.initial
  })

/** The oldest trace version that has every one of these events. */
export const versionFor = (events: Iterable<Event.Event>): Event.TraceVersion => {
  let version: Event.TraceVersion = 1
  for (const e of events) {
    const v = Event.versionOfEvent(e)
    if (v > version) version = v
    if (version === Event.latestTraceVersion) break
  }
  return version
}

/** One event as its trace line (field order as in design §5). */
export const encodeEvent = (event: Event.Event): string => JSON.stringify(event)

const parseJson = (text: string, line: number): Either.Either<Record<string, unknown>, TraceError> => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    return Either.left(
      new TraceError({ line, kind: "bad-json", detail: (e as Error).message, text: excerpt(text) })
    )
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return Either.left(
      new TraceError({
        line,
        kind: "not-an-object",
        detail: "each line must be a JSON object",
        text: excerpt(text)
      })
    )
  return Either.right(value as Record<string, unknown>)
}

/** Turns a schema failure into the first problem, said plainly with its field. */
const explain = (error: ParseResult.ParseError, line: number, text: string, what: string): TraceError => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const first = issues[0]
  const field = first?.path.join(".") ?? ""
  const missing = first?._tag === "Missing"
  return new TraceError({
    line,
    kind: what === "header" ? "bad-header" : missing ? "missing-field" : "wrong-type",
    detail: missing
      ? `${what}: missing field "${field}"`
      : `${what}: field "${field}" ${first?.message ?? "is invalid"} (got ${JSON.stringify(
          first === undefined
            ? undefined
            : field.split(".").reduce<unknown>((o, k) => (o as never)?.[k], JSON.parse(text))
        )})`,
    text: excerpt(text)
  })
}

export const decodeHeader = (text: string, line = 1): Either.Either<Header, TraceError> =>
  Either.flatMap(parseJson(text, line), (obj) => {
    if (obj.type !== "header")
      return Either.left(
        new TraceError({
          line,
          kind: "missing-header",
          detail: 'the first line must be the header ({"type":"header","version":1,...})',
          text: excerpt(text)
        })
      )
    return Either.flatMap(
      Either.mapLeft(Schema.decodeUnknownEither(Header)(obj), (e) => explain(e, line, text, "header")),
      (header) =>
        Either.mapLeft(
          Geometry.make(header.blockSize, header.blockCount),
          (e) => new TraceError({ line, kind: "bad-header", detail: e.message, text: excerpt(text) })
        ).pipe(Either.map(() => header))
    )
  })

// Fast path: the fields of each type and their kind, checked by hand; the schema explains failures.
type FieldKind = "count" | "string" | "reason" | "blocks" | "ids" | "runCount"
const fields: { readonly [K in Event.EventType]: ReadonlyArray<readonly [string, FieldKind]> } = {
  WriteStreamed: [
    ["seq", "count"],
    ["offset", "count"],
    ["length", "count"]
  ],
  WriteTracked: [
    ["offset", "count"],
    ["length", "count"]
  ],
  Acked: [["seq", "count"]],
  LinkLost: [["reason", "string"]],
  LinkRestored: [["receiverSeq", "count"]],
  ResyncActivated: [
    ["epoch", "count"],
    ["reason", "reason"]
  ],
  ResyncBegun: [
    ["epoch", "count"],
    ["seq", "count"]
  ],
  PassStarted: [
    ["epoch", "count"],
    ["blocks", "count"]
  ],
  BlockSent: [
    ["seq", "count"],
    ["block", "count"]
  ],
  SyncActivated: [
    ["epoch", "count"],
    ["seq", "count"]
  ],
  DiscontinuityReported: [["expected", "count"]],
  BlockCompared: [
    ["id", "count"],
    ["block", "count"]
  ],
  BlockMatched: [
    ["id", "count"],
    ["block", "count"]
  ],
  BlockMismatched: [
    ["id", "count"],
    ["block", "count"]
  ],
  BlockDiffered: [["block", "count"]],
  RunCompared: [
    ["id", "count"],
    ["blocks", "blocks"]
  ],
  RunMatched: [
    ["id", "count"],
    ["count", "runCount"],
    ["except", "ids"]
  ]
}
const resyncReasons: ReadonlySet<unknown> = new Set(Event.ResyncReason.literals)

const fieldOk = (value: unknown, kind: FieldKind): boolean => {
  switch (kind) {
    case "count":
      return typeof value === "number" && Number.isSafeInteger(value) && value >= 0
    case "string":
      return typeof value === "string" && value.length > 0
    case "reason":
      return resyncReasons.has(value)
    case "runCount":
      return fieldOk(value, "count") && (value as number) > 0 && (value as number) <= Event.MAX_RUN_BLOCKS
    case "blocks":
    case "ids": {
      if (!Array.isArray(value) || value.length > Event.MAX_RUN_BLOCKS) return false
      if (kind === "blocks" && value.length === 0) return false
      for (let k = 0; k < value.length; k++)
        if (!fieldOk(value[k], "count") || (k > 0 && value[k] <= value[k - 1])) return false
      return true
    }
  }
}

/** The rule across fields the per-field checks cannot see: a run's `except` lies in the run. */
const fieldsAgree = (event: Record<string, unknown>): boolean => {
  if (event.type !== "RunMatched") return true
  const id = event.id as number
  const except = event.except as ReadonlyArray<number>
  return (
    except.length === 0 || (except[0]! >= id && except[except.length - 1]! < id + (event.count as number))
  )
}

/**
 * Whether `event` has exactly the fields of its type, each in range: then its encoded
 * line decodes back to an equal event, and the journal can skip the round trip. The
 * answer is only yes or no; `decodeEvent` explains a no.
 */
export const isWellFormedEvent = (event: Event.Event): boolean => {
  const type = (event as { readonly type: unknown }).type
  if (typeof type !== "string" || !Object.hasOwn(fields, type)) return false
  const spec = fields[type as Event.EventType]
  let keys = 0
  for (const key in event) if (Object.hasOwn(event, key)) keys++
  if (keys !== spec.length + 1) return false
  const record = event as unknown as Record<string, unknown>
  for (const [name, kind] of spec)
    if (!Object.hasOwn(record, name) || !fieldOk(record[name], kind)) return false
  return fieldsAgree(record)
}

const knownIn = (version: Event.TraceVersion): string =>
  (version === 1
    ? Event.eventTypesV1
    : version === 2
      ? [...Event.eventTypesV1, ...Event.comparisonEventTypes]
      : Event.eventTypes
  ).join(", ")

/**
 * Decodes one event line (`line` is its 1-based number in the trace) of a trace of
 * `version` (default: the newest). A type that only a later version has is unknown.
 */
export const decodeEvent = (
  text: string,
  line: number,
  version: Event.TraceVersion = Event.latestTraceVersion
): Either.Either<Event.Event, TraceError> =>
  Either.flatMap(parseJson(text, line), (obj) => {
    const type = obj.type
    if (typeof type !== "string" || !Object.hasOwn(fields, type))
      return Either.left(
        new TraceError({
          line,
          kind: type === undefined ? "missing-field" : "unknown-type",
          detail:
            type === undefined
              ? 'missing field "type"'
              : `unknown event type ${JSON.stringify(type)} (known: ${knownIn(version)})`,
          text: excerpt(text)
        })
      )
    if (Event.versionOf(type as Event.EventType) > version)
      return Either.left(
        new TraceError({
          line,
          kind: "unknown-type",
          detail: `event type ${JSON.stringify(type)} needs trace version ${Event.versionOf(type as Event.EventType)}, but the header says version ${version} (known: ${knownIn(version)})`,
          text: excerpt(text)
        })
      )
    const spec = fields[type as Event.EventType]
    const event: Record<string, unknown> = { type }
    for (const [name, kind] of spec) {
      const value = obj[name]
      if (!fieldOk(value, kind))
        return Either.mapLeft(
          Schema.decodeUnknownEither(Event.schemaOf[type as Event.EventType] as Schema.Schema<Event.Event>)(
            obj
          ),
          (e) => explain(e, line, text, type)
        )
      event[name] = value
    }
    if (!fieldsAgree(event))
      return Either.mapLeft(
        Schema.decodeUnknownEither(Event.schemaOf[type as Event.EventType] as Schema.Schema<Event.Event>)(
          obj
        ),
        (e) => explain(e, line, text, type)
      )
    if (Event.versionOfEvent(event as Event.Event) > version)
      return Either.left(
        new TraceError({
          line,
          kind: "wrong-type",
          detail: `reason ${JSON.stringify(obj.reason)} needs trace version 2, but the header says version ${version}`,
          text: excerpt(text)
        })
      )
    return Either.right(event as Event.Event)
  })

/**
 * Splits a stream of text chunks into lines, carrying a partial last line over.
 * Accepts `\n` and `\r\n`; a final line without a newline is returned by `end`.
 * A line longer than `maxLineBytes` (UTF-8) stops it: the lines before it are
 * returned, and `overflow` says which line it is and where it starts.
 */
export class LineSplitter {
  private carry = ""
  private readonly max: number
  /** Lines returned so far, and the UTF-8 bytes they took (line ends included). */
  private lines = 0
  private offset = 0
  overflow: TraceError | undefined = undefined
  constructor(options?: ReadOptions) {
    this.max = maxLineBytesOf(options)
  }
  push(chunk: string): Array<string> {
    if (this.overflow !== undefined) return []
    const parts = (this.carry + chunk).split("\n")
    const carry = parts.pop() ?? ""
    const out: Array<string> = []
    for (const raw of parts) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw
      if (!this.fits(line, line)) return out
      out.push(line)
      this.lines++
      this.offset += utf8Length(raw) + 1
    }
    // The partial line, bounded too: it might never end.
    if (!this.fits(carry.endsWith("\r") ? carry.slice(0, -1) : carry, carry)) return out
    this.carry = carry
    return out
  }
  end(): Array<string> {
    if (this.overflow !== undefined) return []
    const rest = this.carry.endsWith("\r") ? this.carry.slice(0, -1) : this.carry
    this.carry = ""
    return rest.length > 0 ? [rest] : []
  }
  private fits(line: string, raw: string): boolean {
    // A UTF-16 unit is at least one UTF-8 byte: only short enough lines need counting.
    if (line.length <= this.max && (line.length * 3 <= this.max || utf8Length(line) <= this.max)) return true
    this.overflow = lineTooLong(this.lines + 1, this.offset, this.max, raw.slice(0, 200))
    this.carry = ""
    return false
  }
}

export type Decoded =
  | { readonly _tag: "Header"; readonly line: number; readonly header: Header }
  | { readonly _tag: "Event"; readonly line: number; readonly event: Event.Event }

/**
 * Streaming decoder: feed chunks, get decoded lines back in order. The first
 * non-blank line must be the header; blank lines are skipped. A line longer than
 * `maxLineBytes` is a `line-too-long` error.
 */
export class Decoder {
  private readonly splitter: LineSplitter
  private lineNo = 0
  private header: Header | undefined
  private overflowReported = false
  constructor(options?: ReadOptions) {
    this.splitter = new LineSplitter(options)
  }
  /** Decodes the complete lines in `chunk`; stops at the first error (it is the last element). */
  push(chunk: string): Array<Either.Either<Decoded, TraceError>> {
    return this.overflowed(this.decodeLines(this.splitter.push(chunk)))
  }
  end(): Array<Either.Either<Decoded, TraceError>> {
    const out = this.overflowed(this.decodeLines(this.splitter.end()))
    if (this.header === undefined && !out.some(Either.isLeft))
      out.push(
        Either.left(
          new TraceError({
            line: this.lineNo,
            kind: "missing-header",
            detail: "the trace is empty",
            text: ""
          })
        )
      )
    return out
  }
  /** The splitter's `line-too-long`, after the lines before it (unless one of them failed). */
  private overflowed(
    out: Array<Either.Either<Decoded, TraceError>>
  ): Array<Either.Either<Decoded, TraceError>> {
    const overflow = this.splitter.overflow
    if (overflow !== undefined && !this.overflowReported && !out.some(Either.isLeft)) {
      this.overflowReported = true
      out.push(Either.left(overflow))
    }
    return out
  }
  private decodeLines(lines: ReadonlyArray<string>): Array<Either.Either<Decoded, TraceError>> {
    const out: Array<Either.Either<Decoded, TraceError>> = []
    for (const text of lines) {
      const line = ++this.lineNo
      if (text.trim().length === 0) continue
      if (this.header === undefined) {
        const header = decodeHeader(text, line)
        if (Either.isLeft(header)) {
          out.push(Either.left(header.left))
          return out
        }
        this.header = header.right
        out.push(Either.right({ _tag: "Header", line, header: header.right }))
        continue
      }
      const event = decodeEvent(text, line, this.header.version)
      if (Either.isLeft(event)) {
        out.push(Either.left(event.left))
        return out
      }
      out.push(Either.right({ _tag: "Event", line, event: event.right }))
    }
    return out
  }
}

// ---------------------------------------------------------------------------
// The byte path, for long traces (`cdp-sync check-trace` runs at millions of lines
// per second). Lines are split and scanned as UTF-8 bytes, without decoding them
// to strings: a line that is a flat JSON object (strings without escapes or
// control characters, numbers, literals; known fields in ASCII) becomes its event
// directly. It only ever decides a *success*, and only one `decodeEvent` decides
// identically (same JSON grammar, same numbers, the last duplicate key wins,
// unknown fields ignored): every other line, errors included, is decoded to text
// and goes through `decodeEvent` (test/conformance/trace-bytes.test.ts checks the
// two agree).

// The flat-object scanner is internal/traceFlat.ts.

// `ignoreBOM`: keep a U+FEFF in the text, as decoding the whole stream would.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true })

/**
 * Decodes the event line `bytes[from, to)` (UTF-8): the event, or the error. The
 * same result as `decodeEvent` on the line's text, faster, and without an `Either`.
 */
export const decodeEventBytes = (
  bytes: Uint8Array,
  line: number,
  from = 0,
  to = bytes.length,
  version: Event.TraceVersion = Event.latestTraceVersion
): Event.Event | TraceError => {
  // The flat scanner knows the version 1 types only (and reasons of every version: a later one goes the long way).
  const event = decodeFlat(bytes, from, to)
  if (event !== undefined && Event.versionOfEvent(event) <= version) return event
  const general = decodeEvent(utf8.decode(bytes.subarray(from, to)), line, version)
  return Either.isRight(general) ? general.right : general.left
}

/**
 * A push decoder for long traces (`cdp-sync check-trace`): feed UTF-8 chunks, and
 * it calls the visitor for the header and each event, in order, allocating nothing
 * per line beyond the event. The visitor returns `undefined` to go on, or a value
 * to stop with. The same lines as `Decoder`: `\n` or `\r\n`, blank lines skipped,
 * the first non-blank line must be the header, a line longer than `maxLineBytes` is
 * a `line-too-long` error (found as soon as its bytes exceed it: memory stays bounded
 * by the cap and the chunk size whatever the input, a stream without newlines too).
 */
export interface Visitor<R> {
  readonly header: (header: Header, line: number) => R | undefined
  readonly event: (event: Event.Event, line: number) => R | undefined
}

const empty = new Uint8Array(0)

export class StreamDecoder<R> {
  /** A partial last line, carried over to the next chunk: `carry[0, carried)`, grown by doubling. */
  private carry: Uint8Array = empty
  private carried = 0
  /** Stream offset of the carried line's start, and of the chunk being pushed. */
  private carryAt = 0
  private consumed = 0
  private lineNo = 0
  private seenHeader = false
  private version: Event.TraceVersion = 1
  private readonly max: number
  constructor(
    private readonly visitor: Visitor<R>,
    options?: ReadOptions
  ) {
    this.max = maxLineBytesOf(options)
  }

  /** Decodes the complete lines of `chunk`: `undefined` to go on, else the error or the visitor's value that stopped it. */
  push(chunk: Uint8Array): R | TraceError | undefined {
    const at = this.consumed
    this.consumed += chunk.length
    let start = 0
    if (this.carried > 0) {
      // Only the line that straddles the boundary is copied.
      const nl = chunk.indexOf(10)
      const end = nl < 0 ? chunk.length : nl
      const cr = end > 0 ? chunk[end - 1] === 13 : this.carry[this.carried - 1] === 13
      const length = this.carried + end - (cr ? 1 : 0)
      // Without its newline yet, a trailing "\r" may still be its line end.
      if (length > this.max) return this.tooLong(this.carry, 0, this.carryAt)
      this.append(chunk.subarray(0, end))
      if (nl < 0) return undefined
      const line = this.carry.subarray(0, this.carried)
      this.carried = 0
      const stop = this.line(line, 0, trimCr(line, 0, line.length))
      if (stop !== undefined) return stop
      start = nl + 1
    }
    for (let nl = chunk.indexOf(10, start); nl >= 0; nl = chunk.indexOf(10, start)) {
      const to = trimCr(chunk, start, nl)
      if (to - start > this.max) return this.tooLong(chunk, start, at + start)
      const stop = this.line(chunk, start, to)
      start = nl + 1
      if (stop !== undefined) return stop
    }
    if (start < chunk.length) {
      if (trimCr(chunk, start, chunk.length) - start > this.max) return this.tooLong(chunk, start, at + start)
      this.carryAt = at + start
      this.append(chunk.subarray(start))
    }
    return undefined
  }

  /** Counts `bytes` the caller dropped from the stream before the next chunk (a byte-order mark), for offsets. */
  skipped(bytes: number): void {
    this.consumed += bytes
  }

  /** Decodes a last line without a newline; an error if there was no header at all. */
  end(): R | TraceError | undefined {
    const rest = this.carry.subarray(0, this.carried)
    this.carry = empty
    this.carried = 0
    if (rest.length > 0) {
      const stop = this.line(rest, 0, trimCr(rest, 0, rest.length))
      if (stop !== undefined) return stop
    }
    if (!this.seenHeader)
      return new TraceError({
        line: this.lineNo,
        kind: "missing-header",
        detail: "the trace is empty",
        text: ""
      })
    return undefined
  }

  /** The line `b[from, to)`. */
  private line(b: Uint8Array, from: number, to: number): R | TraceError | undefined {
    const line = ++this.lineNo
    // An event line starts with "{": only other lines can be blank.
    if (b[from] !== 123 && utf8.decode(b.subarray(from, to)).trim().length === 0) return undefined
    if (!this.seenHeader) {
      const header = decodeHeader(utf8.decode(b.subarray(from, to)), line)
      if (Either.isLeft(header)) return header.left
      this.seenHeader = true
      this.version = header.right.version
      return this.visitor.header(header.right, line)
    }
    const event = decodeEventBytes(b, line, from, to, this.version)
    return event instanceof TraceError ? event : this.visitor.event(event, line)
  }

  private append(bytes: Uint8Array): void {
    const need = this.carried + bytes.length
    if (need > this.carry.length) {
      // Doubling: a long line in small chunks is copied O(length) times in all, not O(length²).
      const grown = new Uint8Array(Math.max(need, Math.min(2 * this.carry.length, this.max + 2), 256))
      grown.set(this.carry.subarray(0, this.carried))
      this.carry = grown
    }
    this.carry.set(bytes, this.carried)
    this.carried = need
  }

  /** The line starting at `b[from]` (stream offset `offset`) is over the cap: refused, and nothing kept. */
  private tooLong(b: Uint8Array, from: number, offset: number): TraceError {
    const head = utf8.decode(
      b.subarray(from, Math.min(from + 200, from === 0 && b === this.carry ? this.carried : b.length))
    )
    this.carry = empty
    this.carried = 0
    return lineTooLong(this.lineNo + 1, offset, this.max, head)
  }
}

const trimCr = (b: Uint8Array, from: number, to: number): number =>
  to > from && b[to - 1] === 13 ? to - 1 : to

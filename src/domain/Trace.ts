/**
 * The trace codec (design §5): JSON Lines, a header line then one event per line.
 * Decoding is streaming and line-numbered; every failure is a `TraceError` value.
 * Unknown fields are ignored; unknown `type`s are an error.
 */
import { Data, Either, ParseResult, Schema } from "effect"
import { Initial } from "./Config.js"
import * as Event from "./Event.js"
import * as Geometry from "./Geometry.js"

export const Header = Schema.Struct({
  type: Schema.Literal("header"),
  version: Schema.Literal(1),
  blockSize: Event.Count,
  blockCount: Event.Count,
  initial: Initial
})
export type Header = typeof Header.Type

export type TraceErrorKind =
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
}> {
  override get message() {
    return `line ${this.line}: ${this.kind}: ${this.detail}`
  }
}

const excerpt = (text: string) => (text.length > 200 ? `${text.slice(0, 200)}…` : text)

export const encodeHeader = (header: Omit<Header, "type" | "version">): string =>
  JSON.stringify({
    type: "header",
    version: 1,
    blockSize: header.blockSize,
    blockCount: header.blockCount,
    initial: header.initial
  })

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
type FieldKind = "count" | "string" | "reason"
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
  DiscontinuityReported: [["expected", "count"]]
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
  }
}

/** Decodes one event line (`line` is its 1-based number in the trace). */
export const decodeEvent = (text: string, line: number): Either.Either<Event.Event, TraceError> =>
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
              : `unknown event type ${JSON.stringify(type)} (known: ${Event.eventTypes.join(", ")})`,
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
    return Either.right(event as Event.Event)
  })

/**
 * Splits a stream of text chunks into lines, carrying a partial last line over.
 * Accepts `\n` and `\r\n`; a final line without a newline is returned by `end`.
 */
export class LineSplitter {
  private carry = ""
  push(chunk: string): Array<string> {
    const text = this.carry + chunk
    const lines = text.split("\n")
    this.carry = lines.pop() ?? ""
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i]!
      if (l.endsWith("\r")) lines[i] = l.slice(0, -1)
    }
    return lines
  }
  end(): Array<string> {
    const rest = this.carry.endsWith("\r") ? this.carry.slice(0, -1) : this.carry
    this.carry = ""
    return rest.length > 0 ? [rest] : []
  }
}

export type Decoded =
  | { readonly _tag: "Header"; readonly line: number; readonly header: Header }
  | { readonly _tag: "Event"; readonly line: number; readonly event: Event.Event }

/**
 * Streaming decoder: feed chunks, get decoded lines back in order. The first
 * non-blank line must be the header; blank lines are skipped.
 */
export class Decoder {
  private readonly splitter = new LineSplitter()
  private lineNo = 0
  private header: Header | undefined
  /** Decodes the complete lines in `chunk`; stops at the first error (it is the last element). */
  push(chunk: string): Array<Either.Either<Decoded, TraceError>> {
    return this.decodeLines(this.splitter.push(chunk))
  }
  end(): Array<Either.Either<Decoded, TraceError>> {
    const out = this.decodeLines(this.splitter.end())
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
      const event = decodeEvent(text, line)
      if (Either.isLeft(event)) {
        out.push(Either.left(event.left))
        return out
      }
      out.push(Either.right({ _tag: "Event", line, event: event.right }))
    }
    return out
  }
}

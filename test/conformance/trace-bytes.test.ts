/**
 * The byte path of the trace codec (what `cdp-sync check-trace` runs) agrees with
 * the general text path on every line: the same event, or the same error. And the
 * streaming byte decoder sees the same lines as the text `Decoder`, however the
 * input is cut into chunks.
 */
import { Either } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Event from "../../src/domain/Event.js"
import * as Trace from "../../src/domain/Trace.js"
import * as CheckTrace from "../../src/conformance/CheckTrace.js"
import { designExample } from "../support/fixtures.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { ignoreBOM: true })

type Outcome =
  | Event.Event
  | { readonly line: number; readonly kind: string; readonly detail: string; readonly text: string }

const plain = (r: Event.Event | Trace.TraceError): Outcome =>
  r instanceof Trace.TraceError ? { line: r.line, kind: r.kind, detail: r.detail, text: r.text } : r

/** The contract: decoding the bytes is decoding their text. */
const agree = (bytes: Uint8Array) => {
  const fast = plain(Trace.decodeEventBytes(bytes, 7))
  const general = Trace.decodeEvent(decoder.decode(bytes), 7)
  expect(fast).toEqual(plain(Either.isRight(general) ? general.right : general.left))
  // Key order too: the fast path builds the same objects.
  if (!(fast as { kind?: unknown }).kind && Either.isRight(general))
    expect(JSON.stringify(fast)).toBe(JSON.stringify(general.right))
}

const knownKeys = [
  "type",
  "seq",
  "offset",
  "length",
  "reason",
  "receiverSeq",
  "epoch",
  "blocks",
  "block",
  "expected"
]

/** JSON text of a value, with a chance of odd but valid spellings of numbers. */
const numberText = fc.oneof(
  fc.nat({ max: 5000 }).map(String),
  fc.constantFrom(
    "0",
    "-0",
    "1.0",
    "1e3",
    "1E+2",
    "2.5",
    "-1",
    "007",
    "1.",
    "-",
    "9007199254740991",
    "9007199254740993",
    "123456789012345678901234567890",
    "1e400",
    "0.0000001e7"
  ),
  fc
    .double()
    .filter(Number.isFinite)
    .map((d) => JSON.stringify(d))
)

const stringText = fc
  .oneof(
    fc.constantFrom(
      ...Event.eventTypes,
      ...Event.ResyncReason.literals,
      "",
      "header",
      "Acked ",
      "acked",
      "connection-lost"
    ),
    fc.string({ maxLength: 12, unit: "grapheme" }),
    fc.string({ maxLength: 6, unit: "binary" })
  )
  .map((s) => JSON.stringify(s))

const rawString = fc.constantFrom(
  '"a\\"b"',
  '"\\u0041cked"',
  '"Ac\\u006bed"',
  '"tab\there"',
  '"\\n"',
  '"é"',
  '"\u00e9"'
)

const valueText: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: numberText },
  { weight: 6, arbitrary: stringText },
  { weight: 1, arbitrary: rawString },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "true",
      "false",
      "null",
      "[]",
      "{}",
      '{"seq":1}',
      "[1,2]",
      "tru",
      "nul",
      "NaN",
      "Infinity"
    )
  }
)

const keyText = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...knownKeys).map((k) => JSON.stringify(k)) },
  { weight: 2, arbitrary: fc.string({ maxLength: 8 }).map((k) => JSON.stringify(k)) },
  { weight: 1, arbitrary: fc.constantFrom('"s\\u0065q"', '"typ\\u0065"', "seq", "'seq'") }
)

const ws = fc.constantFrom("", "", "", " ", "\t", "  ", "\r", "\n", "\u00a0")

/** A line that is mostly an event-like flat object, with every kind of deviation mixed in. */
const line = fc
  .tuple(
    fc.array(fc.tuple(ws, keyText, ws, fc.constantFrom(":", ":", ":", "=", ""), ws, valueText, ws), {
      maxLength: 6
    }),
    ws,
    ws,
    fc.constantFrom("{", "{", "{", "[", ""),
    fc.constantFrom("}", "}", "}", "]", "", "}}", "},"),
    fc.constantFrom(",", ",", ",", ", ", ";")
  )
  .map(
    ([fields, lead, tail, open, close, comma]) =>
      `${lead}${open}${fields.map((f) => f.join("")).join(comma)}${close}${tail}`
  )

/** A well-formed event with its fields shuffled and unknown ones added. */
const eventLine = fc
  .tuple(
    fc.constantFrom(...Event.eventTypes),
    fc.record({
      seq: fc.nat(),
      offset: fc.nat(),
      length: fc.nat(),
      reason: fc.constantFrom(...Event.ResyncReason.literals, "connection-lost", "ack-timeout"),
      receiverSeq: fc.nat(),
      epoch: fc.nat(),
      blocks: fc.nat(),
      block: fc.nat(),
      expected: fc.nat()
    }),
    fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
    fc.boolean()
  )
  .map(([type, fields, extra, extraFirst]) =>
    JSON.stringify(extraFirst ? { ...extra, type, ...fields } : { type, ...fields, ...extra })
  )

describe("the byte path agrees with the text path", () => {
  it("on arbitrary event-like lines (valid, odd and broken)", () => {
    fc.assert(
      fc.property(line, (text) => agree(encoder.encode(text))),
      { numRuns: 3000 }
    )
  })

  it("on well-formed events with unknown fields, in any order", () => {
    fc.assert(
      fc.property(eventLine, (text) => agree(encoder.encode(text))),
      { numRuns: 1000 }
    )
  })

  it("on arbitrary bytes, invalid UTF-8 included", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => agree(bytes)),
      { numRuns: 1000 }
    )
    fc.assert(
      fc.property(eventLine, fc.nat(), fc.integer({ min: 0, max: 255 }), (text, at, byte) => {
        const bytes = encoder.encode(text)
        bytes[at % bytes.length] = byte
        agree(bytes)
      }),
      { numRuns: 2000 }
    )
  })

  it("on the examples that matter", () => {
    for (const text of [
      '{"type":"Acked","seq":1}',
      '{"type":"Acked","seq":1,"seq":2}',
      '{"seq":1,"type":"Acked","type":"LinkLost","reason":"x"}',
      '{"type":"Acked","seq":1.0}',
      '{"type":"Acked","seq":1e0}',
      '{"type":"Acked","seq":-0}',
      '{"type":"Acked","seq":9007199254740992}',
      '{"type":"Acked","seq":01}',
      '{"type":"Acked","seq":1,}',
      '{"type":"Acked" "seq":1}',
      '{"type":"LinkLost","reason":""}',
      '{"type":"LinkLost","reason":"réseau"}',
      '{"type":"LinkLost","reason":"a\\"b"}',
      '{"type":"ResyncActivated","epoch":1,"reason":"congestion "}',
      ' { "type" : "BlockSent" , "seq" : 3 , "block" : 1 } ',
      '{"type":"BlockSent","seq":3,"block":1,"note":{"nested":[1,2,{"x":null}]}}',
      '{"type":"BlockSent","seq":3,"block":1}x',
      '{"type":"BlockSent","seq":3,"block":1}\u00a0',
      "{}",
      "",
      "{",
      '\uFEFF{"type":"Acked","seq":1}'
    ])
      agree(encoder.encode(text))
  })
})

describe("the streaming byte decoder", () => {
  /** The text decoder's results up to its first error (after one, a caller stops reading). */
  const viaText = (text: string) => {
    const d = new Trace.Decoder()
    const out: Array<unknown> = []
    for (const r of [...d.push(text), ...d.end()]) {
      if (Either.isLeft(r)) {
        out.push(plain(r.left))
        break
      }
      out.push(
        r.right._tag === "Header" ? { header: r.right.line } : { line: r.right.line, event: r.right.event }
      )
    }
    return out
  }
  const viaBytes = (bytes: Uint8Array, cuts: ReadonlyArray<number>) => {
    const out: Array<unknown> = []
    const d = new Trace.StreamDecoder<never>({
      header: (_h, line) => {
        out.push({ header: line })
        return undefined
      },
      event: (event, line) => {
        out.push({ line, event })
        return undefined
      }
    })
    let at = 0
    for (let i = 0; at < bytes.length; i++) {
      const n = cuts.length === 0 ? bytes.length : cuts[i % cuts.length]!
      const stop = d.push(bytes.subarray(at, at + n))
      at += n
      if (stop !== undefined) {
        out.push(plain(stop))
        return out
      }
    }
    const stop = d.end()
    if (stop !== undefined) out.push(plain(stop))
    return out
  }

  it("sees the same lines, events and first error as the text decoder, in any chunking", () => {
    const trace = fc
      .array(
        fc.oneof(
          { weight: 8, arbitrary: fc.constantFrom(...designExample.split("\n").slice(1)) },
          { weight: 1, arbitrary: line },
          { weight: 1, arbitrary: fc.constantFrom("", " ", "\r") }
        ),
        { maxLength: 20 }
      )
      .chain((events) =>
        fc.tuple(
          fc.constant(events),
          fc.constantFrom("\n", "\r\n"),
          fc.boolean(),
          fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 5 })
        )
      )
    fc.assert(
      fc.property(trace, ([events, eol, finalEol, cuts]) => {
        const text = [designExample.split("\n")[0]!, ...events].join(eol) + (finalEol ? eol : "")
        expect(viaBytes(encoder.encode(text), cuts)).toEqual(viaText(text))
      }),
      { numRuns: 1000 }
    )
  })

  it("reports an empty or blank trace as missing its header", () => {
    expect(viaBytes(encoder.encode(""), [])).toEqual(viaText(""))
    expect(viaBytes(encoder.encode("\n \n"), [1])).toEqual(viaText("\n \n"))
  })
})

describe("check-trace on text chunks", () => {
  async function* pieces(text: string, cuts: ReadonlyArray<number>): AsyncGenerator<string> {
    let at = 0
    for (let i = 0; at < text.length; i++) {
      const n = cuts[i % cuts.length]!
      yield text.slice(at, at + n)
      at += n
    }
  }

  it("gives the same outcome however the text is cut, even inside a surrogate pair", async () => {
    const trace = [
      designExample,
      '{"type":"LinkLost","reason":"lien 🚀 perdu","note":"😀"}',
      '{"type":"ResyncActivated","epoch":2,"reason":"interruption"}',
      '{"type":"LinkLost","reason":"🚀"}'
    ].join("\n")
    const whole = await CheckTrace.checkChunks(pieces(trace, [trace.length]), { quiescent: false })
    expect(whole).toMatchObject({
      valid: false,
      rule: "link-down",
      event: { type: "LinkLost", reason: "🚀" }
    })
    for (let size = 1; size <= 7; size++)
      expect(await CheckTrace.checkChunks(pieces(trace, [size]), { quiescent: false })).toEqual(whole)
  })
})

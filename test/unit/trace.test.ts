import { Either } from "effect"
import { describe, expect, it } from "vitest"
import * as Trace from "../../src/domain/Trace.js"

const header = '{"type":"header","version":1,"blockSize":65536,"blockCount":1024,"initial":"in-sync"}'

const errorOf = (text: string) => {
  const decoder = new Trace.Decoder()
  const out = [...decoder.push(text), ...decoder.end()]
  const bad = out.find(Either.isLeft)
  return bad === undefined ? undefined : bad.left
}

describe("trace codec", () => {
  it("decodes a header and events, ignoring unknown fields and CRLF", () => {
    const decoder = new Trace.Decoder()
    const out = [
      ...decoder.push(`${header}\r\n{"type":"Acked","seq":0,"note":"x"}\r\n`),
      ...decoder.push('{"type":"LinkLost","reason":"connection-lost"}'),
      ...decoder.end()
    ].map(Either.getOrThrow)
    expect(out.map((d) => d.line)).toEqual([1, 2, 3])
    expect(out[1]).toEqual({ _tag: "Event", line: 2, event: { type: "Acked", seq: 0 } })
  })

  it("names the line and the problem: bad JSON", () => {
    expect(errorOf(`${header}\n{"type":"Acked","seq":1\n`)).toMatchObject({ line: 2, kind: "bad-json" })
  })

  it("names the line and the problem: unknown type", () => {
    const e = errorOf(`${header}\n\n{"type":"Acked","seq":1}\n{"type":"Frobnicated"}\n`)
    expect(e).toMatchObject({ line: 4, kind: "unknown-type" })
    expect(e?.message).toContain('unknown event type "Frobnicated"')
  })

  it("names the line and the problem: missing field", () => {
    const e = errorOf(`${header}\n{"type":"BlockSent","seq":3}\n`)
    expect(e).toMatchObject({ line: 2, kind: "missing-field" })
    expect(e?.message).toContain('missing field "block"')
  })

  it("names the line and the problem: wrong type", () => {
    const e = errorOf(`${header}\n{"type":"WriteStreamed","seq":"1","offset":0,"length":4096}\n`)
    expect(e).toMatchObject({ line: 2, kind: "wrong-type" })
    expect(e?.message).toContain('field "seq"')
    expect(errorOf(`${header}\n{"type":"Acked","seq":-1}\n`)).toMatchObject({ kind: "wrong-type" })
    expect(errorOf(`${header}\n{"type":"Acked","seq":1.5}\n`)).toMatchObject({ kind: "wrong-type" })
    expect(errorOf(`${header}\n{"type":"ResyncActivated","epoch":1,"reason":"boredom"}\n`)).toMatchObject({
      kind: "wrong-type"
    })
    expect(errorOf(`${header}\n[1,2]\n`)).toMatchObject({ kind: "not-an-object" })
  })

  it("requires a valid header first", () => {
    expect(errorOf('{"type":"Acked","seq":1}\n')).toMatchObject({ line: 1, kind: "missing-header" })
    expect(
      errorOf('{"type":"header","version":4,"blockSize":65536,"blockCount":1,"initial":"in-sync"}')
    ).toMatchObject({
      kind: "bad-header"
    })
    expect(
      errorOf('{"type":"header","version":1,"blockSize":1000,"blockCount":1,"initial":"in-sync"}')
    ).toMatchObject({
      kind: "bad-header"
    })
    expect(errorOf("")).toMatchObject({ kind: "missing-header" })
  })

  it("splits lines across arbitrary chunk boundaries", () => {
    const text = `${header}\n{"type":"Acked","seq":0}\n{"type":"Acked","seq":0}`
    for (let size = 1; size < 20; size++) {
      const decoder = new Trace.Decoder()
      const out: Array<Trace.Decoded> = []
      for (let i = 0; i < text.length; i += size)
        out.push(...decoder.push(text.slice(i, i + size)).map(Either.getOrThrow))
      out.push(...decoder.end().map(Either.getOrThrow))
      expect(out.map((d) => d.line)).toEqual([1, 2, 3])
    }
  })
})

describe("line cap (check-trace reading /dev/zero reached 2 GB)", () => {
  it("the text decoder counts UTF-8 bytes: a line of exactly the cap passes, one byte more does not", () => {
    // "é" is 2 bytes, "😀" 4: the cap is on bytes, not on characters.
    // Longer than the header, so that the event line is the one at the cap.
    const event = (pad: string) => `{"type":"Acked","seq":0,"p":"${"x".repeat(header.length)}${pad}"}`
    const base = event("").length
    const decode = (pad: string, max: number) => {
      const decoder = new Trace.Decoder({ maxLineBytes: max })
      return [...decoder.push(`${header}\n${event(pad)}\n`), ...decoder.end()].find(Either.isLeft)?.left
    }
    expect(decode("éé😀", base + 8)).toBeUndefined()
    expect(decode("éé😀", base + 7)).toMatchObject({
      kind: "line-too-long",
      line: 2,
      offset: header.length + 1,
      detail: `the line starting at byte ${header.length + 1} is longer than ${base + 7} bytes`
    })
  })

  it("the text decoder stops a line that never ends once it passes the cap, and reports it once", () => {
    const decoder = new Trace.Decoder({ maxLineBytes: 1000 })
    expect(decoder.push(`${header}\n`).map(Either.isRight)).toEqual([true])
    const out: Array<Either.Either<Trace.Decoded, Trace.TraceError>> = []
    let pushes = 0
    while (out.length === 0 && pushes < 1000) {
      out.push(...decoder.push("\0".repeat(300)))
      pushes++
    }
    // 1 000 bytes fit in 3 pushes of 300 + 100 more; the fourth goes over.
    expect(pushes).toBe(4)
    expect(out).toEqual([
      Either.left(expect.objectContaining({ kind: "line-too-long", line: 2, offset: header.length + 1 }))
    ])
    expect([...decoder.push("more\n"), ...decoder.end()]).toEqual([])
  })

  it("the byte decoder stops a line that never ends once it passes the cap", () => {
    const decoder = new Trace.StreamDecoder<never>(
      { header: () => undefined, event: () => undefined },
      { maxLineBytes: 1000 }
    )
    const bytes = new TextEncoder().encode(`${header}\n`)
    expect(decoder.push(bytes)).toBeUndefined()
    let stop: unknown
    let pushes = 0
    while (stop === undefined && pushes < 1000) {
      stop = decoder.push(new Uint8Array(300))
      pushes++
    }
    expect(pushes).toBe(4)
    expect(stop).toMatchObject({ kind: "line-too-long", line: 2, offset: bytes.length })
  })

  it("refuses a cap that is not a positive integer", () => {
    expect(() => new Trace.Decoder({ maxLineBytes: 0 })).toThrow(RangeError)
    expect(
      () =>
        new Trace.StreamDecoder({ header: () => undefined, event: () => undefined }, { maxLineBytes: 1.5 })
    ).toThrow(RangeError)
  })
})

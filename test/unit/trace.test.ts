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
      errorOf('{"type":"header","version":2,"blockSize":65536,"blockCount":1,"initial":"in-sync"}')
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

/**
 * The wire codec, example by example: the header layout byte for byte, every error
 * reason, the u64 limits, and the stream helper.
 */
import { Chunk, Effect, Either, Exit, Stream } from "effect"
import { describe, expect, it } from "vitest"
import { crc32c } from "../../src/internal/crc32c.js"
import * as Wire from "../../src/protocol/Wire.js"

const setU32 = (b: Uint8Array, at: number, n: number) => new DataView(b.buffer, b.byteOffset).setUint32(at, n)
const getU32 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset).getUint32(at)

/** Recomputes the CRCs after a deliberate edit, so only the edited rule can object. */
const reseal = (bytes: Uint8Array): Uint8Array => {
  const payload = bytes.subarray(Wire.HEADER_BYTES)
  setU32(bytes, 32, payload.byteLength === 0 ? 0 : crc32c(payload))
  setU32(bytes, 36, crc32c(bytes.subarray(0, 36)))
  return bytes
}
const copy = (frame: Wire.Frame) => Uint8Array.from(Wire.encode(frame))
const withPayload = (kind: number, payload: Uint8Array) => {
  const bytes = new Uint8Array(Wire.HEADER_BYTES + payload.byteLength)
  bytes.set(Wire.encode({ _tag: "Ack", seq: 0 }).subarray(0, Wire.HEADER_BYTES))
  bytes[5] = kind
  setU32(bytes, 28, payload.byteLength)
  bytes.set(payload, Wire.HEADER_BYTES)
  return reseal(bytes)
}

const errorOf = (bytes: Uint8Array, options?: Wire.DecoderOptions) => {
  const result = Wire.makeDecoder(options).push(bytes)
  return Either.isLeft(result) ? result.left : undefined
}

const write: Wire.Write = {
  _tag: "Write",
  seq: 7,
  epoch: 3,
  offset: 0x1_0000_0002,
  data: new Uint8Array([1, 2, 3])
}

describe("wire header layout", () => {
  it("is 40 big-endian bytes: magic, version, kind, flags, seq, epoch, offset, length, CRCs", () => {
    const bytes = Wire.encode(write)
    expect(bytes.byteLength).toBe(43)
    expect(Buffer.from(bytes.subarray(0, 32)).toString("hex")).toBe(
      [
        "43445053", // "CDPS"
        "01", // version
        "03", // kind: write
        "0000", // flags
        "0000000000000007", // seq
        "00000003", // epoch
        "0000000100000002", // offset
        "00000003" // payload length
      ].join("")
    )
    expect(getU32(bytes, 32)).toBe(crc32c(new Uint8Array([1, 2, 3])))
    expect(getU32(bytes, 36)).toBe(crc32c(bytes.subarray(0, 36)))
    expect([...bytes.subarray(40)]).toEqual([1, 2, 3])
  })

  it("puts a block index, a marker's base, an ack's seq and a gap's expected seq in the header", () => {
    const decode = (frame: Wire.Frame) => Either.getOrThrow(Wire.makeDecoder().push(Wire.encode(frame)))[0]
    expect(decode({ _tag: "Block", seq: 1, epoch: 2, block: 9, data: new Uint8Array(4) })).toMatchObject({
      block: 9
    })
    expect(decode({ _tag: "ResyncBegin", seq: 5, epoch: 1, base: 2 })).toEqual({
      _tag: "ResyncBegin",
      seq: 5,
      epoch: 1,
      base: 2
    })
    expect(decode({ _tag: "Ack", seq: 12 })).toEqual({ _tag: "Ack", seq: 12 })
    expect(decode({ _tag: "Gap", expected: 4 })).toEqual({ _tag: "Gap", expected: 4 })
    expect(decode({ _tag: "Welcome", durableSeq: 8 })).toEqual({ _tag: "Welcome", durableSeq: 8 })
  })

  it("round-trips the largest safe integers and refuses to encode anything beyond", () => {
    const max = Number.MAX_SAFE_INTEGER
    const frame: Wire.Write = { ...write, seq: max, offset: max, epoch: 0xffff_ffff }
    expect(Either.getOrThrow(Wire.makeDecoder().push(Wire.encode(frame)))[0]).toMatchObject({
      seq: max,
      offset: max,
      epoch: 0xffff_ffff
    })
    expect(() => Wire.encode({ ...write, seq: max + 1 })).toThrow(RangeError)
    expect(() => Wire.encode({ ...write, seq: -1 })).toThrow(RangeError)
    expect(() => Wire.encode({ ...write, offset: 1.5 })).toThrow(RangeError)
    expect(() => Wire.encode({ ...write, epoch: 2 ** 32 })).toThrow(RangeError)
  })
})

describe("wire errors", () => {
  it("bad-magic, even before a whole header arrives", () => {
    expect(errorOf(Buffer.from("GET / HTTP/1.1\r\n"))?.reason).toBe("bad-magic")
    const bytes = copy(write)
    bytes[0] = 0x44
    expect(errorOf(bytes)?.reason).toBe("bad-magic")
    // Three bytes cannot tell yet.
    expect(errorOf(Buffer.from("GET"))).toBeUndefined()
  })

  it("bad-version", () => {
    const bytes = copy(write)
    bytes[4] = 2
    expect(errorOf(reseal(bytes))?.reason).toBe("bad-version")
  })

  it("header-crc: any header byte changed", () => {
    for (let i = 6; i < 40; i++) {
      const bytes = copy(write)
      bytes[i] = bytes[i]! ^ 0x10
      expect(errorOf(bytes)?.reason, `byte ${i}`).toBe("header-crc")
    }
  })

  it("unknown-kind", () => {
    for (const kind of [0, 14, 255]) {
      const bytes = copy({ _tag: "Ack", seq: 1 })
      bytes[5] = kind
      expect(errorOf(reseal(bytes))?.reason).toBe("unknown-kind")
    }
  })

  it("bad-flags", () => {
    const bytes = copy({ _tag: "Ack", seq: 1 })
    bytes[7] = 1
    expect(errorOf(reseal(bytes))?.reason).toBe("bad-flags")
  })

  it("unsafe-integer: a seq or offset beyond 2^53 - 1", () => {
    const seq = copy(write)
    setU32(seq, 8, 0x0020_0000)
    expect(errorOf(reseal(seq))?.reason).toBe("unsafe-integer")
    const offset = copy(write)
    setU32(offset, 20, 0xffff_ffff)
    expect(errorOf(reseal(offset))?.reason).toBe("unsafe-integer")
  })

  it("too-large: from the header alone", () => {
    const bytes = Wire.encode({ ...write, data: new Uint8Array(1000) })
    expect(errorOf(bytes.subarray(0, 40), { maxFrameBytes: 1039 })?.reason).toBe("too-large")
    expect(errorOf(bytes, { maxFrameBytes: 1040 })).toBeUndefined()
    // A declared length of 4 GiB never makes the decoder wait for it.
    const huge = copy({ _tag: "Block", seq: 1, epoch: 0, block: 0, data: new Uint8Array(0) })
    setU32(huge, 28, 0xffff_ffff)
    expect(errorOf(reseal(huge).subarray(0, 40))?.reason).toBe("too-large")
  })

  it("payload-crc", () => {
    const bytes = copy(write)
    bytes[41] = bytes[41]! ^ 1
    expect(errorOf(bytes)?.reason).toBe("payload-crc")
  })

  it("bad-payload: undecodable hello or refuse, or a payload on a kind that has none", () => {
    const utf8 = (s: string) => new TextEncoder().encode(s)
    expect(errorOf(withPayload(1, utf8("{not json")))?.reason).toBe("bad-payload")
    expect(
      errorOf(withPayload(1, utf8(`{"diskId":"d","blockSize":-1,"blockCount":1,"watermark":0}`)))?.reason
    ).toBe("bad-payload")
    expect(
      errorOf(withPayload(1, utf8(`{"diskId":"","blockSize":1,"blockCount":1,"watermark":0}`)))?.reason
    ).toBe("bad-payload")
    expect(errorOf(withPayload(1, new Uint8Array([0x7b, 0xff, 0x7d])))?.reason).toBe("bad-payload")
    expect(errorOf(withPayload(9, utf8(`{"reason":1}`)))?.reason).toBe("bad-payload")
    expect(errorOf(withPayload(7, new Uint8Array([1])))?.reason).toBe("bad-payload")
  })

  it("ignores unknown fields in a hello", () => {
    const payload = new TextEncoder().encode(
      `{"diskId":"vm-1","blockSize":65536,"blockCount":8,"watermark":3,"future":true}`
    )
    expect(Either.getOrThrow(Wire.makeDecoder().push(withPayload(1, payload)))).toEqual([
      { _tag: "Hello", diskId: "vm-1", blockSize: 65536, blockCount: 8, watermark: 3 }
    ])
  })

  it("stays failed once failed", () => {
    const decoder = Wire.makeDecoder()
    const bytes = copy(write)
    bytes[41] = bytes[41]! ^ 1
    const first = decoder.push(bytes)
    const again = decoder.push(Wire.encode({ _tag: "Ack", seq: 1 }))
    expect(Either.isLeft(first) && Either.isLeft(again) && again.left === first.left).toBe(true)
    expect(decoder.failed?.reason).toBe("payload-crc")
  })

  it("pushInto keeps the intact frames before a corruption", () => {
    const bad = copy(write)
    bad[41] = bad[41]! ^ 1
    const out: Array<Wire.Frame> = []
    const error = Wire.makeDecoder().pushInto(Buffer.concat([Wire.encode({ _tag: "Ack", seq: 1 }), bad]), out)
    expect(error?.reason).toBe("payload-crc")
    expect(out).toEqual([{ _tag: "Ack", seq: 1 }])
  })
})

describe("the keep-alive frame (kind 10)", () => {
  const keepAlive = Wire.encode({ _tag: "KeepAlive" })

  it("is a bare header: kind 10, every field 0, no payload", () => {
    expect(keepAlive.byteLength).toBe(Wire.HEADER_BYTES)
    expect(Buffer.from(keepAlive.subarray(0, 36)).toString("hex")).toBe(`4344505301${"0a"}${"00".repeat(30)}`)
    expect(getU32(keepAlive, 36)).toBe(crc32c(keepAlive.subarray(0, 36)))
    expect(Either.getOrThrow(Wire.makeDecoder().push(keepAlive))).toEqual([{ _tag: "KeepAlive" }])
  })

  // Each damage with its expected outcome: refused with a typed error, or waited for; never a frame.
  it("corruption matrix: flip, truncate, delete, forge with a valid CRC", () => {
    for (let i = 0; i < Wire.HEADER_BYTES; i++) {
      const flipped = copy({ _tag: "KeepAlive" })
      flipped[i] = flipped[i]! ^ 0x01
      const expected = i < 4 ? "bad-magic" : i === 4 ? "bad-version" : "header-crc"
      expect(errorOf(flipped)?.reason, `flip byte ${i}`).toBe(expected)
    }
    for (let cut = 4; cut < Wire.HEADER_BYTES; cut++) {
      const decoder = Wire.makeDecoder()
      // Truncated (or a byte deleted from the end): no frame, no error, the bytes held.
      expect(decoder.push(keepAlive.subarray(0, cut))).toEqual(Either.right([]))
      expect(decoder.buffered).toBe(cut)
    }
    // A byte deleted in the middle: the next frame's first byte slides in, the CRC objects.
    const deleted = Buffer.concat([keepAlive.subarray(0, 20), keepAlive.subarray(21), keepAlive])
    expect(errorOf(deleted)?.reason).toBe("header-crc")
    // Forged with valid CRCs: a payload on it, flags, an unknown next kind.
    expect(errorOf(withPayload(Wire.Kind.KeepAlive, new Uint8Array([0])))?.reason).toBe("bad-payload")
    const flags = copy({ _tag: "KeepAlive" })
    flags[6] = 1
    expect(errorOf(reseal(flags))?.reason).toBe("bad-flags")
    const next = copy({ _tag: "KeepAlive" })
    next[5] = Wire.Kind.ChecksumRefused + 1
    expect(errorOf(reseal(next))?.reason).toBe("unknown-kind")
    // Unused fields forged non-zero under a valid CRC are ignored, as for every kind.
    const fields = copy({ _tag: "KeepAlive" })
    fields[15] = 9
    expect(Either.getOrThrow(Wire.makeDecoder().push(reseal(fields)))).toEqual([{ _tag: "KeepAlive" }])
  })
})

describe("the first-frame cap", () => {
  const helloOf = (bytes: number): Wire.Hello => {
    const base = Wire.encode({ _tag: "Hello", diskId: "", blockSize: 1, blockCount: 1, watermark: 0 })
    // Grow the disk id until the frame has exactly `bytes` bytes.
    return {
      _tag: "Hello",
      diskId: "d".repeat(bytes - base.byteLength),
      blockSize: 1,
      blockCount: 1,
      watermark: 0
    }
  }

  it("refuses a first frame beyond it from the header, and lets later frames up to maxFrameBytes", () => {
    const cap = 1000
    const options = { maxFrameBytes: 1 << 20, maxFirstFrameBytes: cap }
    const exact = Wire.encode(helloOf(cap))
    expect(exact.byteLength).toBe(cap)
    expect(Either.getOrThrow(Wire.makeDecoder(options).push(exact))).toHaveLength(1)
    const over = Wire.encode(helloOf(cap + 1))
    const decoder = Wire.makeDecoder(options)
    const refused = decoder.push(over.subarray(0, Wire.HEADER_BYTES))
    expect(Either.isLeft(refused) && refused.left.reason).toBe("too-large")
    expect(Either.isLeft(refused) && refused.left.detail).toMatch(
      /first frame of 1001 bytes exceeds the maximum of 1000/
    )
    // After a first frame, only maxFrameBytes counts.
    const big = { ...write, data: new Uint8Array(100_000) }
    const later = Wire.makeDecoder(options).push(Buffer.concat([exact, Wire.encode(big)]))
    expect(Either.getOrThrow(later).map((f) => f._tag)).toEqual(["Hello", "Write"])
    // A cap above maxFrameBytes changes nothing.
    const loose = Wire.makeDecoder({ maxFrameBytes: 2000, maxFirstFrameBytes: 1 << 20 })
    expect(Either.isLeft(loose.push(Wire.encode({ ...write, data: new Uint8Array(2000) })))).toBe(true)
  })

  it("MAX_HELLO_FRAME_BYTES holds the largest hello the schema allows", () => {
    // 1024 UTF-16 units, each escaped to six bytes of JSON, and the largest numbers.
    const hello: Wire.Hello = {
      _tag: "Hello",
      diskId: "\u0001".repeat(1024),
      blockSize: Number.MAX_SAFE_INTEGER,
      blockCount: Number.MAX_SAFE_INTEGER,
      watermark: Number.MAX_SAFE_INTEGER
    }
    const bytes = Wire.encode(hello)
    expect(bytes.byteLength).toBeLessThan(Wire.MAX_HELLO_FRAME_BYTES)
    const decoded = Wire.makeDecoder({ maxFirstFrameBytes: Wire.MAX_HELLO_FRAME_BYTES }).push(bytes)
    expect(Either.getOrThrow(decoded)).toEqual([hello])
  })
})

describe("wire decoder buffering", () => {
  it("release drops a partial frame's bytes and ignores later pushes", () => {
    const bytes = Wire.encode({ ...write, data: new Uint8Array(1 << 20) })
    const decoder = Wire.makeDecoder()
    expect(decoder.push(bytes.subarray(0, 500_000))).toEqual(Either.right([]))
    expect(decoder.buffered).toBe(500_000)
    decoder.release()
    expect(decoder.buffered).toBe(0)
    expect(decoder.push(bytes.subarray(500_000))).toEqual(Either.right([]))
    expect(decoder.buffered).toBe(0)
  })

  it("returns a view, not a copy, when a payload lies inside one chunk", () => {
    const bytes = Wire.encode({ ...write, data: new Uint8Array(100).fill(7) })
    const [frame] = Either.getOrThrow(Wire.makeDecoder().push(bytes))
    expect(frame?._tag === "Write" && frame.data.buffer === bytes.buffer).toBe(true)
  })

  it("decodes a large payload fed in small chunks in linear time", () => {
    const size = 8 << 20
    const bytes = Wire.encode({
      _tag: "Block",
      seq: 1,
      epoch: 0,
      block: 0,
      data: new Uint8Array(size).fill(3)
    })
    const decoder = Wire.makeDecoder()
    const out: Array<Wire.Frame> = []
    const start = performance.now()
    for (let at = 0; at < bytes.byteLength; at += 512) decoder.pushInto(bytes.subarray(at, at + 512), out)
    const ms = performance.now() - start
    expect(out.length).toBe(1)
    expect(out[0]?._tag === "Block" && out[0].data.byteLength).toBe(size)
    // 16k pushes; a quadratic decoder would copy ~64 GiB here.
    expect(ms).toBeLessThan(2000)
  })
})

describe("Wire.decodeStream", () => {
  const frames: Array<Wire.Frame> = [
    { _tag: "Ack", seq: 1 },
    { _tag: "Gap", expected: 2 },
    { _tag: "ResyncEnd", seq: 3, epoch: 1 }
  ]
  const bytes = Buffer.concat(frames.map(Wire.encode))
  const bytesStream = (b: Uint8Array) =>
    Stream.fromIterable(
      Array.from({ length: Math.ceil(b.byteLength / 7) }, (_, i) => b.subarray(i * 7, i * 7 + 7))
    )

  it("turns byte chunks into frames", async () => {
    const out = await Effect.runPromise(Stream.runCollect(bytesStream(bytes).pipe(Wire.decodeStream())))
    expect(Chunk.toArray(out)).toEqual(frames)
  })

  it("emits the frames before a corruption, then fails with the WireError", async () => {
    const bad = Buffer.from(bytes)
    bad[Wire.HEADER_BYTES * 2 + 9] = bad[Wire.HEADER_BYTES * 2 + 9]! ^ 4
    const seen: Array<Wire.Frame> = []
    const exit = await Effect.runPromiseExit(
      Stream.runForEach(bytesStream(bad).pipe(Wire.decodeStream()), (f) => Effect.sync(() => seen.push(f)))
    )
    expect(seen).toEqual(frames.slice(0, 2))
    expect(Exit.isFailure(exit)).toBe(true)
    const error = Exit.isFailure(exit) ? exit.cause : undefined
    expect(JSON.stringify(error)).toContain("header-crc")
  })

  it("fails with truncated when the stream ends inside a frame", async () => {
    const result = await Effect.runPromise(
      Effect.either(
        Stream.runCollect(bytesStream(bytes.subarray(0, bytes.byteLength - 3)).pipe(Wire.decodeStream()))
      )
    )
    expect(Either.isLeft(result) && result.left.reason).toBe("truncated")
  })
})

describe("the payload CRC a decoded frame carries (the receiver's record CRC continues from it)", () => {
  const frames: ReadonlyArray<Wire.Write | Wire.Block> = [
    {
      _tag: "Write",
      seq: 7,
      epoch: 2,
      offset: 8192,
      data: Uint8Array.from({ length: 4096 }, (_, i) => i * 31)
    },
    { _tag: "Block", seq: 8, epoch: 2, block: 3, data: Uint8Array.from({ length: 512 }, (_, i) => i ^ 0x5a) }
  ]

  it("is the CRC32C of its payload, whole or split across chunks, and the frame equals the one sent", () => {
    for (const sent of frames) {
      const bytes = Wire.encode(sent)
      for (const cut of [0, 1, 20, 39, 40, 41, bytes.length - 1]) {
        const decoder = Wire.makeDecoder()
        const out: Array<Wire.Frame> = []
        expect(decoder.pushInto(bytes.subarray(0, cut), out)).toBeUndefined()
        expect(decoder.pushInto(bytes.subarray(cut), out)).toBeUndefined()
        const got = out[0] as Wire.Write | Wire.Block
        expect({ ...got, data: [...got.data] }).toEqual({ ...sent, data: [...sent.data] })
        expect(Wire.verifiedPayloadCrc(got)).toBe(crc32c(sent.data))
        // A copy (or any frame the decoder did not check) vouches for nothing.
        expect(Wire.verifiedPayloadCrc({ ...got })).toBeUndefined()
      }
    }
  })

  it("is not vouched for by a decoder that skips the payload check (mutant)", async () => {
    const { DecoderSkippingPayloadCrc } = await import("../../src/protocol/internal/mutants.js")
    const out: Array<Wire.Frame> = []
    expect(new DecoderSkippingPayloadCrc().pushInto(Wire.encode(frames[0]!), out)).toBeUndefined()
    expect(Wire.verifiedPayloadCrc(out[0] as Wire.Write)).toBeUndefined()
  })
})

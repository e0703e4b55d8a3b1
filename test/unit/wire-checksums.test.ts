/**
 * The checksum frames (issue 18, docs/wire.md "Checksums"): `ChecksumRequest` (kind 11),
 * `ChecksumReply` (12), `ChecksumRefused` (13). Their layout, round trips at every bound
 * (batch sizes 0, 1, max, max + 1; block indexes 0 and 2^53 − 1; digests sizes around 32),
 * the encoder's refusals (a defect), and a corruption matrix: each header and payload byte
 * flipped, truncated at every length, a byte deleted, forged with valid CRCs.
 */
import { createHash } from "node:crypto"
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { crc32c } from "../../src/internal/crc32c.js"
import * as Wire from "../../src/protocol/Wire.js"

const setU32 = (b: Uint8Array, at: number, n: number) => new DataView(b.buffer, b.byteOffset).setUint32(at, n)

const reseal = (bytes: Uint8Array): Uint8Array => {
  const payload = bytes.subarray(Wire.HEADER_BYTES)
  setU32(bytes, 28, payload.byteLength)
  setU32(bytes, 32, payload.byteLength === 0 ? 0 : crc32c(payload))
  setU32(bytes, 36, crc32c(bytes.subarray(0, 36)))
  return bytes
}
const copy = (frame: Wire.Frame) => Uint8Array.from(Wire.encode(frame))
/** A frame of `kind` with `payload` and the header fields of `template`, CRCs valid. */
const forge = (template: Wire.Frame, payload: Uint8Array) => {
  const bytes = new Uint8Array(Wire.HEADER_BYTES + payload.byteLength)
  bytes.set(Wire.encode(template).subarray(0, Wire.HEADER_BYTES))
  bytes.set(payload, Wire.HEADER_BYTES)
  return reseal(bytes)
}
const decode = (bytes: Uint8Array) => Wire.makeDecoder().push(bytes)
const errorOf = (bytes: Uint8Array) => {
  const result = decode(bytes)
  return Either.isLeft(result) ? result.left : undefined
}
const only = (bytes: Uint8Array): Wire.Frame => {
  const frames = Either.getOrThrow(decode(bytes))
  expect(frames.length).toBe(1)
  return frames[0]!
}
const u64s = (ns: ReadonlyArray<number>) => {
  const b = Buffer.alloc(ns.length * 8)
  ns.forEach((n, i) => {
    b.writeUInt32BE(Math.floor(n / 2 ** 32), i * 8)
    b.writeUInt32BE(n >>> 0, i * 8 + 4)
  })
  return b
}
const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i)
const MAX = Wire.MAX_CHECKSUM_BLOCKS

const request: Wire.ChecksumRequest = {
  _tag: "ChecksumRequest",
  algorithm: 0,
  id: 9,
  blocks: [0, 5, 2 ** 40]
}
const digests = Buffer.concat([0, 1].map((i) => createHash("sha256").update(`block ${i}`).digest()))
const reply: Wire.ChecksumReply = { _tag: "ChecksumReply", algorithm: 0, id: 9, through: 77, digests }
const refused: Wire.ChecksumRefused = { _tag: "ChecksumRefused", id: 9, reason: "damaged", detail: "x at 4" }
/** The digest's algorithm codes the field must carry: SHA-256, BLAKE3, the next (none), the largest u32. */
const CODES = [0, 1, 2, 0xffff_ffff]

describe("checksum frames: layout", () => {
  it("a request: kind 11, the id in the offset field, 8 big-endian bytes per block", () => {
    const bytes = Wire.encode(request)
    expect(Buffer.from(bytes.subarray(0, 32)).toString("hex")).toBe(
      ["43445053", "01", "0b", "0000", "0".repeat(16), "00000000", "0000000000000009", "00000018"].join("")
    )
    expect(Buffer.from(bytes.subarray(40)).equals(u64s([0, 5, 2 ** 40]))).toBe(true)
    expect(only(bytes)).toEqual(request)
  })

  it("a reply: kind 12, the through seq in the seq field, the id in the offset field, the digests", () => {
    const bytes = Wire.encode(reply)
    expect(Buffer.from(bytes.subarray(0, 32)).toString("hex")).toBe(
      ["43445053", "01", "0c", "0000", "000000000000004d", "00000000", "0000000000000009", "00000040"].join(
        ""
      )
    )
    const decoded = only(bytes) as Wire.ChecksumReply
    expect({ ...decoded, digests: Buffer.from(decoded.digests) }).toEqual(reply)
    expect(Buffer.from(Wire.digestAt(decoded, 1)).equals(digests.subarray(32))).toBe(true)
  })

  it("a refusal: kind 13, the id in the offset field, JSON { reason, detail }", () => {
    const bytes = Wire.encode(refused)
    expect(bytes[5]).toBe(13)
    expect(JSON.parse(Buffer.from(bytes.subarray(40)).toString("utf8"))).toEqual({
      reason: "damaged",
      detail: "x at 4"
    })
    expect(only(bytes)).toEqual(refused)
  })

  it("the algorithm code is the epoch field of a request and of a reply: 0 SHA-256, 1 BLAKE3, any u32 carried", () => {
    expect(Wire.DigestCode).toEqual({ sha256: 0, blake3: 1 })
    for (const code of CODES) {
      const asked = { ...request, algorithm: code }
      const bytes = Wire.encode(asked)
      expect(new DataView(bytes.buffer, bytes.byteOffset).getUint32(16), `request ${code}`).toBe(code)
      expect(only(bytes)).toEqual(asked)
      const answered = Wire.encode({ ...reply, algorithm: code })
      expect(new DataView(answered.buffer, answered.byteOffset).getUint32(16), `reply ${code}`).toBe(code)
      // A reply whose echo differs from what was asked decodes as it is: the filter judges it.
      expect((only(answered) as Wire.ChecksumReply).algorithm).toBe(code)
      expect(Wire.digestAlgorithmOf(code)).toBe(code === 0 ? "sha256" : code === 1 ? "blake3" : undefined)
    }
    for (const code of [-1, 2 ** 32, 0.5])
      for (const frame of [
        { ...request, algorithm: code },
        { ...reply, algorithm: code }
      ])
        expect(() => Wire.encode(frame), `${frame._tag} ${code}`).toThrow(RangeError)
  })

  it("the BLAKE3 block digest is BLAKE3 of the block's bytes (the reference vector), whole or fed in pieces", () => {
    expect(Wire.digestAvailable("blake3")).toBe(true)
    expect(Buffer.from(Wire.blockDigest(Buffer.from("abc"), "blake3")).toString("hex")).toBe(
      "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    )
    const block = Buffer.alloc(65536)
    for (let i = 0; i < block.length; i++) block[i] = (i * 7) & 0xff
    for (const algorithm of Wire.DIGEST_ALGORITHMS)
      for (const cuts of [[], [1], [1024, 1025], [4095, 4096, 4097, 65535]]) {
        const hasher = Wire.digestHasher(algorithm)
        let from = 0
        for (const cut of [...cuts, block.length]) {
          hasher.update(block.subarray(from, cut))
          from = cut
        }
        expect(
          Buffer.from(hasher.digest()).equals(Buffer.from(Wire.blockDigest(block, algorithm))),
          `${algorithm} ${cuts}`
        ).toBe(true)
      }
    expect(Buffer.from(Wire.blockDigest(block, "blake3")).equals(Buffer.from(Wire.blockDigest(block)))).toBe(
      false
    )
    // Several blocks at once: each block's own digest, in order, by the algorithm given.
    const two = Wire.blockDigests(Buffer.concat([block, Buffer.alloc(65536, 1)]), 65536, 2, "blake3")
    expect(
      Buffer.from(two.subarray(32)).equals(Buffer.from(Wire.blockDigest(Buffer.alloc(65536, 1), "blake3")))
    ).toBe(true)
  })

  it("the block digest is SHA-256 of the block's bytes", () => {
    const block = Buffer.alloc(4096, 7)
    expect(Buffer.from(Wire.blockDigest(block)).toString("hex")).toBe(
      createHash("sha256").update(block).digest("hex")
    )
    expect(Wire.blockDigest(block).byteLength).toBe(Wire.DIGEST_BYTES)
  })
})

describe("checksum frames: bounds", () => {
  it("requests of 1 and MAX blocks, indexes 0 and 2^53 - 1, round-trip; 0 and MAX + 1 are refused both ways", () => {
    for (const blocks of [
      [0],
      [Number.MAX_SAFE_INTEGER],
      range(MAX),
      range(MAX, Number.MAX_SAFE_INTEGER - MAX + 1)
    ]) {
      const frame: Wire.ChecksumRequest = {
        _tag: "ChecksumRequest",
        algorithm: 0,
        id: Number.MAX_SAFE_INTEGER,
        blocks
      }
      expect(only(Wire.encode(frame))).toEqual(frame)
    }
    for (const blocks of [[], range(MAX + 1)])
      expect(() => Wire.encode({ _tag: "ChecksumRequest", algorithm: 0, id: 1, blocks })).toThrow(RangeError)
    const template: Wire.Frame = { _tag: "ChecksumRequest", algorithm: 0, id: 1, blocks: [0] }
    expect(errorOf(forge(template, new Uint8Array(0)))?.reason).toBe("bad-payload")
    expect(errorOf(forge(template, u64s(range(MAX + 1))))?.reason).toBe("bad-payload")
    expect(errorOf(forge(template, u64s(range(MAX))))).toBeUndefined()
  })

  it("a request's payload: whole u64s only, strictly increasing, each a safe integer", () => {
    const template: Wire.Frame = { _tag: "ChecksumRequest", algorithm: 0, id: 1, blocks: [0] }
    for (const length of [1, 7, 9, 15, 8 * MAX + 1, 8 * MAX + 8])
      expect(errorOf(forge(template, new Uint8Array(length)))?.reason, `${length} bytes`).toBe("bad-payload")
    expect(errorOf(forge(template, u64s([3, 3])))?.reason).toBe("bad-payload")
    expect(errorOf(forge(template, u64s([4, 3])))?.reason).toBe("bad-payload")
    const unsafe = u64s([1, 2])
    unsafe.writeUInt32BE(0x20_0000, 8)
    expect(errorOf(forge(template, unsafe))?.reason).toBe("bad-payload")
    for (const blocks of [[3, 3], [4, 3], [-1], [2 ** 53]])
      expect(() => Wire.encode({ _tag: "ChecksumRequest", algorithm: 0, id: 1, blocks })).toThrow(RangeError)
  })

  it("replies of 1 and MAX digests round-trip; 0, MAX + 1 and a part of a digest are refused both ways", () => {
    for (const n of [1, MAX]) {
      const frame: Wire.ChecksumReply = {
        _tag: "ChecksumReply",
        algorithm: 0,
        id: 0,
        through: Number.MAX_SAFE_INTEGER,
        digests: Buffer.alloc(n * 32, n)
      }
      const decoded = only(Wire.encode(frame)) as Wire.ChecksumReply
      expect(decoded.through).toBe(Number.MAX_SAFE_INTEGER)
      expect(Buffer.from(decoded.digests).equals(Buffer.from(frame.digests))).toBe(true)
    }
    for (const bytes of [0, 31, 33, 32 * MAX + 32, 32 * MAX - 1])
      expect(() =>
        Wire.encode({
          _tag: "ChecksumReply",
          algorithm: 0,
          id: 0,
          through: 0,
          digests: new Uint8Array(bytes)
        })
      ).toThrow(RangeError)
    for (const bytes of [0, 1, 31, 33, 63, 32 * MAX + 32])
      expect(errorOf(forge(reply, new Uint8Array(bytes)))?.reason, `${bytes} bytes`).toBe("bad-payload")
  })

  it("a refusal that is not JSON { reason, detail } is bad-payload", () => {
    for (const text of ["", "{", '{"reason":"x"}', "[1]", "\u00ff"])
      expect(errorOf(forge(refused, Buffer.from(text, "latin1")))?.reason, text).toBe("bad-payload")
  })

  it("a request for a block beyond the disk does not fit it (bad-request)", () => {
    const g = { blockSize: 4096, blockCount: 16 }
    const check = (blocks: ReadonlyArray<number>) =>
      Wire.checkChecksumRequest(g, { _tag: "ChecksumRequest", algorithm: 0, id: 1, blocks })?.reason
    expect(check([0, 15])).toBeUndefined()
    expect(check([0, 16])).toBe("bad-request")
    expect(check([2 ** 40])).toBe("bad-request")
  })
})

describe("checksum frames: corruption matrix", () => {
  // Each damage with its expected outcome: a typed error, or waited for; never a different frame.
  for (const frame of [
    request,
    reply,
    refused,
    ...CODES.slice(1).flatMap((code) => [
      { ...request, algorithm: code },
      { ...reply, algorithm: code }
    ])
  ] as ReadonlyArray<Wire.Frame>) {
    it(`${frame._tag}${"algorithm" in frame ? ` (algorithm ${frame.algorithm})` : ""}: every byte flipped, truncated at every length, a byte deleted`, () => {
      const whole = copy(frame)
      for (let i = 0; i < whole.byteLength; i++) {
        const flipped = copy(frame)
        flipped[i] = flipped[i]! ^ 0x01
        const error = errorOf(flipped)
        expect(error, `byte ${i} flipped`).toBeInstanceOf(Wire.WireError)
        if (i >= Wire.HEADER_BYTES) expect(error?.reason).toBe("payload-crc")
      }
      for (let cut = 0; cut < whole.byteLength; cut++) {
        const decoder = Wire.makeDecoder()
        expect(decoder.push(whole.subarray(0, cut))).toEqual(Either.right([]))
        expect(decoder.buffered).toBe(cut)
      }
      for (let i = 0; i < whole.byteLength; i++) {
        const deleted = Buffer.concat([whole.subarray(0, i), whole.subarray(i + 1), copy(frame)])
        expect(errorOf(deleted), `byte ${i} deleted`).toBeInstanceOf(Wire.WireError)
      }
    })
  }

  it("forged with valid CRCs: flags, an unknown kind, another kind's payload, unused fields", () => {
    const flags = copy(request)
    flags[7] = 1
    expect(errorOf(reseal(flags))?.reason).toBe("bad-flags")
    const unknown = copy(refused)
    unknown[5] = Wire.Kind.ChecksumRefused + 1
    expect(errorOf(reseal(unknown))?.reason).toBe("unknown-kind")
    // A reply's 64 bytes read as a request: 8 u64s, whose order the digests do not keep.
    const asRequest = copy(reply)
    asRequest[5] = Wire.Kind.ChecksumRequest
    expect(errorOf(reseal(asRequest))?.reason).toBe("bad-payload")
    // A request's 24 bytes read as a reply: not whole digests.
    const asReply = copy(request)
    asReply[5] = Wire.Kind.ChecksumReply
    expect(errorOf(reseal(asReply))?.reason).toBe("bad-payload")
    // The epoch field is the request's and reply's algorithm code: forged, it is another code
    // (which the receiver refuses, or the filter does not believe); a refusal does not use it.
    const epoch = copy(request)
    epoch[19] = 5
    expect(only(reseal(epoch))).toEqual({ ...request, algorithm: 5 })
    const echo = copy(reply)
    echo[19] = 1
    expect((only(reseal(echo)) as Wire.ChecksumReply).algorithm).toBe(1)
    const unusedEpoch = copy(refused)
    unusedEpoch[19] = 5
    expect(only(reseal(unusedEpoch))).toEqual(refused)
    // A request's seq field is unused too.
    const seq = copy(request)
    seq[15] = 5
    expect(only(reseal(seq))).toEqual(request)
  })
})

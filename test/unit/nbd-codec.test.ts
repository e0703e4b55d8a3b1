/**
 * The NBD codec, byte for byte against the spec's layouts (proto.md), every decoder's
 * typed errors, and fast-check 4 properties over the framing boundaries: request fields
 * at their limits, the request checks around 0, 512, the maximum payload and the end of
 * the export, and the INFO/GO data whose lengths must add up.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Codec from "../../src/nbd/internal/codec.js"
import { NbdProtocolError } from "../../src/nbd/internal/codec.js"
import * as P from "../../src/nbd/internal/protocol.js"
import { check } from "../../src/nbd/internal/transmission.js"
import { numRuns } from "../support/arbitraries.js"

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const reasonOf = (value: unknown) => (value instanceof NbdProtocolError ? value.reason : "ok")

describe("the handshake's bytes", () => {
  it("greets with NBDMAGIC, IHAVEOPT and the handshake flags", () => {
    expect(hex(Codec.encodeGreeting(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES))).toBe(
      "4e42444d41474943" + "49484156454f5054" + "0003"
    )
    expect(Codec.decodeGreeting(Codec.encodeGreeting(3))).toBe(3)
    const bad = Codec.encodeGreeting(3)
    bad[0]! ^= 1
    expect(reasonOf(Codec.decodeGreeting(bad))).toBe("bad-greeting")
    expect(reasonOf(Codec.decodeGreeting(bad.subarray(0, 17)))).toBe("truncated")
  })

  it("takes the client flags it offered, and no others", () => {
    const offered = P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES
    for (const flags of [0, 1, 2, 3])
      expect(Codec.decodeClientFlags(Codec.encodeClientFlags(flags), offered)).toBe(flags)
    expect(reasonOf(Codec.decodeClientFlags(Codec.encodeClientFlags(4), offered))).toBe(
      "unknown-client-flags"
    )
    expect(reasonOf(Codec.decodeClientFlags(Codec.encodeClientFlags(2 ** 31), offered))).toBe(
      "unknown-client-flags"
    )
    // NO_ZEROES only when the server offered it.
    expect(reasonOf(Codec.decodeClientFlags(Codec.encodeClientFlags(2), P.FLAG_FIXED_NEWSTYLE))).toBe(
      "unknown-client-flags"
    )
    expect(reasonOf(Codec.decodeClientFlags(new Uint8Array(3), offered))).toBe("truncated")
  })

  it("frames options and option replies as the spec lays them out", () => {
    expect(hex(Codec.encodeOption(P.OPT_GO, Uint8Array.of(9)))).toBe(
      "49484156454f5054" + "00000007" + "00000001" + "09"
    )
    expect(Codec.decodeOptionHeader(Codec.encodeOption(7, new Uint8Array(0)))).toEqual({
      option: 7,
      length: 0
    })
    const bad = Codec.encodeOption(7)
    bad[7]! ^= 0x80
    expect(reasonOf(Codec.decodeOptionHeader(bad))).toBe("bad-option-magic")
    expect(hex(Codec.encodeOptionReply(P.OPT_LIST, P.REP_ACK))).toBe(
      "0003e889045565a9" + "00000003" + "00000001" + "00000000"
    )
    expect(
      Codec.decodeOptionReplyHeader(Codec.encodeOptionReply(6, P.REP_ERR_UNSUP).subarray(0, 20))
    ).toEqual({
      option: 6,
      type: 2 ** 31 + 1,
      length: 0
    })
  })

  it("answers NBD_OPT_EXPORT_NAME with size, flags and 124 zeroes unless declined", () => {
    const full = Codec.encodeExportNameReply(2 ** 40, 0x1234, false)
    expect(full.byteLength).toBe(134)
    expect(hex(full.subarray(0, 10))).toBe("0000010000000000" + "1234")
    expect(full.subarray(10).every((b) => b === 0)).toBe(true)
    expect(Codec.encodeExportNameReply(512, 1, true).byteLength).toBe(10)
  })

  it("writes NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE with the lengths the spec fixes (12, 14)", () => {
    const info = Codec.encodeInfoExport(1 << 20, 0x0145)
    expect(hex(info)).toBe("0000" + "0000000000100000" + "0145")
    expect(Codec.decodeInfo(info)).toEqual({ _tag: "Export", size: 1 << 20, flags: 0x0145 })
    const sizes = { minimum: 512, preferred: 4096, maximum: 32 << 20 }
    const block = Codec.encodeInfoBlockSize(sizes)
    expect(hex(block)).toBe("0003" + "00000200" + "00001000" + "02000000")
    expect(Codec.decodeInfo(block)).toEqual({ _tag: "BlockSize", sizes })
    expect(reasonOf(Codec.decodeInfo(info.subarray(0, 11)))).toBe("truncated")
    expect(reasonOf(Codec.decodeInfo(new Uint8Array(1)))).toBe("truncated")
    expect(Codec.decodeInfo(Uint8Array.of(0, 77))).toEqual({ _tag: "Unknown", type: 77 })
  })
})

describe("the transmission phase's bytes", () => {
  it("lays out a request: magic, flags, type, cookie, offset, length", () => {
    const bytes = Codec.encodeRequest({ flags: 1, type: 1, cookie: 0xdeadbeefn, offset: 4096, length: 512 })
    expect(hex(bytes)).toBe(
      "25609513" + "0001" + "0001" + "00000000deadbeef" + "0000000000001000" + "00000200"
    )
    expect(Codec.decodeRequest(bytes)).toEqual({
      flags: 1,
      type: 1,
      cookie: 0xdeadbeefn,
      offset: 4096,
      length: 512
    })
  })

  it("takes an offset beyond 2^53 - 1 as Infinity (past any export), never a rounded number", () => {
    for (const offset of [2n ** 53n, 2n ** 63n, 2n ** 64n - 1n]) {
      const decoded = Codec.decodeRequest(
        Codec.encodeRequest({ flags: 0, type: 0, cookie: 0n, offset, length: 0 })
      )
      expect(decoded).toMatchObject({ offset: Number.POSITIVE_INFINITY })
    }
    const edge = Codec.decodeRequest(
      Codec.encodeRequest({
        flags: 0,
        type: 0,
        cookie: 0n,
        offset: BigInt(Number.MAX_SAFE_INTEGER),
        length: 0
      })
    )
    expect(edge).toMatchObject({ offset: Number.MAX_SAFE_INTEGER })
  })

  it("refuses a request or reply with a bad magic or the wrong length", () => {
    const bytes = Codec.encodeRequest({ flags: 0, type: 0, cookie: 1n, offset: 0, length: 0 })
    for (let i = 0; i < 4; i++) {
      const flipped = Uint8Array.from(bytes)
      flipped[i]! ^= 0x10
      expect(reasonOf(Codec.decodeRequest(flipped))).toBe("bad-request-magic")
    }
    expect(reasonOf(Codec.decodeRequest(bytes.subarray(0, 27)))).toBe("truncated")
    const reply = Codec.encodeSimpleReply(22, 7n)
    expect(hex(reply)).toBe("67446698" + "00000016" + "0000000000000007")
    expect(Codec.decodeSimpleReply(reply)).toEqual({ error: 22, cookie: 7n })
    reply[3]! ^= 1
    expect(reasonOf(Codec.decodeSimpleReply(reply))).toBe("bad-reply-magic")
  })
})

// ---------------------------------------------------------------------------
// Properties over the framing boundaries

const MAX = 32 * 1024 * 1024
const SIZE = 64 * 1024 * 1024
const target = { size: SIZE, readOnly: false, maxPayload: MAX }

/** Values at and around every edge a request's fields meet. */
const near = (edges: ReadonlyArray<number>, limit: number) =>
  fc.oneof(
    fc.constantFrom(
      ...edges.flatMap((e) => [e - 512, e - 1, e, e + 1, e + 512]).filter((n) => n >= 0 && n <= limit)
    ),
    fc.integer({ min: 0, max: limit })
  )
const lengths = near([0, 512, 4096, MAX, SIZE], 2 ** 32 - 1)
const offsets = near([0, 512, SIZE - MAX, SIZE - 512, SIZE], 2 ** 40)
const commands = fc.constantFrom(
  P.CMD_READ,
  P.CMD_WRITE,
  P.CMD_FLUSH,
  P.CMD_TRIM,
  P.CMD_WRITE_ZEROES,
  P.CMD_CACHE,
  P.CMD_BLOCK_STATUS,
  99
)
const flags = fc.oneof(
  fc.constantFrom(0, P.CMD_FLAG_FUA, P.CMD_FLAG_NO_HOLE, P.CMD_FLAG_DF, P.CMD_FLAG_FAST_ZERO),
  fc.integer({ min: 0, max: 0xffff })
)

/** The answer the spec asks for, written independently of `check`. */
const expected = (type: number, f: number, offset: number, length: number, readOnly: boolean) => {
  const writes = [P.CMD_WRITE, P.CMD_WRITE_ZEROES, P.CMD_TRIM].includes(type)
  if (![P.CMD_READ, P.CMD_WRITE, P.CMD_FLUSH, P.CMD_TRIM, P.CMD_WRITE_ZEROES].includes(type)) return "EINVAL"
  const allowed = type === P.CMD_WRITE_ZEROES ? 3 : 1
  if ((f | allowed) !== allowed) return "EINVAL"
  if (writes && readOnly) return "EPERM"
  if (type === P.CMD_FLUSH) return "ok"
  if ((type === P.CMD_READ || type === P.CMD_WRITE) && length > MAX) return "EINVAL"
  if (offset + length > SIZE) return type === P.CMD_WRITE || type === P.CMD_WRITE_ZEROES ? "ENOSPC" : "EINVAL"
  if (offset % 512 !== 0 || length % 512 !== 0) return "EINVAL"
  return "ok"
}

describe("properties over the framing boundaries", () => {
  it("a request survives encode → decode with every field at its limits", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 53n + 1n })),
        fc.oneof(lengths, fc.constantFrom(0, 2 ** 32 - 1)),
        (f, type, cookie, offset, length) => {
          const bytes = Codec.encodeRequest({ flags: f, type, cookie, offset, length })
          expect(bytes.byteLength).toBe(P.REQUEST_BYTES)
          const decoded = Codec.decodeRequest(bytes)
          expect(decoded).toEqual({
            flags: f,
            type,
            cookie,
            offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.POSITIVE_INFINITY : Number(offset),
            length
          })
          // Any cut of the header is a typed truncation, never a throw.
          expect(reasonOf(Codec.decodeRequest(bytes.subarray(0, Number(cookie % 28n))))).toBe("truncated")
        }
      ),
      { numRuns: numRuns(300) }
    )
  })

  it("the request checks answer as the spec says around 0, 512, the maximum and the export's end", () => {
    fc.assert(
      fc.property(commands, flags, offsets, lengths, fc.boolean(), (type, f, offset, length, readOnly) => {
        const got = check({ type, flags: f, cookie: 0n, offset, length }, { ...target, readOnly })
        const name = got === undefined ? "ok" : P.errorName(got)
        expect(name).toBe(expected(type, f, offset, length, readOnly))
      }),
      { numRuns: numRuns(2000) }
    )
  })

  it("the export's last sector is in, the first byte past it is out", () => {
    const at = (type: number, offset: number, length: number) =>
      check({ type, flags: 0, cookie: 0n, offset, length }, target)
    expect(at(P.CMD_READ, SIZE - 512, 512)).toBeUndefined()
    expect(at(P.CMD_WRITE, SIZE - 512, 512)).toBeUndefined()
    expect(at(P.CMD_READ, SIZE, 0)).toBeUndefined()
    expect(at(P.CMD_READ, SIZE - 512, 1024)).toBe(P.EINVAL)
    expect(at(P.CMD_WRITE, SIZE - 512, 1024)).toBe(P.ENOSPC)
    expect(at(P.CMD_WRITE_ZEROES, SIZE, 512)).toBe(P.ENOSPC)
    expect(at(P.CMD_TRIM, SIZE, 512)).toBe(P.EINVAL)
    expect(at(P.CMD_WRITE, Number.POSITIVE_INFINITY, 512)).toBe(P.ENOSPC)
    expect(at(P.CMD_READ, 0, MAX)).toBeUndefined()
    expect(at(P.CMD_READ, 0, MAX + 512)).toBe(P.EINVAL)
    // TRIM and WRITE_ZEROES carry no payload: the maximum does not bound them.
    expect(at(P.CMD_WRITE_ZEROES, 0, SIZE)).toBeUndefined()
  })

  it("INFO/GO data is taken only when its lengths add up exactly", () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 40 }),
        fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 6 }),
        fc.integer({ min: -3, max: 3 }),
        fc.integer({ min: -3, max: 3 }),
        (name, requests, nameSkew, tailSkew) => {
          const good = Codec.encodeInfoRequest({ name, requests })
          expect(Codec.decodeInfoRequest(good)).toEqual({ name, requests })
          // A name length that disagrees with the data, or data cut or padded: malformed.
          const skewed = Uint8Array.from(good)
          const view = new DataView(skewed.buffer)
          view.setUint32(0, Math.max(0, view.getUint32(0) + nameSkew))
          const cut =
            tailSkew < 0
              ? skewed.subarray(0, Math.max(0, skewed.byteLength + tailSkew))
              : Uint8Array.from([...skewed, ...new Uint8Array(tailSkew)])
          const decoded = Codec.decodeInfoRequest(cut)
          if (Buffer.compare(Buffer.from(cut), Buffer.from(good)) === 0)
            expect(decoded).toEqual({ name, requests })
          else if (decoded !== undefined) {
            // Only an edit that still adds up may decode, and then to what the bytes say.
            const nameLength = new DataView(cut.buffer, cut.byteOffset).getUint32(0)
            expect(cut.byteLength).toBe(6 + nameLength + 2 * decoded.requests.length)
          }
        }
      ),
      { numRuns: numRuns(500) }
    )
  })

  it("decoders take any bytes without throwing", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        Codec.decodeRequest(bytes)
        Codec.decodeSimpleReply(bytes)
        Codec.decodeOptionHeader(bytes)
        Codec.decodeOptionReplyHeader(bytes)
        Codec.decodeInfoRequest(bytes)
        Codec.decodeInfo(bytes)
        Codec.decodeServerEntry(bytes)
        Codec.decodeGreeting(bytes)
        Codec.decodeClientFlags(bytes, 3)
      }),
      { numRuns: numRuns(500) }
    )
  })
})

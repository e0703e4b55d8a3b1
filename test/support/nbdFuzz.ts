/**
 * NBD fuzzing: conversations (the bytes a client sends on one connection, from its flags
 * to its last request; then it ends its side), the committed corpus's cases with the
 * verdict the server must log for each, mutations (flip, truncate, splice, delete,
 * oversize length fields), a fast-check 4 generator of mutated conversations, and the
 * replay against a running server (test/support/nbdHarness.ts).
 *
 * A verdict is what the server logged at WARN for the connection: nothing (`clean`: the
 * conversation ended between messages, refused requests were answered with NBD errors),
 * or the connection closed with a typed error: `NbdProtocolError:<reason>`,
 * `EndedMidMessage`, `SocketFailed`.
 */
import * as Net from "node:net"
import fc from "fast-check"
import * as Codec from "../../src/nbd/internal/codec.js"
import * as P from "../../src/nbd/internal/protocol.js"
import type { Endpoint } from "../../src/nbd/internal/client.js"
import { DISK_BYTES, type LogLine } from "./nbdHarness.js"

/** Bytes plus where their u32 length fields are (for the oversize mutation). */
export interface Conversation {
  readonly bytes: Uint8Array
  readonly lengthFields: ReadonlyArray<number>
}

/** Builds a conversation message by message. */
export class Script {
  private parts: Array<Uint8Array> = []
  private size = 0
  private fields: Array<number> = []

  private push(bytes: Uint8Array, lengthAt?: number) {
    if (lengthAt !== undefined) this.fields.push(this.size + lengthAt)
    this.parts.push(bytes)
    this.size += bytes.byteLength
    return this
  }
  flags(flags = P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES) {
    return this.push(Codec.encodeClientFlags(flags))
  }
  option(option: number, data?: Uint8Array) {
    return this.push(Codec.encodeOption(option, data), 12)
  }
  info(option: typeof P.OPT_GO | typeof P.OPT_INFO, name: string, requests: ReadonlyArray<number> = []) {
    const nameLength = this.size + P.OPTION_HEADER_BYTES
    this.option(option, Codec.encodeInfoRequest({ name, requests }))
    // After the option's own length: an option's first field is its length.
    this.fields.push(nameLength)
    return this
  }
  request(type: number, offset: number, length: number, flags = 0, payload?: Uint8Array) {
    const header = Codec.encodeRequest({ flags, type, cookie: BigInt(this.size + 1), offset, length })
    this.push(header, 24)
    if (type === P.CMD_WRITE) this.push(payload ?? new Uint8Array(length).fill(length & 0xff))
    return this
  }
  raw(bytes: Uint8Array) {
    return this.push(bytes)
  }
  done(): Conversation {
    return { bytes: Buffer.concat(this.parts), lengthFields: this.fields }
  }
}

export const EXPORT = "fuzz"

/** A session in transmission: GO, then a few requests inside the lower half of the disk. */
export const session = (s = new Script().flags()) =>
  s
    .info(P.OPT_INFO, EXPORT, [P.INFO_NAME, P.INFO_BLOCK_SIZE])
    .option(P.OPT_LIST)
    .info(P.OPT_GO, EXPORT)
    .request(P.CMD_WRITE, 0, 4096)
    .request(P.CMD_WRITE, 8192, 512, P.CMD_FLAG_FUA)
    .request(P.CMD_READ, 0, 8192)
    .request(P.CMD_TRIM, 65536, 65536)
    .request(P.CMD_WRITE_ZEROES, 131072, 4096, P.CMD_FLAG_NO_HOLE)
    .request(P.CMD_FLUSH, 0, 0)

const disc = (s: Script) => s.request(P.CMD_DISC, 0, 0).done()

const flipAt = (c: Conversation, at: number, mask = 0xff): Uint8Array => {
  const out = Uint8Array.from(c.bytes)
  out[at]! ^= mask
  return out
}

const setU32 = (bytes: Uint8Array, at: number, value: number): Uint8Array => {
  const out = Uint8Array.from(bytes)
  new DataView(out.buffer).setUint32(at, value)
  return out
}

/** Where the transmission phase starts in `session()` (after GO). */
const transmissionStart = () => {
  const s = new Script()
    .flags()
    .info(P.OPT_INFO, EXPORT, [P.INFO_NAME, P.INFO_BLOCK_SIZE])
    .option(P.OPT_LIST)
    .info(P.OPT_GO, EXPORT)
  return s.done().bytes.byteLength
}

export interface CorpusCase {
  readonly name: string
  readonly bytes: Uint8Array
  readonly verdict: string
}

/** The committed corpus (test/fixtures/nbd-corpus): each case and the verdict it must get. */
export const corpusCases = (): ReadonlyArray<CorpusCase> => {
  const valid = disc(session())
  const t = transmissionStart()
  const cases: Array<CorpusCase> = [
    { name: "01-go-session", bytes: valid.bytes, verdict: "clean" },
    {
      name: "02-export-name-session",
      bytes: disc(
        new Script()
          .flags(P.FLAG_C_FIXED_NEWSTYLE)
          .option(P.OPT_EXPORT_NAME, Codec.encodeName(EXPORT))
          .request(P.CMD_WRITE, 4096, 4096)
      ).bytes,
      verdict: "clean"
    },
    { name: "03-abort", bytes: new Script().flags().option(P.OPT_ABORT).done().bytes, verdict: "clean" },
    { name: "04-empty", bytes: new Uint8Array(0), verdict: "clean" },
    { name: "05-flags-only", bytes: new Script().flags().done().bytes, verdict: "clean" },
    {
      name: "06-unknown-client-flags",
      bytes: new Script().flags(0xffffffff).done().bytes,
      verdict: "NbdProtocolError:unknown-client-flags"
    },
    {
      name: "07-flipped-option-magic",
      bytes: flipAt(valid, 4 + 3),
      verdict: "NbdProtocolError:bad-option-magic"
    },
    { name: "08-truncated-option-header", bytes: valid.bytes.subarray(0, 4 + 9), verdict: "EndedMidMessage" },
    {
      name: "09-truncated-option-data",
      bytes: valid.bytes.subarray(0, 4 + 16 + 3),
      verdict: "EndedMidMessage"
    },
    {
      name: "10-oversized-option-length",
      // The first option's length: its 4 GiB are read off and dropped until the client leaves.
      bytes: setU32(valid.bytes, 4 + 12, 0xffffffff),
      verdict: "EndedMidMessage"
    },
    {
      name: "11-unknown-options-then-session",
      bytes: disc(
        session(
          new Script()
            .flags()
            .option(99, Uint8Array.of(1, 2, 3))
            .option(P.OPT_STARTTLS)
            .option(P.OPT_STRUCTURED_REPLY)
        )
      ).bytes,
      verdict: "clean"
    },
    {
      name: "12-export-name-unknown",
      bytes: new Script().flags().option(P.OPT_EXPORT_NAME, Codec.encodeName("nope")).done().bytes,
      verdict: "NbdProtocolError:unknown-export"
    },
    {
      name: "13-oversized-name-length-in-go",
      bytes: setU32(disc(new Script().flags().info(P.OPT_GO, EXPORT)).bytes, 4 + 16, 0xfffffff0),
      // Answered NBD_REP_ERR_INVALID; the DISC that follows is 28 bytes of an option header.
      verdict: "NbdProtocolError:bad-option-magic"
    },
    {
      name: "14-flipped-request-magic",
      bytes: flipAt(valid, t + 1),
      verdict: "NbdProtocolError:bad-request-magic"
    },
    {
      name: "15-truncated-request-header",
      bytes: valid.bytes.subarray(0, t + 20),
      verdict: "EndedMidMessage"
    },
    {
      name: "16-truncated-write-payload",
      bytes: valid.bytes.subarray(0, t + 28 + 1000),
      verdict: "EndedMidMessage"
    },
    {
      name: "17-oversized-write-length",
      bytes: setU32(valid.bytes, t + 24, 0xffffffff),
      // EINVAL, then its 4 GiB payload is read off and dropped until the client leaves.
      verdict: "EndedMidMessage"
    },
    {
      name: "18-refused-requests",
      bytes: disc(
        new Script()
          .flags()
          .info(P.OPT_GO, EXPORT)
          .request(P.CMD_READ, 0, 0xffffffff)
          .request(P.CMD_WRITE, DISK_BYTES, 4096)
          .request(P.CMD_WRITE, 100, 512)
          .request(P.CMD_READ, 2 ** 52, 512)
          .request(P.CMD_TRIM, 0, 4096, 0x80)
          .request(P.CMD_BLOCK_STATUS, 0, 4096)
          .request(77, 0, 0)
      ).bytes,
      verdict: "clean"
    },
    {
      name: "19-garbage-between-requests",
      bytes: Buffer.concat([
        valid.bytes.subarray(0, t + 28 + 4096),
        Buffer.from("garbage!"),
        valid.bytes.subarray(t + 28 + 4096)
      ]),
      verdict: "NbdProtocolError:bad-request-magic"
    },
    {
      name: "20-too-many-options",
      bytes: (() => {
        const s = new Script().flags()
        for (let i = 0; i < 300; i++) s.option(P.OPT_LIST)
        return s.done().bytes
      })(),
      verdict: "NbdProtocolError:too-many-options"
    },
    { name: "21-requests-without-disc", bytes: session().done().bytes, verdict: "clean" },
    {
      name: "22-second-handshake-in-transmission",
      bytes: Buffer.concat([valid.bytes.subarray(0, t), valid.bytes]),
      verdict: "NbdProtocolError:bad-request-magic"
    },
    {
      name: "23-truncated-inside-client-flags",
      bytes: valid.bytes.subarray(0, 2),
      verdict: "EndedMidMessage"
    },
    {
      name: "24-oversized-name-length-in-info",
      // The option's length holds: answered NBD_REP_ERR_INVALID, and the session goes on.
      bytes: setU32(valid.bytes, 4 + 16, 0xffffffff),
      verdict: "clean"
    }
  ]
  return cases
}

export type Mutation =
  | { readonly _tag: "Flip"; readonly at: number; readonly mask: number }
  | { readonly _tag: "Truncate"; readonly at: number }
  | { readonly _tag: "Splice"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly _tag: "Delete"; readonly at: number; readonly count: number }
  | { readonly _tag: "Oversize"; readonly field: number; readonly value: number }

/** Applies a mutation; positions are taken modulo the conversation's size. */
export const mutate = (c: Conversation, m: Mutation): Uint8Array => {
  const n = c.bytes.byteLength
  if (n === 0) return m._tag === "Splice" ? m.bytes : c.bytes
  switch (m._tag) {
    case "Flip":
      return flipAt(c, m.at % n, m.mask)
    case "Truncate":
      return c.bytes.subarray(0, m.at % n)
    case "Splice":
      return Buffer.concat([c.bytes.subarray(0, m.at % n), m.bytes, c.bytes.subarray(m.at % n)])
    case "Delete":
      return Buffer.concat([c.bytes.subarray(0, m.at % n), c.bytes.subarray((m.at % n) + m.count)])
    case "Oversize":
      return c.lengthFields.length === 0
        ? c.bytes
        : setU32(c.bytes, c.lengthFields[m.field % c.lengthFields.length]!, m.value)
  }
}

const requestArb = fc.oneof(
  fc.record({
    type: fc.constant(P.CMD_WRITE),
    offset: fc.integer({ min: 0, max: 63 }).map((k) => k * 4096),
    length: fc.constantFrom(512, 4096, 8192),
    fua: fc.boolean()
  }),
  fc.record({
    type: fc.constantFrom(P.CMD_READ, P.CMD_TRIM, P.CMD_WRITE_ZEROES, P.CMD_FLUSH),
    offset: fc.integer({ min: 0, max: 63 }).map((k) => k * 4096),
    length: fc.constantFrom(0, 512, 4096),
    fua: fc.boolean()
  })
)

/** Well-formed conversations: some options, GO or EXPORT_NAME, some requests, maybe a DISC. */
export const conversationArb: fc.Arbitrary<Conversation> = fc
  .record({
    options: fc.array(fc.constantFrom(P.OPT_LIST, P.OPT_INFO, 99, P.OPT_STRUCTURED_REPLY), { maxLength: 3 }),
    via: fc.constantFrom("go", "export-name"),
    requests: fc.array(requestArb, { maxLength: 8 }),
    disc: fc.boolean()
  })
  .map(({ options, via, requests, disc }) => {
    const s = new Script().flags(via === "go" ? undefined : P.FLAG_C_FIXED_NEWSTYLE)
    for (const o of options) {
      if (o === P.OPT_INFO) s.info(P.OPT_INFO, EXPORT, [P.INFO_DESCRIPTION])
      else s.option(o)
    }
    if (via === "go") s.info(P.OPT_GO, EXPORT)
    else s.option(P.OPT_EXPORT_NAME, Codec.encodeName(EXPORT))
    for (const r of requests) s.request(r.type, r.offset, r.length, r.fua ? P.CMD_FLAG_FUA : 0)
    if (disc) s.request(P.CMD_DISC, 0, 0)
    return s.done()
  })

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ _tag: fc.constant("Flip" as const), at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ _tag: fc.constant("Truncate" as const), at: fc.nat() }),
  fc.record({
    _tag: fc.constant("Splice" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 40 })
  }),
  fc.record({ _tag: fc.constant("Delete" as const), at: fc.nat(), count: fc.integer({ min: 1, max: 40 }) }),
  fc.record({
    _tag: fc.constant("Oversize" as const),
    field: fc.nat(),
    value: fc.constantFrom(0xffffffff, 0x80000000, 64 * 1024 + 1, 1024 * 1024 + 1, 4096 + 1)
  })
)

/** Typed errors a connection may close with. */
export const TYPED = ["NbdProtocolError", "EndedMidMessage", "SocketFailed"] as const

/** The verdict of `lines` (the WARN lines logged while one connection ran), or why it is not one. */
export const verdictOf = (lines: ReadonlyArray<LogLine>): string => {
  const warned = lines.filter((l) => l.level !== "INFO" && l.level !== "DEBUG")
  if (warned.length === 0) return "clean"
  if (warned.length > 1)
    return `unexpected: ${warned.length} warnings: ${warned.map((l) => l.text).join(" | ")}`
  const line = warned[0]!
  const tag = TYPED.find((t) => line.tags.includes(t))
  if (line.level !== "WARN" || tag === undefined || !line.text.startsWith("nbd: connection closed"))
    return `unexpected: ${line.level} ${line.text}`
  if (tag !== "NbdProtocolError") return tag
  const reason = /NBD protocol error \(([a-z-]+)\)/.exec(line.text)
  return `${tag}:${reason?.[1] ?? "?"}`
}

/**
 * Sends `bytes` on a fresh connection, ends its side, reads (and drops) what the server
 * sends until it closes. Resolves `"closed"`, or `"hung"` if it is still open after `ms`.
 */
export const replay = (endpoint: Endpoint, bytes: Uint8Array, ms = 10_000): Promise<"closed" | "hung"> =>
  new Promise((resolve) => {
    const socket =
      "path" in endpoint
        ? Net.createConnection({ path: endpoint.path })
        : Net.createConnection({ host: endpoint.host, port: endpoint.port })
    const timer = setTimeout(() => {
      socket.destroy()
      resolve("hung")
    }, ms)
    socket.on("error", () => {}) // the server may close before it read everything: EPIPE, ECONNRESET
    socket.on("data", () => {})
    socket.on("close", () => {
      clearTimeout(timer)
      resolve("closed")
    })
    socket.once("connect", () => socket.end(bytes))
  })

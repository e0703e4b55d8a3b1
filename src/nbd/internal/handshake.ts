/**
 * The server's side of the fixed-newstyle handshake (proto.md, "Fixed newstyle
 * negotiation"): the greeting, the client's flags, then options until one of
 * `NBD_OPT_EXPORT_NAME` or a successful `NBD_OPT_GO` enters transmission, an
 * `NBD_OPT_ABORT` ends the session, or the client breaks the protocol (the connection
 * closes with a typed error). Options other than EXPORT_NAME, ABORT, LIST, INFO and GO
 * are answered `NBD_REP_ERR_UNSUP`.
 */
import type * as Net from "node:net"
import { Effect } from "effect"
import * as Codec from "./codec.js"
import { NbdProtocolError } from "./codec.js"
import * as P from "./protocol.js"
import { type EndedMidMessage, type SocketFailed, type SocketReader, writeParts } from "./socketIo.js"

/** What the handshake tells the client about the export. */
export interface ExportInfo {
  readonly name: string
  readonly description: string
  readonly size: number
  readonly transmissionFlags: number
  readonly blockSizes: Codec.BlockSizes
}

export type HandshakeOutcome =
  | { readonly _tag: "Transmission"; readonly via: "go" | "export-name" }
  | { readonly _tag: "Aborted" }
  /** The client left between options. */
  | { readonly _tag: "Ended" }

/** Option data longer than this is dropped unread and answered `NBD_REP_ERR_TOO_BIG`. */
export const MAX_OPTION_BYTES = 64 * 1024
/** Options one connection may send before the server takes it for a denial of service. */
export const MAX_OPTIONS = 256

export type HandshakeError = NbdProtocolError | EndedMidMessage | SocketFailed

/** The export's name as the client may ask for it: its own, or the empty default. */
const matches = (exported: ExportInfo, asked: string) => asked === "" || asked === exported.name

export const handshake = (
  socket: Net.Socket,
  reader: SocketReader,
  exported: ExportInfo
): Effect.Effect<HandshakeOutcome, HandshakeError> =>
  Effect.gen(function* () {
    const offered = P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES
    writeParts(socket, [Codec.encodeGreeting(offered)])
    const flagBytes = yield* reader.take(4, "the client flags")
    if (flagBytes === undefined) return { _tag: "Ended" } as const
    const clientFlags = Codec.decodeClientFlags(flagBytes, offered)
    if (clientFlags instanceof NbdProtocolError) return yield* clientFlags
    const noZeroes = (clientFlags & P.FLAG_C_NO_ZEROES) !== 0
    const reply = (option: number, type: number, data?: Uint8Array) =>
      writeParts(socket, [Codec.encodeOptionReply(option, type, data)])
    const error = (option: number, type: number, text: string) => reply(option, type, Codec.encodeName(text))

    for (let count = 0; ; count++) {
      const headerBytes = yield* reader.take(P.OPTION_HEADER_BYTES, "an option header")
      if (headerBytes === undefined) return { _tag: "Ended" } as const
      const header = Codec.decodeOptionHeader(headerBytes)
      if (header instanceof NbdProtocolError) return yield* header
      if (count >= MAX_OPTIONS)
        return yield* new NbdProtocolError({
          reason: "too-many-options",
          detail: `more than ${MAX_OPTIONS} options without entering transmission`
        })
      const { option, length } = header
      if (length > MAX_OPTION_BYTES) {
        // No option of ours needs this much: its data is read off and dropped, never held
        // (the handshake's timeout bounds how long a client may keep this up).
        yield* reader.skip(length, `option ${option}'s data`)
        error(option, P.REP_ERR_TOO_BIG, `option data over ${MAX_OPTION_BYTES} bytes is not read`)
        continue
      }
      const data = yield* reader.take(length, `option ${option}'s data`)
      if (data === undefined)
        return yield* new NbdProtocolError({
          reason: "truncated",
          detail: `the client closed the connection before option ${option}'s ${length} bytes`
        })

      switch (option) {
        case P.OPT_EXPORT_NAME: {
          const name = Codec.decodeName(data)
          if (!matches(exported, name))
            // The spec leaves no way to refuse but closing.
            return yield* new NbdProtocolError({
              reason: "unknown-export",
              detail: `NBD_OPT_EXPORT_NAME asked for ${JSON.stringify(name)}; the export is ${JSON.stringify(exported.name)}`
            })
          writeParts(socket, [
            Codec.encodeExportNameReply(exported.size, exported.transmissionFlags, noZeroes)
          ])
          return { _tag: "Transmission", via: "export-name" } as const
        }
        case P.OPT_ABORT:
          reply(option, P.REP_ACK)
          return { _tag: "Aborted" } as const
        case P.OPT_LIST:
          if (length !== 0) {
            error(option, P.REP_ERR_INVALID, "NBD_OPT_LIST takes no data")
            break
          }
          reply(option, P.REP_SERVER, Codec.encodeServerEntry(exported.name))
          reply(option, P.REP_ACK)
          break
        case P.OPT_INFO:
        case P.OPT_GO: {
          const request = Codec.decodeInfoRequest(data)
          if (request === undefined) {
            error(option, P.REP_ERR_INVALID, "the name and information-request lengths do not add up")
            break
          }
          if (!matches(exported, request.name)) {
            error(option, P.REP_ERR_UNKNOWN, `no export named ${JSON.stringify(request.name)}`)
            break
          }
          reply(option, P.REP_INFO, Codec.encodeInfoExport(exported.size, exported.transmissionFlags))
          // Sent even unasked: the constraints differ from the defaults (minimum 512), and
          // requests outside them are answered EINVAL, never corrupt anything.
          reply(option, P.REP_INFO, Codec.encodeInfoBlockSize(exported.blockSizes))
          if (request.requests.includes(P.INFO_NAME))
            reply(option, P.REP_INFO, Codec.encodeInfoText(P.INFO_NAME, exported.name))
          if (request.requests.includes(P.INFO_DESCRIPTION))
            reply(option, P.REP_INFO, Codec.encodeInfoText(P.INFO_DESCRIPTION, exported.description))
          reply(option, P.REP_ACK)
          if (option === P.OPT_GO) return { _tag: "Transmission", via: "go" } as const
          break
        }
        default:
          error(option, P.REP_ERR_UNSUP, `option ${option} is not supported`)
      }
    }
  })

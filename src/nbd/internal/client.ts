/**
 * A small NBD client (fixed newstyle, `NBD_OPT_GO`, simple replies), for the tests and
 * for embedders: requests pipeline over one connection and replies are matched by
 * cookie. The raw layer under it (`dial`, `OptionChannel`, `Connection.raw…`) lets the
 * tests send what no well-behaved client would; `Nbd.ts` exports only `connect`.
 * node:net directly, for the same reasons as the server (exact reads, see socketIo.ts).
 */
import * as Net from "node:net"
import { Data, Deferred, type Duration, Effect, FiberId } from "effect"
import type * as Scope from "effect/Scope"
import * as Codec from "./codec.js"
import { NbdProtocolError } from "./codec.js"
import * as P from "./protocol.js"
import { type EndedMidMessage, SocketFailed, SocketReader, writeParts } from "./socketIo.js"

export type Endpoint = { readonly host: string; readonly port: number } | { readonly path: string }

/** The server answered a request with an error. */
export class NbdCommandFailed extends Data.TaggedError("NbdCommandFailed")<{
  readonly command: string
  readonly offset: number
  readonly length: number
  /** The NBD error value (`NBD_EINVAL` is 22, …). */
  readonly error: number
}> {
  override get message() {
    return `${this.command} at ${this.offset} (${this.length} bytes) failed: ${P.errorName(this.error)}`
  }
}

/** The server refused an option (an `NBD_REP_ERR_*` reply). */
export class NbdOptionRefused extends Data.TaggedError("NbdOptionRefused")<{
  readonly option: number
  readonly reply: number
  readonly text: string
}> {
  override get message() {
    return `the server refused option ${this.option} (reply ${this.reply - 2 ** 31 >= 0 ? `error ${this.reply - 2 ** 31}` : this.reply})${this.text === "" ? "" : `: ${this.text}`}`
  }
}

/** The connection is gone; requests still waiting fail with this. */
export class NbdConnectionClosed extends Data.TaggedError("NbdConnectionClosed")<{
  readonly cause?: unknown
}> {
  override get message() {
    return "the NBD connection is closed"
  }
}

export type ClientError =
  | NbdCommandFailed
  | NbdOptionRefused
  | NbdConnectionClosed
  | NbdProtocolError
  | EndedMidMessage
  | SocketFailed

/** Opens a socket to `endpoint`; it is destroyed with the scope. */
export const dial = (
  endpoint: Endpoint,
  timeout: Duration.DurationInput = "10 seconds"
): Effect.Effect<{ socket: Net.Socket; reader: SocketReader }, SocketFailed, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<Net.Socket, SocketFailed>((resume) => {
      const socket =
        "path" in endpoint
          ? Net.createConnection({ path: endpoint.path })
          : Net.createConnection({ host: endpoint.host, port: endpoint.port, noDelay: true })
      const fail = (cause: unknown) => {
        socket.destroy()
        resume(Effect.fail(new SocketFailed({ cause })))
      }
      socket.once("error", fail)
      socket.once("connect", () => {
        socket.off("error", fail)
        socket.on("error", () => {}) // the reader reports it
        resume(Effect.succeed(socket))
      })
      return Effect.sync(() => socket.destroy())
    }).pipe(
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () => new SocketFailed({ cause: new Error("connect timed out") })
      })
    ),
    (socket) => Effect.sync(() => socket.destroy())
  ).pipe(Effect.map((socket) => ({ socket, reader: new SocketReader(socket) })))

const orClosed = <A>(taken: A | undefined, what: string): Effect.Effect<A, NbdConnectionClosed> =>
  taken === undefined
    ? Effect.fail(new NbdConnectionClosed({ cause: `the server closed the connection before ${what}` }))
    : Effect.succeed(taken)

export interface OptionReply {
  readonly type: number
  readonly data: Uint8Array
}

/** The option-haggling side of a connection: the greeting read, the client flags sent. */
export class OptionChannel {
  constructor(
    readonly socket: Net.Socket,
    readonly reader: SocketReader,
    /** The server's handshake flags. */
    readonly handshakeFlags: number,
    readonly noZeroes: boolean
  ) {}

  static open(
    socket: Net.Socket,
    reader: SocketReader,
    clientFlags?: number
  ): Effect.Effect<OptionChannel, ClientError> {
    return Effect.gen(function* () {
      const greeting = yield* orClosed(yield* reader.take(P.GREETING_BYTES, "the greeting"), "the greeting")
      const flags = Codec.decodeGreeting(greeting)
      if (flags instanceof NbdProtocolError) return yield* flags
      const mine =
        clientFlags ?? P.FLAG_C_FIXED_NEWSTYLE | ((flags & P.FLAG_NO_ZEROES) !== 0 ? P.FLAG_C_NO_ZEROES : 0)
      writeParts(socket, [Codec.encodeClientFlags(mine)])
      return new OptionChannel(socket, reader, flags, (mine & P.FLAG_C_NO_ZEROES) !== 0)
    })
  }

  send(option: number, data?: Uint8Array): void {
    writeParts(this.socket, [Codec.encodeOption(option, data)])
  }

  /** The next option reply (header and data). */
  readonly reply: Effect.Effect<OptionReply & { readonly option: number }, ClientError> = Effect.suspend(
    () => {
      const reader = this.reader
      return Effect.gen(function* () {
        const bytes = yield* orClosed(
          yield* reader.take(P.OPTION_REPLY_HEADER_BYTES, "an option reply"),
          "an option reply"
        )
        const header = Codec.decodeOptionReplyHeader(bytes)
        if (header instanceof NbdProtocolError) return yield* header
        const data = yield* orClosed(
          yield* reader.take(header.length, "an option reply's data"),
          "reply data"
        )
        return { option: header.option, type: header.type, data }
      })
    }
  )

  /** Sends `option` and collects its replies up to the final one (ACK or an error). */
  ask(option: number, data?: Uint8Array): Effect.Effect<ReadonlyArray<OptionReply>, ClientError> {
    this.send(option, data)
    const self = this
    return Effect.gen(function* () {
      const replies: Array<OptionReply> = []
      for (;;) {
        const r = yield* self.reply
        if (r.option !== option)
          return yield* new NbdProtocolError({
            reason: "unexpected-reply",
            detail: `a reply to option ${r.option} while waiting for ${option}`
          })
        replies.push(r)
        if (r.type === P.REP_ACK || P.isReplyError(r.type)) return replies
      }
    })
  }
}

export interface Negotiated {
  readonly size: number
  readonly transmissionFlags: number
  readonly blockSizes: Codec.BlockSizes | undefined
}

/** `NBD_OPT_GO` for `name`, asking for the block sizes: transmission begins on success. */
export const go = (channel: OptionChannel, name: string): Effect.Effect<Negotiated, ClientError> =>
  Effect.gen(function* () {
    const replies = yield* channel.ask(
      P.OPT_GO,
      Codec.encodeInfoRequest({ name, requests: [P.INFO_BLOCK_SIZE] })
    )
    const last = replies[replies.length - 1]!
    if (last.type !== P.REP_ACK)
      return yield* new NbdOptionRefused({
        option: P.OPT_GO,
        reply: last.type,
        text: Codec.decodeName(last.data)
      })
    let size: number | undefined
    let transmissionFlags = 0
    let blockSizes: Codec.BlockSizes | undefined
    for (const r of replies) {
      if (r.type !== P.REP_INFO) continue
      const info = Codec.decodeInfo(r.data)
      if (info instanceof NbdProtocolError) return yield* info
      if (info._tag === "Export") {
        size = info.size
        transmissionFlags = info.flags
      } else if (info._tag === "BlockSize") blockSizes = info.sizes
    }
    if (size === undefined)
      return yield* new NbdProtocolError({
        reason: "unexpected-reply",
        detail: "NBD_OPT_GO succeeded without NBD_INFO_EXPORT"
      })
    return { size, transmissionFlags, blockSizes }
  })

interface Pending {
  readonly command: number
  readonly offset: number
  readonly length: number
  /** Bytes of data that follow a successful reply (READ only). */
  readonly dataBytes: number
  readonly done: Deferred.Deferred<Uint8Array, ClientError>
}

export interface RawRequest {
  readonly type: number
  readonly flags?: number | undefined
  readonly offset?: number | bigint | undefined
  readonly length?: number | undefined
  /** Sent after the header (a WRITE's data); may disagree with `length` on purpose. */
  readonly payload?: Uint8Array | undefined
  /** Bytes of data a successful reply carries (default: `length` for READ, else 0). */
  readonly replyData?: number | undefined
}

/**
 * The transmission phase: requests go out with fresh cookies, one fiber reads replies
 * and completes them by cookie. When the connection ends, every waiting request fails
 * with `NbdConnectionClosed`.
 */
export class Connection {
  private nextCookie = 1n
  private readonly pending = new Map<bigint, Pending>()
  private failure: ClientError | undefined = undefined

  constructor(
    readonly socket: Net.Socket,
    readonly reader: SocketReader,
    /** Completes (with why) once the reply reader stopped: the connection is over. */
    readonly closed: Deferred.Deferred<ClientError | undefined>
  ) {}

  static start(socket: Net.Socket, reader: SocketReader): Effect.Effect<Connection, never, Scope.Scope> {
    return Effect.gen(function* () {
      const closed = yield* Deferred.make<ClientError | undefined>()
      const connection = new Connection(socket, reader, closed)
      yield* Effect.forkScoped(connection.readReplies)
      return connection
    })
  }

  private readonly readReplies: Effect.Effect<void> = Effect.suspend(() => {
    const self = this
    return Effect.gen(function* () {
      for (;;) {
        const bytes = yield* self.reader.take(P.SIMPLE_REPLY_BYTES, "a reply")
        if (bytes === undefined) return undefined
        const reply = Codec.decodeSimpleReply(bytes)
        if (reply instanceof NbdProtocolError) return yield* reply
        const pending = self.pending.get(reply.cookie)
        if (pending === undefined)
          return yield* new NbdProtocolError({
            reason: "unexpected-reply",
            detail: `a reply for cookie ${reply.cookie}, which no request has`
          })
        self.pending.delete(reply.cookie)
        if (reply.error !== 0) {
          yield* Deferred.fail(
            pending.done,
            new NbdCommandFailed({
              command: P.commandName(pending.command),
              offset: pending.offset,
              length: pending.length,
              error: reply.error
            })
          )
          continue
        }
        const data = yield* self.reader.take(pending.dataBytes, "a READ reply's data")
        if (data === undefined)
          return yield* new NbdConnectionClosed({
            cause: "the server closed the connection inside a READ reply"
          })
        yield* Deferred.succeed(pending.done, data)
      }
    }).pipe(
      Effect.catchAll((error: ClientError) => Effect.succeed(error)),
      Effect.flatMap((why) =>
        Effect.gen(function* () {
          self.failure = new NbdConnectionClosed({ cause: why })
          for (const p of self.pending.values()) yield* Deferred.fail(p.done, self.failure)
          self.pending.clear()
          yield* Deferred.succeed(self.closed, why)
        })
      )
    )
  })

  /** Sends any request (well-formed or not) and waits for its reply. */
  raw(request: RawRequest): Effect.Effect<Uint8Array, ClientError> {
    return Effect.suspend(() => this.sendNow(request))
  }

  /**
   * Sends `request` now (before anything sent after this call returns) and gives the wait
   * for its reply.
   */
  sendNow(request: RawRequest): Effect.Effect<Uint8Array, ClientError> {
    if (this.failure !== undefined) return Effect.fail(this.failure)
    const cookie = this.nextCookie++
    const length = request.length ?? 0
    const done = Deferred.unsafeMake<Uint8Array, ClientError>(FiberId.none)
    this.pending.set(cookie, {
      command: request.type,
      offset: Number(request.offset ?? 0),
      length,
      dataBytes: request.replyData ?? (request.type === P.CMD_READ ? length : 0),
      done
    })
    const header = Codec.encodeRequest({
      flags: request.flags ?? 0,
      type: request.type,
      cookie,
      offset: request.offset ?? 0,
      length
    })
    writeParts(this.socket, request.payload === undefined ? [header] : [header, request.payload])
    return Deferred.await(done)
  }

  /** Writes bytes as they are (garbage, a request cut short, …). */
  rawBytes(bytes: Uint8Array): void {
    writeParts(this.socket, [bytes])
  }

  /** Sends NBD_CMD_DISC (no reply) and waits for the server to close. */
  readonly disconnect: Effect.Effect<void> = Effect.suspend(() => {
    if (this.failure === undefined)
      writeParts(this.socket, [
        Codec.encodeRequest({ flags: 0, type: P.CMD_DISC, cookie: 0n, offset: 0, length: 0 })
      ])
    return Deferred.await(this.closed).pipe(Effect.asVoid)
  })
}

export interface ConnectOptions {
  /** The server: TCP `host` and `port`, or a unix socket `path`. */
  readonly connect: Endpoint
  /** The export to ask for ("" is the server's default export). Default "". */
  readonly exportName?: string | undefined
  /** For the TCP connect. Default 10 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

export interface WriteFlags {
  /** Answered only once the data is durable (`NBD_CMD_FLAG_FUA`). */
  readonly fua?: boolean | undefined
}

export interface Client extends Negotiated {
  readonly read: (offset: number, length: number) => Effect.Effect<Uint8Array, ClientError>
  readonly write: (offset: number, bytes: Uint8Array, flags?: WriteFlags) => Effect.Effect<void, ClientError>
  readonly flush: Effect.Effect<void, ClientError>
  readonly trim: (offset: number, length: number, flags?: WriteFlags) => Effect.Effect<void, ClientError>
  readonly writeZeroes: (
    offset: number,
    length: number,
    flags?: WriteFlags & { readonly noHole?: boolean | undefined }
  ) => Effect.Effect<void, ClientError>
  /** A soft disconnect (`NBD_CMD_DISC`); waits for the server to close the connection. */
  readonly disconnect: Effect.Effect<void>
}

/** Connects, then handshakes with `NBD_OPT_GO`; the connection closes with the scope. */
export const connectRaw = (
  options: ConnectOptions
): Effect.Effect<{ client: Client; connection: Connection }, ClientError, Scope.Scope> =>
  Effect.gen(function* () {
    const { socket, reader } = yield* dial(options.connect, options.timeout)
    const channel = yield* OptionChannel.open(socket, reader)
    const negotiated = yield* go(channel, options.exportName ?? "")
    const connection = yield* Connection.start(socket, reader)
    const fua = (flags: WriteFlags | undefined) => (flags?.fua === true ? P.CMD_FLAG_FUA : 0)
    const client: Client = {
      ...negotiated,
      read: (offset, length) => connection.raw({ type: P.CMD_READ, offset, length }),
      write: (offset, bytes, flags) =>
        Effect.asVoid(
          connection.raw({
            type: P.CMD_WRITE,
            flags: fua(flags),
            offset,
            length: bytes.byteLength,
            payload: bytes
          })
        ),
      flush: Effect.asVoid(connection.raw({ type: P.CMD_FLUSH })),
      trim: (offset, length, flags) =>
        Effect.asVoid(connection.raw({ type: P.CMD_TRIM, flags: fua(flags), offset, length })),
      writeZeroes: (offset, length, flags) =>
        Effect.asVoid(
          connection.raw({
            type: P.CMD_WRITE_ZEROES,
            flags: fua(flags) | (flags?.noHole === true ? P.CMD_FLAG_NO_HOLE : 0),
            offset,
            length
          })
        ),
      disconnect: connection.disconnect
    }
    return { client, connection }
  })

export const connect = (options: ConnectOptions): Effect.Effect<Client, ClientError, Scope.Scope> =>
  Effect.map(connectRaw(options), (c) => c.client)

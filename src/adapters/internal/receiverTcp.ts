/**
 * `LogReceiver.layerTcp`: the wire codec over an @effect/platform socket. Per connection:
 * a reader (socket `run` handler) decoding frames into the handshake and `messages`, and
 * a writer fiber draining the bounded outbox of encoded frames. A write completes only
 * when the socket has taken the bytes, so a receiver that stops reading fills the outbox
 * and `send` suspends. Any wire error or socket end marks the connection lost.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import type * as Socket from "@effect/platform/Socket"
import {
  Cause,
  type Chunk,
  Deferred,
  type Duration,
  Effect,
  ExecutionStrategy,
  Exit,
  Mailbox,
  Queue,
  Scope
} from "effect"
import type { LogReceiver } from "../LogReceiver.js"
import {
  type ConnectError,
  ConnectionClosed,
  ReceiverRefused,
  ReceiverUnreachable
} from "./receiverErrors.js"
import { makeLink } from "./receiverLink.js"
import { makeDecoder } from "./wireDecoder.js"
import { encode } from "./wireEncode.js"
import { type Frame, WireError } from "./wireFrame.js"

export interface TcpOptions {
  readonly host: string
  readonly port: number
  /** Largest frame accepted from the receiver (default `Wire.DEFAULT_MAX_FRAME_BYTES`). */
  readonly maxFrameBytes?: number | undefined
  /** Socket open plus handshake (default 5 seconds). */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Frames the sender may buffer before `send` suspends (default 64). */
  readonly sendBuffer?: number | undefined
}

/** Small frames are coalesced into one socket write up to this size. */
const GROUP_BYTES = 64 * 1024
/** Frames the writer takes from the outbox at once (buffered on top of `sendBuffer`). */
const WRITE_BATCH = 32

const unexpected = (frame: Frame, when: string) =>
  new WireError({ reason: "unexpected-frame", detail: `${frame._tag} ${when}` })

const writeFrames = (
  write: (bytes: Uint8Array) => Effect.Effect<void, Socket.SocketError>,
  frames: Chunk.Chunk<Uint8Array>
): Effect.Effect<void, Socket.SocketError> =>
  Effect.gen(function* () {
    let group: Array<Uint8Array> = []
    let size = 0
    const flush = () => {
      const bytes = group.length === 1 ? group[0]! : Buffer.concat(group, size)
      group = []
      size = 0
      return write(bytes)
    }
    for (const frame of frames) {
      if (group.length > 0 && size + frame.byteLength > GROUP_BYTES) yield* flush()
      group.push(frame)
      size += frame.byteLength
    }
    if (group.length > 0) yield* flush()
  })

const open = (
  options: TcpOptions,
  hello: LogReceiver.Hello,
  scope: Scope.Scope
): Effect.Effect<LogReceiver.Connection, ConnectError> =>
  Effect.gen(function* () {
    const link = yield* makeLink<Uint8Array>(Math.max(1, options.sendBuffer ?? 64))
    const handshake = yield* Deferred.make<number, ConnectError>()
    const decoder = makeDecoder({ maxFrameBytes: options.maxFrameBytes })
    let welcomed = false

    const lose = (cause: unknown) => {
      if (!welcomed) Deferred.unsafeDone(handshake, Exit.fail(new ReceiverUnreachable({ cause })))
      link.markLost(cause)
    }

    // Runs synchronously for each chunk; a returned failure ends the socket's `run`.
    const onChunk = (chunk: Uint8Array) => {
      const frames: Array<Frame> = []
      const error = decoder.pushInto(chunk, frames)
      for (const frame of frames) {
        if (welcomed) {
          if (frame._tag === "Ack" || frame._tag === "Gap") link.deliver(frame)
          else return lost(unexpected(frame, "after the welcome"))
        } else if (frame._tag === "Welcome") {
          welcomed = true
          Deferred.unsafeDone(handshake, Exit.succeed(frame.durableSeq))
        } else if (frame._tag === "Refuse") {
          const refused = new ReceiverRefused({ reason: frame.reason, detail: frame.detail })
          Deferred.unsafeDone(handshake, Exit.fail(refused))
          return lost(refused)
        } else return lost(unexpected(frame, "before the welcome"))
      }
      if (error !== undefined) return lost(error)
    }
    const lost = (cause: unknown) => {
      lose(cause)
      return Effect.fail(cause)
    }

    const socket = yield* NodeSocket.makeNet({ host: options.host, port: options.port }).pipe(
      Effect.mapError((cause) => new ReceiverUnreachable({ cause }))
    )
    yield* socket.run(onChunk).pipe(
      Effect.onExit((exit) =>
        Effect.sync(() =>
          lose(
            Exit.isFailure(exit)
              ? Cause.squash(exit.cause)
              : new ConnectionClosed({ by: "receiver", detail: "end of stream" })
          )
        )
      ),
      Effect.forkIn(scope)
    )

    const write = yield* Scope.extend(socket.writer, scope)
    yield* Effect.gen(function* () {
      for (;;) yield* writeFrames(write, yield* Queue.takeBetween(link.outbox, 1, WRITE_BATCH))
    }).pipe(
      Effect.catchAll((error) => Effect.sync(() => lose(error))),
      Effect.forkIn(scope)
    )
    // Runs first on close, so the loss reads "closed by the filter" rather than an interruption.
    yield* Scope.addFinalizer(
      scope,
      Effect.sync(() => lose(new ConnectionClosed({ by: "filter", detail: "connection scope closed" })))
    )

    link.outbox.unsafeOffer(encode({ _tag: "Hello", ...hello }))
    const durableSeq = yield* Deferred.await(handshake).pipe(
      Effect.timeoutFail({
        duration: options.connectTimeout ?? "5 seconds",
        onTimeout: () =>
          new ReceiverUnreachable({
            cause: new Cause.TimeoutException(`no welcome from ${options.host}:${options.port} in time`)
          })
      })
    )
    const connection: LogReceiver.Connection = {
      durableSeq,
      send: (record) => Effect.suspend(() => link.send(encode(record))),
      messages: Mailbox.toStream(link.messages)
    }
    return connection
  })

export const makeTcp = (options: TcpOptions): LogReceiver.Service => ({
  connect: Effect.fn("LogReceiver.tcp.connect")(function* (hello: LogReceiver.Hello) {
    // A scope of its own, so a failed connect releases its socket at once.
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    return yield* open(options, hello, scope).pipe(
      Effect.onExit((exit) => (Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void))
    )
  })
})

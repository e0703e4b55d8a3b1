/**
 * `LogReceiver.layerTcp`: the wire codec over a `node:net` socket. Per connection: the
 * socket's `data` events decode frames into the handshake and `messages`, and a writer
 * fiber drains the bounded outbox of encoded frames, a batch at a time in one corked
 * write (one `writev`, no copy). The writer waits only when the socket's buffer is
 * above its high-water mark (Node's `drain`), so a receiver that stops reading fills
 * the outbox and `send` suspends. Any wire error or socket end marks the connection lost.
 * Checksum requests go through the same outbox as records (their order on the stream is
 * the order they were queued); replies and refusals are messages like acks.
 * When nothing has been sent for `keepAliveInterval`, a keep-alive frame goes out, so the
 * receiver's idle timeout never closes a healthy idle link; the receiver's answers are
 * dropped here (they only prove the link carries traffic both ways).
 */
import * as Net from "node:net"
import {
  Cause,
  Chunk,
  Clock,
  Deferred,
  Duration,
  Effect,
  ExecutionStrategy,
  Exit,
  Mailbox,
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
import { makeSlabAllocator } from "../../internal/slab.js"
import {
  encode,
  encodePartsWith,
  encodeWith,
  type Frame,
  makeDecoder,
  WireError
} from "../../protocol/Wire.js"

export interface TcpOptions {
  readonly host: string
  readonly port: number
  /** Largest frame accepted from the receiver (default `Wire.DEFAULT_MAX_FRAME_BYTES`). */
  readonly maxFrameBytes?: number | undefined
  /** Socket open plus handshake (default 5 seconds). */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Frames the sender may buffer before `send` suspends (default 64). */
  readonly sendBuffer?: number | undefined
  /**
   * A keep-alive goes out once nothing was sent for this long (default 5 seconds, well
   * under the receiver's idle timeout of 30; `Duration.infinity` sends none).
   */
  readonly keepAliveInterval?: Duration.DurationInput | undefined
}

export const DEFAULT_KEEP_ALIVE_INTERVAL = Duration.seconds(5)

/**
 * Outgoing frames are carved from 1 MiB slabs: a 4 KiB write's frame was an ArrayBuffer
 * of its own, a tenth of the filter's cost per small write with the garbage it made.
 */
const allocateFrame = makeSlabAllocator({ slabBytes: 1 << 20, largest: 1 << 17 })
const encodeRecord = encodeWith(allocateFrame)
/** `sendOwned`: the header from a slab, the payload written from the caller's buffer. */
const encodeOwned = encodePartsWith(allocateFrame)
/** Never changed, so one buffer serves every keep-alive. */
const KEEP_ALIVE = encode({ _tag: "KeepAlive" })

/**
 * What the writer puts on the socket for one record: a frame, its parts in order, or its
 * parts and the lender's `onWritten`, called once the socket has taken the last part
 * (`sendAll` lends a run's data with one `onWritten`, carried by the run's last record).
 */
type Outgoing = Uint8Array | ReadonlyArray<Uint8Array> | Lent

interface Lent {
  readonly parts: ReadonlyArray<Uint8Array>
  readonly onWritten: () => void
}

const unexpected = (frame: Frame, when: string) =>
  new WireError({ reason: "unexpected-frame", detail: `${frame._tag} ${when}` })

/**
 * A connected socket, and what it said before its owner listened: between the connect
 * and the fiber that attaches the real listeners running, the peer may reset the
 * connection, and an `error` with no listener would be an uncaught exception.
 */
interface Connected {
  readonly socket: Net.Socket
  /** Stops holding early errors; the first one held, if any. */
  readonly release: () => Error | undefined
}

/** Connects, failing with the socket's error (refused, unreachable). Interruption destroys the socket. */
const connectSocket = (host: string, port: number) =>
  Effect.async<Connected, ReceiverUnreachable>((resume) => {
    const socket = Net.connect({ host, port, noDelay: true })
    const onError = (cause: Error) => {
      socket.destroy()
      resume(Effect.fail(new ReceiverUnreachable({ cause })))
    }
    socket.once("error", onError)
    socket.once("connect", () => {
      socket.off("error", onError)
      let held: Error | undefined
      const hold = (cause: Error) => {
        held ??= cause
      }
      socket.on("error", hold)
      resume(
        Effect.succeed({
          socket,
          release: () => {
            socket.off("error", hold)
            return held
          }
        })
      )
    })
    return Effect.sync(() => socket.destroy())
  })

/** Calls each `onWritten` of a batch: once the socket took its last byte, it took them all. */
const callAll = (callbacks: ReadonlyArray<() => void>) => (error: Error | null | undefined) => {
  // Only a clean write hands the bytes back; after an error they are left to the collector.
  if (error == null) for (let i = 0; i < callbacks.length; i++) callbacks[i]!()
}

/**
 * Writes a batch of frames in one corked write, with one callback for the batch (a
 * callback per payload was a share of the filter's socket time); waits only while the
 * socket is above its high-water mark.
 */
const writeFrames = (socket: Net.Socket, frames: ReadonlyArray<Outgoing>) =>
  Effect.async<void>((resume) => {
    if (socket.destroyed) return resume(Effect.void)
    let callbacks: Array<() => void> | undefined
    // The last part goes out apart, with the batch's callback if it has one.
    let last: Uint8Array | undefined
    socket.cork()
    for (let f = 0; f < frames.length; f++) {
      const frame = frames[f]!
      if (frame instanceof Uint8Array) {
        if (last !== undefined) socket.write(last)
        last = frame
        continue
      }
      let parts: ReadonlyArray<Uint8Array>
      if ("parts" in frame) {
        parts = frame.parts
        if (callbacks === undefined) callbacks = [frame.onWritten]
        else callbacks.push(frame.onWritten)
      } else parts = frame
      for (let i = 0; i < parts.length; i++) {
        if (last !== undefined) socket.write(last)
        last = parts[i]!
      }
    }
    const below =
      last === undefined
        ? true
        : callbacks === undefined
          ? socket.write(last)
          : socket.write(last, callAll(callbacks))
    socket.uncork()
    if (below) return resume(Effect.void)
    const unlisten = () => {
      socket.off("drain", done)
      socket.off("close", done)
    }
    const done = () => {
      unlisten()
      resume(Effect.void)
    }
    socket.on("drain", done)
    socket.on("close", done)
    return Effect.sync(unlisten)
  })

const open = (
  options: TcpOptions,
  hello: LogReceiver.Hello,
  scope: Scope.Scope
): Effect.Effect<LogReceiver.Connection, ConnectError> =>
  Effect.gen(function* () {
    const link = yield* makeLink<Outgoing>(Math.max(1, options.sendBuffer ?? 64))
    const handshake = yield* Deferred.make<number, ConnectError>()
    const decoder = makeDecoder({ maxFrameBytes: options.maxFrameBytes })
    let welcomed = false

    const lose = (cause: unknown) => {
      if (!welcomed) Deferred.unsafeDone(handshake, Exit.fail(new ReceiverUnreachable({ cause })))
      link.markLost(cause)
    }

    // One deadline for the socket open and the handshake together.
    const budget = Duration.toMillis(Duration.decode(options.connectTimeout ?? "5 seconds"))
    const startedAt = yield* Clock.currentTimeMillis
    const tooLate = (what: string) => () =>
      new ReceiverUnreachable({
        cause: new Cause.TimeoutException(`${what} ${options.host}:${options.port} in time`)
      })
    const connected = yield* connectSocket(options.host, options.port).pipe(
      Effect.timeoutFail({ duration: Duration.millis(budget), onTimeout: tooLate("could not connect to") })
    )
    const socket = connected.socket
    // Added first, so it runs last: the loss below reads "closed by the filter" rather than a reset.
    yield* Scope.addFinalizer(
      scope,
      Effect.sync(() => socket.destroy())
    )
    yield* Scope.addFinalizer(
      scope,
      Effect.sync(() => lose(new ConnectionClosed({ by: "filter", detail: "connection scope closed" })))
    )

    const lost = (cause: unknown) => {
      lose(cause)
      socket.destroy()
    }
    // Runs synchronously for each chunk; any failure ends the connection.
    socket.on("data", (chunk: Uint8Array) => {
      const frames: Array<Frame> = []
      const error = decoder.pushInto(chunk, frames)
      for (const frame of frames) {
        if (welcomed) {
          if (
            frame._tag === "Ack" ||
            frame._tag === "Gap" ||
            frame._tag === "ChecksumReply" ||
            frame._tag === "ChecksumRefused"
          )
            link.deliver(frame)
          else if (frame._tag === "KeepAlive") continue
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
      if (error !== undefined) lost(error)
    })
    socket.on("error", (cause) => lose(cause))
    socket.on("close", () => lose(new ConnectionClosed({ by: "receiver", detail: "end of stream" })))
    // What happened before these listeners: an early reset, or a socket already closed.
    const early = connected.release()
    if (early !== undefined) lost(early)
    else if (socket.destroyed) lose(new ConnectionClosed({ by: "receiver", detail: "end of stream" }))

    const clock = yield* Effect.clock
    let lastSent = clock.unsafeCurrentTimeMillis()
    yield* Effect.gen(function* () {
      for (;;) {
        const [frames] = yield* link.outbox.takeAll
        lastSent = clock.unsafeCurrentTimeMillis()
        yield* writeFrames(socket, Chunk.toReadonlyArray(frames))
      }
    }).pipe(Effect.forkIn(scope))

    link.outbox.unsafeOffer(encode({ _tag: "Hello", ...hello }))
    const left = Math.max(0, budget - ((yield* Clock.currentTimeMillis) - startedAt))
    const durableSeq = yield* Deferred.await(handshake).pipe(
      Effect.timeoutFail({ duration: Duration.millis(left), onTimeout: tooLate("no welcome from") })
    )
    const keepAlive = Duration.decode(options.keepAliveInterval ?? DEFAULT_KEEP_ALIVE_INTERVAL)
    if (Duration.isFinite(keepAlive)) {
      const every = Math.max(1, Duration.toMillis(keepAlive))
      yield* Effect.gen(function* () {
        for (;;) {
          const left = lastSent + every - clock.unsafeCurrentTimeMillis()
          if (left > 0) yield* Effect.sleep(Duration.millis(left))
          else if (link.isLost()) return
          // A full outbox has frames on their way: they keep the link alive themselves.
          else if (link.outbox.unsafeOffer(KEEP_ALIVE)) lastSent = clock.unsafeCurrentTimeMillis()
          else yield* Effect.sleep(Duration.millis(every))
        }
      }).pipe(Effect.forkIn(scope))
    }
    const connection: LogReceiver.Connection = {
      durableSeq,
      send: (record) => Effect.suspend(() => link.send(encodeRecord(record))),
      sendOwned: (record, onWritten) =>
        Effect.suspend(() => {
          const parts = encodeOwned(record)
          return link.send(onWritten === undefined ? parts : { parts, onWritten })
        }),
      sendAll: (records, onWritten) =>
        Effect.suspend(() => {
          const items = new Array<Outgoing>(records.length)
          for (let i = 0; i < records.length; i++) items[i] = encodeOwned(records[i]!)
          // The run's last record carries its `onWritten`: the socket writes in order.
          const n = records.length
          if (onWritten !== undefined && n > 0)
            items[n - 1] = { parts: items[n - 1] as ReadonlyArray<Uint8Array>, onWritten }
          else if (onWritten !== undefined) onWritten()
          return link.sendAll(items)
        }),
      requestChecksums: (request) => Effect.suspend(() => link.send(encodeRecord(request))),
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

/**
 * A small log receiver over real TCP for tests: node:net on 127.0.0.1 (port 0), the
 * wire codec, and the in-memory `ReceiverStore` (so `MemoryReceiver` controls it exactly
 * like `layerMemory`). Everything stays in memory. A wire error closes only the offending
 * connection and is recorded in `errors`. Checksum requests are answered by the store.
 */
import * as Net from "node:net"
import { Context, Effect, Layer } from "effect"
import type * as Scope from "effect/Scope"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import { controlOf } from "../../src/adapters/internal/receiverMemory.js"
import {
  type Message,
  ReceiverStore,
  type Session,
  type StoreOptions
} from "../../src/adapters/internal/receiverStore.js"
import type { TcpOptions } from "../../src/adapters/internal/receiverTcp.js"
import * as Wire from "../../src/protocol/Wire.js"

export interface TcpReceiver {
  readonly host: string
  readonly port: number
  readonly store: ReceiverStore
  readonly control: LogReceiver.MemoryReceiver.Service
  /** Wire errors that made the server close a connection, in order. */
  readonly errors: ReadonlyArray<Wire.WireError>
  /** Sockets currently open. */
  readonly openSockets: () => number
}

export class TestTcpReceiver extends Context.Tag("test/TcpReceiver")<TestTcpReceiver, TcpReceiver>() {}

export interface ServerOptions extends StoreOptions {
  readonly maxFrameBytes?: number
}

const isRecord = (frame: Wire.Frame): frame is Wire.Record =>
  frame._tag === "Write" ||
  frame._tag === "Block" ||
  frame._tag === "ResyncBegin" ||
  frame._tag === "ResyncEnd"

export const make = (options: ServerOptions = {}): Effect.Effect<TcpReceiver, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ server: Net.Server; receiver: TcpReceiver; live: Map<Net.Socket, unknown> }>((resume) => {
      const store = new ReceiverStore(options)
      const errors: Array<Wire.WireError> = []
      const live = new Map<Net.Socket, { session: Session | undefined }>()

      const server = Net.createServer((socket) => {
        const state: { session: Session | undefined } = { session: undefined }
        live.set(socket, state)
        socket.setNoDelay(true)
        const decoder = Wire.makeDecoder({ maxFrameBytes: options.maxFrameBytes })
        let closed = false
        const close = (cause?: unknown) => {
          if (closed) return
          closed = true
          if (cause instanceof Wire.WireError) errors.push(cause)
          state.session?.close()
          socket.destroy()
        }
        const peer = {
          deliver: (message: Message) => {
            if (!closed) socket.write(Wire.encode(message))
          },
          close
        }
        socket.on("data", (chunk: Buffer) => {
          if (closed) return
          const frames: Array<Wire.Frame> = []
          const error = decoder.pushInto(chunk, frames)
          for (const frame of frames) {
            if (closed) return
            if (state.session === undefined) {
              if (frame._tag !== "Hello")
                return close(
                  new Wire.WireError({ reason: "unexpected-frame", detail: `${frame._tag} before the hello` })
                )
              const result = store.hello(frame, peer)
              if (result._tag === "Refuse") {
                closed = true
                socket.end(Wire.encode({ _tag: "Refuse", reason: result.reason, detail: result.detail }))
                return
              }
              state.session = result.session
              // A checksum request waiting for durability stops the reading, as a stalled intake does.
              result.session.onUnblocked = () => {
                if (!closed && !store.intakePaused) socket.resume()
              }
              socket.write(Wire.encode({ _tag: "Welcome", durableSeq: result.durableSeq }))
              if (store.intakePaused) socket.pause()
            } else if (isRecord(frame) || frame._tag === "ChecksumRequest") {
              state.session.receive(frame)
              if (state.session.blocked) socket.pause()
            } else if (frame._tag === "KeepAlive") {
              socket.write(Wire.encode(frame))
            } else {
              return close(
                new Wire.WireError({ reason: "unexpected-frame", detail: `${frame._tag} from the filter` })
              )
            }
          }
          if (error !== undefined) close(error)
        })
        socket.on("error", () => {}) // "close" follows
        socket.on("close", () => {
          closed = true
          state.session?.close()
          live.delete(socket)
        })
      })
      // A stalled intake stops reading: TCP flow control pushes back to the sender.
      store.onIntake((paused) => {
        for (const [socket, state] of live) {
          if (state.session === undefined) continue
          if (paused) socket.pause()
          else if (!state.session.blocked) socket.resume()
        }
      })
      server.listen(0, "127.0.0.1", () => {
        const address = server.address() as Net.AddressInfo
        resume(
          Effect.succeed({
            server,
            live,
            receiver: {
              host: "127.0.0.1",
              port: address.port,
              store,
              control: controlOf(store),
              errors,
              openSockets: () => live.size
            }
          })
        )
      })
    }),
    ({ server, live }) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        // `close` waits for open sockets: end them.
        for (const socket of live.keys()) socket.destroy()
      })
  ).pipe(Effect.map(({ receiver }) => receiver))

/** The server alone, with its `MemoryReceiver` control. */
export const layer = (
  options: ServerOptions = {}
): Layer.Layer<TestTcpReceiver | LogReceiver.MemoryReceiver> =>
  Layer.scopedContext(
    Effect.map(make(options), (receiver) =>
      Context.make(TestTcpReceiver, receiver).pipe(Context.add(LogReceiver.MemoryReceiver, receiver.control))
    )
  )

/** The server plus `LogReceiver.layerTcp` pointed at it. */
export const layerWithClient = (
  options: ServerOptions & { readonly client?: Partial<TcpOptions> } = {}
): Layer.Layer<LogReceiver.LogReceiver | TestTcpReceiver | LogReceiver.MemoryReceiver> =>
  Layer.unwrapScoped(
    Effect.map(make(options), (receiver) =>
      Layer.mergeAll(
        LogReceiver.layerTcp({ host: receiver.host, port: receiver.port, ...options.client }),
        Layer.succeed(TestTcpReceiver, receiver),
        Layer.succeed(LogReceiver.MemoryReceiver, receiver.control)
      )
    )
  )

/**
 * The NBD server: listens on TCP or a unix socket, runs each connection (handshake, then
 * transmission) on a fiber of its own, and closes with its scope. node:net directly:
 * @effect/platform's socket server has no bound on connections, no per-socket pause for
 * backpressure, and no unix-socket path handling we can put a limit on.
 *
 * What it exports is a `Device` (device.ts): `serve` builds the protected disk's from the
 * `Replicator` and the `VirtualDisk` in the context; `serveDevice` takes any other (a
 * recovery point mounted read-only).
 *
 * A connection that breaks the protocol, ends mid-request or fails its socket is closed
 * and logged with its typed error; the others and the replication go on. Closing the
 * scope stops accepting, lets every connection answer the requests it already took, then
 * closes the sockets (the replicator, closed after, journals every answered write).
 */
import * as Fs from "node:fs"
import * as Net from "node:net"
import { Context, Data, Deferred, Duration, Effect, Exit, FiberSet } from "effect"
import type * as Scope from "effect/Scope"
import { VirtualDisk } from "../../adapters/VirtualDisk.js"
import { Replicator } from "../../replicator/Replicator.js"
import { type Device, replicatorDevice } from "./device.js"
import * as Durability from "./durability.js"
import { type ExportInfo, handshake } from "./handshake.js"
import { NbdMutants } from "./mutants.js"
import { NbdProtocolError } from "./codec.js"
import * as P from "./protocol.js"
import { SocketReader } from "./socketIo.js"
import { type Target, transmission } from "./transmission.js"

export type Listen = { readonly host: string; readonly port: number } | { readonly path: string }

export interface ServeOptions {
  /** Where to listen: TCP `host` and `port` (0: any free port), or a unix socket `path`. */
  readonly listen: Listen
  /** The export's name; clients asking for "" (the default export) get it too. Default "". */
  readonly exportName?: string | undefined
  /** Shown by `NBD_INFO_DESCRIPTION`. */
  readonly description?: string | undefined
  /** Refuse every change (EPERM) and say so in the transmission flags (a read-only device always does). Default false. */
  readonly readOnly?: boolean | undefined
  /** Connections at once; more are closed on arrival. Default 16. */
  readonly maxConnections?: number | undefined
  /** Requests in progress per connection before it stops reading. Default 64. */
  readonly maxInFlight?: number | undefined
  /** The largest READ or WRITE payload (advertised with `NBD_INFO_BLOCK_SIZE`). Default 32 MiB. */
  readonly maxPayload?: number | undefined
  /** Payload bytes held per connection (at least `maxPayload`). Default twice `maxPayload`. */
  readonly bufferBytes?: number | undefined
  /** A client that has not entered transmission by then is disconnected. Default 30 seconds. */
  readonly handshakeTimeout?: Duration.DurationInput | undefined
  /** On close, how long connections may take to answer what they took. Default 10 seconds. */
  readonly closeGrace?: Duration.DurationInput | undefined
}

export type Address =
  | { readonly _tag: "Tcp"; readonly host: string; readonly port: number }
  | { readonly _tag: "Unix"; readonly path: string }

export interface Server {
  readonly address: Address
  readonly exportName: string
  /** `nbd://HOST:PORT/NAME` or `nbd+unix:///NAME?socket=PATH` (as QEMU and libnbd take them). */
  readonly uri: string
  readonly size: number
  readonly transmissionFlags: number
  /** Connections open now. */
  readonly connections: Effect.Effect<number>
}

/**
 * The server could not listen where it was told. `reason`: a server already listens on
 * the unix socket (`in-use`), the path is something else than a socket (`not-a-socket`:
 * never deleted), or listening failed (`failed`: see `cause`).
 */
export class ListenFailed extends Data.TaggedError("ListenFailed")<{
  readonly listen: Listen
  readonly reason: "in-use" | "not-a-socket" | "failed"
  readonly cause: unknown
}> {
  override get message() {
    const where = "path" in this.listen ? this.listen.path : `${this.listen.host}:${this.listen.port}`
    if (this.reason === "in-use") return `cannot listen on ${where}: a server is already listening there`
    if (this.reason === "not-a-socket")
      return `cannot listen on ${where}: it exists and is not a socket (left alone)`
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `cannot listen on ${where}: ${cause}`
  }
}

const errnoCode = (cause: unknown): unknown =>
  typeof cause === "object" && cause !== null ? (cause as { code?: unknown }).code : undefined

/**
 * Makes `path` free for a unix socket the way qemu-nbd and nbdkit do: nothing there, fine;
 * a socket nobody listens on (a killed run's: connecting is refused) is removed; a socket
 * something answers on, or anything that is not a socket, is refused and left as it is.
 */
const claimSocketPath = (listen: { readonly path: string }): Effect.Effect<void, ListenFailed> =>
  Effect.gen(function* () {
    const stat = yield* Effect.try({
      try: () => Fs.lstatSync(listen.path, { throwIfNoEntry: false }),
      catch: (cause) => new ListenFailed({ listen, reason: "failed", cause })
    })
    if (stat === undefined) return
    if (!stat.isSocket()) return yield* new ListenFailed({ listen, reason: "not-a-socket", cause: undefined })
    const answered = yield* Effect.async<boolean, ListenFailed>((resume) => {
      const probe = Net.createConnection({ path: listen.path })
      probe.once("connect", () => {
        probe.destroy()
        resume(Effect.succeed(true))
      })
      probe.once("error", (cause) => {
        probe.destroy()
        const code = errnoCode(cause)
        if (code === "ECONNREFUSED" || code === "ENOENT") resume(Effect.succeed(false))
        else resume(Effect.fail(new ListenFailed({ listen, reason: "failed", cause })))
      })
      return Effect.sync(() => probe.destroy())
    })
    if (answered) return yield* new ListenFailed({ listen, reason: "in-use", cause: undefined })
    yield* Effect.try({
      try: () => Fs.rmSync(listen.path, { force: true }),
      catch: (cause) => new ListenFailed({ listen, reason: "failed", cause })
    })
    yield* Effect.logInfo(`nbd: removed the stale socket ${listen.path} (nothing listened on it)`)
  })

/** Options that make no sense (a maximum payload under the preferred block, …). */
export class InvalidServeOptions extends Data.TaggedError("InvalidServeOptions")<{
  readonly detail: string
}> {
  override get message() {
    return this.detail
  }
}

/**
 * How long a finished connection may take to hand its last replies to a client that
 * does not read them before its socket is destroyed. Internal (tests lengthen it to tell
 * a socket that closed from one that was cut off); `serve` reads it from the context.
 */
export class CloseLinger extends Context.Reference<CloseLinger>()("cdp-sync/NbdCloseLinger", {
  defaultValue: (): Duration.Duration => Duration.seconds(2)
}) {}

export const MIN_BLOCK = 512
export const PREFERRED_BLOCK = 4096
export const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024

const hostForUri = (host: string) => (host.includes(":") ? `[${host}]` : host)

export const uriOf = (address: Address, name: string): string =>
  address._tag === "Tcp"
    ? `nbd://${hostForUri(address.host)}:${address.port}/${encodeURIComponent(name)}`
    : `nbd+unix:///${encodeURIComponent(name)}?socket=${address.path}`

export const transmissionFlagsFor = (readOnly: boolean): number =>
  P.FLAG_HAS_FLAGS |
  P.FLAG_SEND_FLUSH |
  // Flushes are global (the disk's fsync, the journal's barrier): one connection's FLUSH
  // covers writes answered on any other.
  P.FLAG_CAN_MULTI_CONN |
  (readOnly ? P.FLAG_READ_ONLY : P.FLAG_SEND_FUA | P.FLAG_SEND_TRIM | P.FLAG_SEND_WRITE_ZEROES)

/** The protected disk in the context, written through the replicator in the context. */
export const serve = (
  options: ServeOptions
): Effect.Effect<Server, ListenFailed | InvalidServeOptions, Replicator | VirtualDisk | Scope.Scope> =>
  Effect.gen(function* () {
    const device = replicatorDevice(yield* VirtualDisk, yield* Replicator, yield* NbdMutants)
    return yield* serveDevice(device, {
      ...options,
      description: options.description ?? "a disk protected by cdp-sync"
    })
  })

/** Serves `device` until the scope closes (see the module comment). */
export const serveDevice = <E>(
  device: Device<E>,
  options: ServeOptions
): Effect.Effect<Server, ListenFailed | InvalidServeOptions, Scope.Scope> =>
  Effect.gen(function* () {
    const mutants = yield* NbdMutants
    const lingerMs = Duration.toMillis(yield* CloseLinger)
    const readOnly = device.readOnly || (options.readOnly ?? false)
    const maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD
    const bufferBytes = options.bufferBytes ?? 2 * maxPayload
    const maxConnections = options.maxConnections ?? 16
    const maxInFlight = options.maxInFlight ?? 64
    if (!Number.isInteger(maxPayload) || maxPayload < PREFERRED_BLOCK || maxPayload > 2 ** 32 - 1)
      return yield* new InvalidServeOptions({
        detail: `maxPayload must be an integer from ${PREFERRED_BLOCK} to 2^32 - 1, not ${maxPayload}`
      })
    if (!(bufferBytes >= maxPayload))
      return yield* new InvalidServeOptions({
        detail: `bufferBytes (${bufferBytes}) must be at least maxPayload`
      })
    if (!(maxConnections >= 1) || !(maxInFlight >= 1))
      return yield* new InvalidServeOptions({ detail: "maxConnections and maxInFlight must be at least 1" })
    const size = device.size
    if (!Number.isSafeInteger(size) || size < 0 || size % MIN_BLOCK !== 0)
      return yield* new InvalidServeOptions({
        detail: `the device's size must be a multiple of ${MIN_BLOCK} bytes, not ${size}`
      })
    const exportName = options.exportName ?? ""
    const exported: ExportInfo = {
      name: exportName,
      description: options.description ?? "a block device served by cdp-sync",
      size,
      transmissionFlags: transmissionFlagsFor(readOnly),
      blockSizes: { minimum: MIN_BLOCK, preferred: PREFERRED_BLOCK, maximum: maxPayload }
    }
    const target: Target = {
      device: device as Device,
      durability: yield* Durability.make(device.flush),
      size,
      readOnly,
      maxPayload,
      maxInFlight,
      bufferBytes,
      mutants
    }
    const handshakeTimeout = Duration.decode(options.handshakeTimeout ?? "30 seconds")
    const stopping = yield* Deferred.make<void>()
    const connections = yield* FiberSet.make<void, never>()
    const runConnection = yield* FiberSet.runtime(connections)<never>()
    const sockets = new Set<Net.Socket>()
    let nextId = 1
    let closing = false

    const converse = (socket: Net.Socket, id: number, peer: string): Effect.Effect<void> => {
      const reader = new SocketReader(socket)
      return Effect.gen(function* () {
        const outcome = yield* handshake(socket, reader, exported).pipe(
          Effect.timeoutFail({
            duration: handshakeTimeout,
            onTimeout: () =>
              new NbdProtocolError({
                reason: "handshake-timeout",
                detail: `no transmission after ${Duration.format(handshakeTimeout)}`
              })
          }),
          Effect.raceFirst(Effect.as(Deferred.await(stopping), { _tag: "Ended" } as const))
        )
        if (outcome._tag !== "Transmission") {
          yield* Effect.logDebug(`nbd: handshake ended (${outcome._tag})`)
          return
        }
        yield* Effect.logInfo(`nbd: client entered transmission (${outcome.via})`)
        const end = yield* transmission(socket, reader, target, stopping)
        yield* Effect.logInfo(`nbd: connection ended (${end})`)
      }).pipe(
        Effect.catchAll((error) => Effect.logWarning(`nbd: connection closed: ${error.message}`, error)),
        Effect.ensuring(
          Effect.sync(() => {
            // What was answered is flushed out with a FIN; a peer that never reads is cut off.
            if (!socket.destroyed) socket.end()
            // What the client still sends (after a bad request, say) is dropped, so its end
            // is seen and the socket closes now, giving its slot back (not when destroyed).
            if (!mutants.keepsUnreadInput) reader.discard()
            setTimeout(() => socket.destroy(), lingerMs).unref()
          })
        ),
        Effect.annotateLogs({ connection: id, peer })
      )
    }

    const server = Net.createServer({ noDelay: true, allowHalfOpen: false }, (socket) => {
      socket.on("error", () => {}) // the connection's reader reports it
      const id = nextId++
      const peer =
        socket.remoteAddress === undefined ? "unix" : `${socket.remoteAddress}:${socket.remotePort}`
      if (closing || sockets.size >= maxConnections) {
        socket.destroy()
        runConnection(
          Effect.logWarning(
            closing ? "nbd: connection refused: closing" : "nbd: connection refused: too many connections"
          ).pipe(Effect.annotateLogs({ peer, maxConnections }))
        )
        return
      }
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
      runConnection(converse(socket, id, peer))
    })

    const listen = options.listen
    const listening = yield* Deferred.make<Address, ListenFailed>()
    server.on("error", (cause) =>
      Deferred.unsafeDone(
        listening,
        Exit.fail(
          new ListenFailed({
            listen,
            // Another server took the path between the check and the bind.
            reason: "path" in listen && errnoCode(cause) === "EADDRINUSE" ? "in-use" : "failed",
            cause
          })
        )
      )
    )
    const onListening = () => {
      const address = server.address()
      Deferred.unsafeDone(
        listening,
        Exit.succeed<Address>(
          "path" in listen
            ? { _tag: "Unix", path: listen.path }
            : {
                _tag: "Tcp",
                host: listen.host,
                port: typeof address === "object" && address !== null ? address.port : listen.port
              }
        )
      )
    }
    if ("path" in listen) {
      yield* claimSocketPath(listen)
      server.listen({ path: listen.path }, onListening)
    } else server.listen({ host: listen.host, port: listen.port }, onListening)

    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        closing = true
        // Stops accepting (its callback waits for every connection to go: not awaited).
        if (server.listening) server.close()
        yield* Deferred.succeed(stopping, undefined)
        yield* FiberSet.awaitEmpty(connections).pipe(
          Effect.timeout(Duration.decode(options.closeGrace ?? "10 seconds")),
          Effect.ignore
        )
        for (const socket of sockets) socket.destroy()
      })
    )
    const address = yield* Deferred.await(listening)
    return {
      address,
      exportName,
      uri: uriOf(address, exportName),
      size,
      transmissionFlags: exported.transmissionFlags,
      connections: Effect.sync(() => sockets.size)
    }
  })

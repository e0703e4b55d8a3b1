/**
 * The log receiver service (design §6, docs/receiver.md): a TCP server, one protected
 * disk per connection. The hello names the disk and its geometry; the receiver answers
 * `welcome(durableSeq)` or `refuse` (bad or mismatching geometry, a second connection
 * for the disk, a failed log). Records then go through the pure sequencing rules of
 * `domain/Receiver`: accepted ones are appended to the disk's log (`LogStore`) and acked
 * cumulatively once fsynced (group commit), duplicates are acked again and never applied
 * twice, a gap is reported once and everything is rejected until an acceptable
 * resync-begin marker.
 *
 * A corrupt or oversized frame, a frame out of place or a record that does not fit the
 * disk closes that connection only, with its typed `WireError` logged; the offending
 * frame never reaches the log.
 */
import * as Net from "node:net"
import * as NodeStream from "@effect/platform-node/NodeStream"
import {
  Console,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberSet,
  type Scheduler,
  type Scope,
  Stream
} from "effect"
import * as Wire from "../../adapters/Wire.js"
import * as Receiver from "../../domain/Receiver.js"
import * as IoScheduler from "../IoScheduler.js"
import { HelloRefused } from "./internal/errors.js"
import * as LogStore from "./LogStore.js"
import type * as Retention from "./Retention.js"

export interface ServeOptions {
  readonly dir: string
  readonly host: string
  /** 0 picks a free port (the ready line and `address` tell which). */
  readonly port: number
  readonly segmentBytes?: number | undefined
  readonly retain?: Retention.Policy | undefined
  /** Bytes per second of the background verification of sealed segments (`LogStore.StoreOptions`). */
  readonly verifyRate?: number | undefined
  /** Largest frame accepted, header included (default `Wire.DEFAULT_MAX_FRAME_BYTES`). */
  readonly maxFrameBytes?: number | undefined
  /** A connection that has not sent its hello by then is closed (default 10 seconds). */
  readonly helloTimeout?: Duration.DurationInput | undefined
  readonly now?: (() => number) | undefined
  /**
   * Where the service's fibers (connections, log writers) run: by default the I/O
   * scheduler (`IoScheduler`), or the caller's under a `TestClock`; `"inherit"` keeps
   * the caller's.
   */
  readonly scheduler?: Scheduler.Scheduler | "inherit" | undefined
}

export interface Server {
  readonly host: string
  readonly port: number
  readonly store: LogStore.Store
}

/** The server could not listen (address in use, bad host, …). */
export class ListenFailed extends Data.TaggedError("ListenFailed")<{
  readonly host: string
  readonly port: number
  readonly cause: unknown
}> {
  override get message() {
    return `cannot listen on ${this.host}:${this.port}: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** The socket failed under a connection (reset, timeout). */
class SocketFailed extends Data.TaggedError("SocketFailed")<{ readonly cause: unknown }> {}
/** The conversation is over (refused, or the log failed): stop reading. */
class Finished extends Data.TaggedError("Finished")<{ readonly detail: string }> {}

const kindOf = (record: Wire.Record): Receiver.RecordKind =>
  record._tag === "Write"
    ? "write"
    : record._tag === "Block"
      ? "block"
      : record._tag === "ResyncBegin"
        ? "resync-begin"
        : "resync-end"

/** Per disk, across connections: the sequencing state and the one connection allowed. */
interface Entry {
  readonly log: LogStore.DiskLog
  receiver: Receiver.ReceiverState
  connection: Net.Socket | undefined
}

const endpoint = (host: string, port: number) => `${host.includes(":") ? `[${host}]` : host}:${port}`

/**
 * Starts the receiver: opens (recovers) the store, then listens. Closing the scope stops
 * listening, closes every connection and lets the writers commit what they hold.
 */
export const serve = (
  options: ServeOptions
): Effect.Effect<Server, ListenFailed | LogStore.LogError | LogStore.ReceiverLocked, Scope.Scope> =>
  IoScheduler.runOn(options.scheduler, serveOn(options))

const serveOn = (options: ServeOptions) =>
  Effect.gen(function* () {
    const store = yield* LogStore.open({
      dir: options.dir,
      segmentBytes: options.segmentBytes,
      retain: options.retain,
      verifyRate: options.verifyRate,
      now: options.now
    })
    const maxFrameBytes = options.maxFrameBytes ?? Wire.DEFAULT_MAX_FRAME_BYTES
    const helloTimeout = Duration.decode(options.helloTimeout ?? "10 seconds")
    const entries = new Map<string, Entry>()
    const hellos = yield* Effect.makeSemaphore(1)

    const send = (socket: Net.Socket, frame: Wire.Frame) => {
      if (!socket.destroyed) socket.write(Wire.encode(frame))
    }

    const refuseFailedLog = (diskId: string, error: LogStore.LogError) =>
      Effect.zipRight(
        Effect.logError(`${diskId}: cannot open the log`).pipe(Effect.annotateLogs({ error: error.message })),
        Effect.fail(new HelloRefused({ diskId, reason: "log-failed", detail: error.message }))
      )

    /** The hello: the disk (created on first contact), the one-connection rule, the welcome. */
    const hello = (socket: Net.Socket, frame: Wire.Hello) =>
      Effect.gen(function* () {
        const log = yield* store.disk(frame).pipe(
          // The filter is told (and retries later); the operator reads the error in the log.
          Effect.catchTags({
            LogCorrupt: (error) => refuseFailedLog(frame.diskId, error),
            LogIoError: (error) => refuseFailedLog(frame.diskId, error)
          })
        )
        let entry = entries.get(log.diskId)
        if (entry === undefined) {
          entry = {
            log,
            receiver: Receiver.initial(log.durable, log.openedInResync),
            connection: undefined
          }
          entries.set(log.diskId, entry)
        }
        if (entry.connection !== undefined && !entry.connection.destroyed)
          return yield* new HelloRefused({
            diskId: frame.diskId,
            reason: "already-connected",
            detail: `disk ${frame.diskId} already has a connection (from ${entry.connection.remoteAddress}:${entry.connection.remotePort})`
          })
        entry.connection = socket
        // The welcome reports only durable records: let the writer finish what it holds.
        yield* log.flushed.pipe(
          Effect.catchAll((error) =>
            Effect.zipRight(
              Effect.sync(() => {
                if (entry.connection === socket) entry.connection = undefined
              }),
              new HelloRefused({ diskId: frame.diskId, reason: "log-failed", detail: error.message })
            )
          )
        )
        send(socket, { _tag: "Welcome", durableSeq: log.durable })
        return entry
      }).pipe(hellos.withPermits(1))

    const converse = (socket: Net.Socket) =>
      Effect.gen(function* () {
        const peer = `${socket.remoteAddress}:${socket.remotePort}`
        let entry: Entry | undefined
        let helloSeen = false
        let unsubscribe = () => {}
        let rejected = 0
        // A peer that connects and says nothing would hold its socket for ever.
        const silence = yield* Effect.fork(
          Effect.sleep(helloTimeout).pipe(
            Effect.zipRight(
              Effect.suspend(() =>
                helloSeen
                  ? Effect.void
                  : Effect.logWarning("connection closed: no hello in time").pipe(
                      Effect.annotateLogs({ peer, helloTimeout: Duration.format(helloTimeout) }),
                      Effect.zipRight(Effect.sync(() => socket.destroy()))
                    )
              )
            )
          )
        )
        const frames = NodeStream.fromReadable<SocketFailed, Uint8Array>(
          () => socket,
          (cause) => new SocketFailed({ cause }),
          // Closing is ours: a refusal must reach the filter before the socket goes.
          { closeOnDone: false }
        ).pipe(Wire.decodeStream({ maxFrameBytes }))

        const onRecord = (current: Entry, record: Wire.Record): Wire.WireError | undefined => {
          const invalid = Wire.checkRecord(current.log.geometry, record)
          if (invalid !== undefined) return invalid
          const { state, verdict } = Receiver.receive(
            current.receiver,
            record.seq,
            kindOf(record),
            record._tag === "ResyncBegin" ? record.base : record.seq - 1
          )
          current.receiver = state
          switch (verdict._tag) {
            case "Accept":
              current.log.append(record, verdict.recoveryPoint)
              return undefined
            case "Duplicate":
              // Already held: ack again what is durable, never apply twice.
              if (current.log.durable > 0) send(socket, { _tag: "Ack", seq: current.log.durable })
              return undefined
            case "Gap":
              send(socket, { _tag: "Gap", expected: verdict.expected })
              return undefined
            case "Rejected":
              rejected++
              return undefined
          }
        }

        const run = Stream.runForEachChunk(frames, (chunk) =>
          Effect.gen(function* () {
            for (const frame of chunk) {
              if (entry === undefined) {
                helloSeen = true
                if (frame._tag !== "Hello")
                  return yield* new Wire.WireError({
                    reason: "unexpected-frame",
                    detail: `${frame._tag} before the hello`
                  })
                const current = yield* hello(socket, frame)
                entry = current
                unsubscribe = current.log.onDurable((seq) => {
                  if (current.log.failure !== undefined) socket.destroy()
                  else send(socket, { _tag: "Ack", seq })
                })
                yield* Effect.logInfo(`${current.log.diskId}: connected`).pipe(
                  Effect.annotateLogs({ peer, durableSeq: current.log.durable, watermark: frame.watermark })
                )
                if (frame.watermark > current.log.durable)
                  yield* Effect.logWarning(
                    `${current.log.diskId}: the filter's watermark is beyond the durable log; it will resync`
                  ).pipe(Effect.annotateLogs({ watermark: frame.watermark, durableSeq: current.log.durable }))
              } else if (
                frame._tag === "Write" ||
                frame._tag === "Block" ||
                frame._tag === "ResyncBegin" ||
                frame._tag === "ResyncEnd"
              ) {
                const error = onRecord(entry, frame)
                if (error !== undefined) return yield* error
              } else {
                return yield* new Wire.WireError({
                  reason: "unexpected-frame",
                  detail: `${frame._tag} from the filter`
                })
              }
            }
            if (entry !== undefined) {
              if (entry.log.failure !== undefined) return yield* new Finished({ detail: "the log failed" })
              // Too much waits for the writer: stop reading (TCP pushes back on the filter).
              yield* entry.log.backpressure
            }
          })
        )

        yield* run.pipe(
          Effect.catchTags({
            HelloRefused: (refused) =>
              Effect.zipRight(
                Effect.sync(() =>
                  socket.end(Wire.encode({ _tag: "Refuse", reason: refused.reason, detail: refused.detail }))
                ),
                Effect.logWarning(refused.message).pipe(Effect.annotateLogs({ peer }))
              ),
            WireError: (error) =>
              Effect.logWarning(`connection closed: ${error.message}`).pipe(
                Effect.annotateLogs({
                  peer,
                  disk: entry?.log.diskId ?? "-",
                  error: "WireError",
                  reason: error.reason
                })
              ),
            SocketFailed: (failed) =>
              Effect.logInfo("connection lost").pipe(
                Effect.annotateLogs({ peer, disk: entry?.log.diskId ?? "-", cause: String(failed.cause) })
              ),
            Finished: (finished) =>
              Effect.logWarning(`connection closed: ${finished.detail}`).pipe(Effect.annotateLogs({ peer }))
          }),
          Effect.ensuring(Fiber.interrupt(silence)),
          Effect.ensuring(
            Effect.sync(() => {
              unsubscribe()
              if (entry !== undefined && entry.connection === socket) entry.connection = undefined
              if (!socket.writableEnded) socket.destroy()
              // Ended after a refusal: the frame is flushed, then the socket closes (or is torn down).
              else setTimeout(() => socket.destroy(), 5000).unref()
            })
          ),
          Effect.zipRight(
            Effect.suspend(() =>
              entry === undefined
                ? Effect.void
                : Effect.logDebug(`${entry.log.diskId}: connection ended`).pipe(
                    Effect.annotateLogs({ peer, rejectedRecords: rejected })
                  )
            )
          )
        )
      })

    const connections = yield* FiberSet.make<void, never>()
    const runConnection = yield* FiberSet.runtime(connections)<never>()
    const sockets = new Set<Net.Socket>()

    const server = Net.createServer(
      { noDelay: true, keepAlive: true, keepAliveInitialDelay: 10_000, highWaterMark: 1 << 20 },
      (socket) => {
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
        socket.on("error", () => {}) // the stream reports it
        runConnection(converse(socket))
      }
    )
    const listening = yield* Deferred.make<number, ListenFailed>()
    server.on("error", (cause) =>
      Deferred.unsafeDone(
        listening,
        Exit.fail(new ListenFailed({ host: options.host, port: options.port, cause }))
      )
    )
    server.listen({ host: options.host, port: options.port }, () => {
      const address = server.address()
      Deferred.unsafeDone(
        listening,
        Exit.succeed(typeof address === "object" && address !== null ? address.port : options.port)
      )
    })
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        if (!server.listening) return resume(Effect.void)
        server.close(() => resume(Effect.void))
      })
    )
    const port = yield* Deferred.await(listening)
    return { host: options.host, port, store }
  })

/** `serve`, the ready line on stdout (`listening HOST:PORT`), then runs until interrupted. */
export const run = (options: ServeOptions) =>
  Effect.scoped(
    Effect.gen(function* () {
      let stats: LogStore.Stats | undefined
      // Added first, so it runs last: after the writers committed what they held.
      yield* Effect.addFinalizer(() =>
        stats === undefined
          ? Effect.void
          : Effect.logInfo("receiver stopped").pipe(Effect.annotateLogs({ ...stats }))
      )
      const server = yield* serve(options)
      stats = server.store.stats
      yield* Console.log(`listening ${endpoint(server.host, server.port)}`)
      return yield* Effect.never
    })
  )

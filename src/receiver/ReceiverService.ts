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
 *
 * What a peer can hold is bounded: connections (`maxConnections`), the time to say hello
 * (`helloTimeout`, and a hello frame of at most `Wire.MAX_HELLO_FRAME_BYTES`), silence
 * after it (`idleTimeout`; the filter sends keep-alives), a frame (`maxFrameBytes`), the
 * replies a peer leaves unread (coalesced, see `internal/connection.ts`), the records
 * waiting for the log's writer (the connection stops reading), and checksum requests
 * (`Wire.MAX_CHECKSUM_BLOCKS` blocks each, answered one at a time in the connection's fiber,
 * `internal/checksums.ts`).
 */
import * as Net from "node:net"
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
  type Scope
} from "effect"
import * as Session from "../protocol/Session.js"
import * as Control from "../internal/control.js"
import type { ReceiverDisk } from "../internal/controlProtocol.js"
import * as Wire from "../protocol/Wire.js"
import * as Receiver from "../domain/Receiver.js"
import * as IoScheduler from "../internal/IoScheduler.js"
import * as Checksums from "./internal/checksums.js"
import { FrameSource, REPLIES_OVERFLOW, Replies } from "./internal/connection.js"
import { type DiskNote, diskStatus } from "./internal/diskStatus.js"
import { HelloRefused } from "./internal/errors.js"
import * as LogStore from "./LogStore.js"
import type * as Retention from "./Retention.js"

export const DEFAULT_HELLO_TIMEOUT = Duration.seconds(10)
export const DEFAULT_IDLE_TIMEOUT = Duration.seconds(30)
export const DEFAULT_MAX_CONNECTIONS = 256

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
  /**
   * After its hello, a connection from which nothing arrives for this long while the
   * receiver waits for it is closed (default 30 seconds; the filter sends keep-alives
   * well within it). A hello for a disk whose connection has been silent for half of it
   * takes the disk over. So does a connection whose peer has not read the receiver's
   * replies for this long.
   */
  readonly idleTimeout?: Duration.DurationInput | undefined
  /** Connections open at once; a socket beyond it is closed at once (default 256). */
  readonly maxConnections?: number | undefined
  /** Wall clock for receive times (default `Date.now`; see `LogStore.StoreOptions.now`). */
  readonly now?: (() => number) | undefined
  /** Monotonic clock for ages (default `performance.now`; see `LogStore.StoreOptions.monotonic`). */
  readonly monotonic?: (() => number) | undefined
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
  /** Connections being served (their fibers): one per open socket, none once they closed. */
  readonly connections: Effect.Effect<number>
  /** Every disk's state now: its connection, durable seq, last recovery point, log, last error. */
  readonly disks: Effect.Effect<ReadonlyArray<ReceiverDisk>>
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

/** The conversation is over (refused, taken over, or the log failed): stop reading. */
class Finished extends Data.TaggedError("Finished")<{ readonly detail: string }> {}

/** The connection that holds a disk. */
interface Holder {
  readonly socket: Net.Socket
  readonly peer: string
  readonly source: FrameSource
}

/** Per disk, across connections: the sequencing state and the one connection allowed. */
interface Entry {
  readonly log: LogStore.DiskLog
  receiver: Receiver.ReceiverState
  connection: Holder | undefined
}

const endpoint = (host: string, port: number) => `${host.includes(":") ? `[${host}]` : host}:${port}`
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`

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
      now: options.now,
      monotonic: options.monotonic
    })
    const maxFrameBytes = options.maxFrameBytes ?? Wire.DEFAULT_MAX_FRAME_BYTES
    const helloMs = Duration.toMillis(Duration.decode(options.helloTimeout ?? DEFAULT_HELLO_TIMEOUT))
    const idleMs = Duration.toMillis(Duration.decode(options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT))
    const takeoverMs = idleMs / 2
    const maxConnections = Math.max(1, options.maxConnections ?? DEFAULT_MAX_CONNECTIONS)
    // Timeouts follow the Effect clock (a TestClock in tests); socket callbacks read it too.
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    const entries = new Map<string, Entry>()
    // The last thing that went wrong per disk id, for `disks` (the status command).
    const wall = options.now ?? Date.now
    const notes = new Map<string, DiskNote>()
    const noteDisk = (diskId: string | undefined, message: string) =>
      Effect.sync(() => {
        if (diskId !== undefined) notes.set(diskId, { message, at: wall() })
      })
    const hellos = yield* Effect.makeSemaphore(1)

    const refuseFailedLog = (diskId: string, error: LogStore.LogError) =>
      Effect.zipRight(
        Effect.logError(`${diskId}: cannot open the log`).pipe(Effect.annotateLogs({ error: error.message })),
        Effect.fail(new HelloRefused({ diskId, reason: "log-failed", detail: error.message }))
      )

    /**
     * The hello: the disk (created on first contact), the one-connection rule, the welcome.
     * A disk held by a connection that has been silent for `takeoverMs` (a half-dead link
     * the filter already gave up) is taken over; a live one is refused.
     */
    const hello = (me: Holder, frame: Wire.Hello) =>
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
        const holder = entry.connection
        if (holder !== undefined && !holder.socket.destroyed) {
          const silent = holder.source.silentFor(now())
          if (silent < takeoverMs)
            return yield* new HelloRefused({
              diskId: frame.diskId,
              reason: "already-connected",
              detail: `disk ${frame.diskId} already has a connection (from ${holder.peer}, last heard ${seconds(silent)} ago; one silent for ${seconds(takeoverMs)} is taken over)`
            })
          yield* Effect.logWarning(`${log.diskId}: connection taken over by a new one`).pipe(
            Effect.annotateLogs({ peer: holder.peer, by: me.peer, silentFor: seconds(silent) })
          )
          holder.socket.destroy()
        }
        entry.connection = me
        // The welcome reports only durable records: let the writer finish what it holds.
        yield* log.flushed.pipe(
          Effect.catchAll((error) =>
            Effect.zipRight(
              Effect.sync(() => {
                if (entry.connection === me) entry.connection = undefined
              }),
              new HelloRefused({ diskId: frame.diskId, reason: "log-failed", detail: error.message })
            )
          )
        )
        if (!me.socket.destroyed) me.socket.write(Wire.encode({ _tag: "Welcome", durableSeq: log.durable }))
        return entry
      }).pipe(hellos.withPermits(1))

    const converse = (socket: Net.Socket) =>
      Effect.gen(function* () {
        const peer = `${socket.remoteAddress}:${socket.remotePort}`
        // Until the hello, a frame may be no larger than a hello.
        const decoder = Wire.makeDecoder({ maxFrameBytes, maxFirstFrameBytes: Wire.MAX_HELLO_FRAME_BYTES })
        const source = new FrameSource(socket, decoder, now)
        const replies = new Replies(socket, now)
        const me: Holder = { socket, peer, source }
        let entry: Entry | undefined
        let helloSeen = false
        let unsubscribe = () => {}
        let rejected = 0

        const close = (why: string, annotations: Record<string, unknown>) =>
          Effect.zipRight(
            Effect.logWarning(`connection closed: ${why}`).pipe(
              Effect.annotateLogs({ peer, disk: entry?.log.diskId ?? "-", ...annotations }),
              Effect.zipRight(noteDisk(entry?.log.diskId, `connection from ${peer} closed: ${why}`))
            ),
            Effect.sync(() => {
              socket.destroy()
            })
          )
        // The deadlines: the hello's; after it, silence while we wait for the peer and
        // replies it leaves unread. Destroying the socket ends the conversation (`FrameSource`).
        const helloDeadline = Effect.sleep(Duration.millis(helloMs)).pipe(
          Effect.zipRight(
            Effect.suspend(() =>
              helloSeen
                ? Effect.void
                : close("no hello in time", { helloTimeout: Duration.format(Duration.millis(helloMs)) })
            )
          )
        )
        const idleWatch = Effect.gen(function* () {
          for (;;) {
            const t = now()
            const silent = source.silentFor(t)
            if (silent >= idleMs)
              return yield* close(`nothing received for ${seconds(silent)}`, {
                idleTimeout: Duration.format(Duration.millis(idleMs))
              })
            const stalled = replies.stalledSince
            if (stalled !== undefined && t - stalled >= idleMs)
              return yield* close(
                `the filter has not read the receiver's replies for ${seconds(t - stalled)}`,
                { idleTimeout: Duration.format(Duration.millis(idleMs)) }
              )
            // While busy (silent 0) nothing is due: look again within a quarter of the timeout.
            let left = silent > 0 ? idleMs - silent : idleMs / 4
            if (stalled !== undefined) left = Math.min(left, stalled + idleMs - t)
            yield* Effect.sleep(Duration.millis(Math.max(1, left)))
          }
        })
        let watch: Fiber.RuntimeFiber<void> | undefined

        /** What the session's verdicts do here: the disk's log, the acks and gaps to this peer. */
        const logOf = (current: Entry): Session.Log<Finished> => ({
          geometry: current.log.geometry,
          durable: () => current.log.durable,
          append: (record, recoveryPoint) => current.log.append(record, recoveryPoint),
          ack: (seq) => replies.ack(seq),
          gap: (expected) => (replies.gap(expected) ? undefined : new Finished({ detail: REPLIES_OVERFLOW })),
          rejected: () => {
            rejected++
          }
        })
        let log: Session.Log<Finished> | undefined

        const onRecord = (current: Entry, record: Wire.Record): Wire.WireError | Finished | undefined => {
          // Taken over while this chunk was read: the disk is another connection's now.
          if (current.connection !== me) return new Finished({ detail: "the disk was taken over" })
          log ??= logOf(current) // built once: a connection serves one disk

          return Session.receive(current, log, record)
        }

        /** The first frame: it must be the hello (the disk, the one-connection rule, the welcome). */
        const onHello = (frame: Wire.Frame) =>
          Effect.gen(function* () {
            helloSeen = true
            if (frame._tag !== "Hello")
              return yield* new Wire.WireError({
                reason: "unexpected-frame",
                detail: `${frame._tag} before the hello`
              })
            const current = yield* hello(me, frame)
            entry = current
            watch = yield* Effect.fork(idleWatch)
            unsubscribe = current.log.onDurable((seq) => {
              if (current.log.failure !== undefined) socket.destroy()
              else replies.ack(seq)
            })
            yield* Effect.logInfo(`${current.log.diskId}: connected`).pipe(
              Effect.annotateLogs({ peer, durableSeq: current.log.durable, watermark: frame.watermark })
            )
            if (frame.watermark > current.log.durable)
              yield* Effect.logWarning(
                `${current.log.diskId}: the filter's watermark is beyond the durable log; it will resync`
              ).pipe(Effect.annotateLogs({ watermark: frame.watermark, durableSeq: current.log.durable }))
          })

        /**
         * A checksum request: answered in the connection's fiber, in order, one at a time, once
         * every record before it is durable (its reply's `through`). Meanwhile no more frames are
         * read; acks of records already taken in go on (the writer sends them).
         */
        const onChecksumRequest = (current: Entry, request: Wire.ChecksumRequest) =>
          Effect.gen(function* () {
            if (current.connection !== me) return yield* new Finished({ detail: "the disk was taken over" })
            const invalid = Wire.checkChecksumRequest(current.log.geometry, request)
            if (invalid !== undefined) return yield* invalid
            yield* replies.drained
            yield* current.log.flushed.pipe(Effect.catchAll(() => new Finished({ detail: "the log failed" })))
            const answer = yield* Checksums.answer(current.log, request, current.log.durable)
            if (current.connection === me) replies.checksumAnswer(answer)
          })

        /** A frame after the hello, without an effect per record (the hot path). */
        const onFrame = (current: Entry, frame: Wire.Frame): Wire.WireError | Finished | undefined => {
          if (
            frame._tag === "Write" ||
            frame._tag === "Block" ||
            frame._tag === "ResyncBegin" ||
            frame._tag === "ResyncEnd"
          )
            return onRecord(current, frame)
          if (frame._tag === "KeepAlive") {
            replies.keepAlive()
            return undefined
          }
          return new Wire.WireError({ reason: "unexpected-frame", detail: `${frame._tag} from the filter` })
        }

        const run = Effect.gen(function* () {
          for (;;) {
            const frames = yield* source.next
            if (frames === undefined) return
            for (const frame of frames) {
              if (entry === undefined) yield* onHello(frame)
              else if (frame._tag === "ChecksumRequest") yield* onChecksumRequest(entry, frame)
              else {
                const stop = onFrame(entry, frame)
                if (stop !== undefined) return yield* stop
              }
            }
            if (entry !== undefined) {
              if (entry.log.failure !== undefined) return yield* new Finished({ detail: "the log failed" })
              // Too much waits for the writer: stop reading (TCP pushes back on the filter).
              yield* entry.log.backpressure
            }
          }
        })
        const dog = yield* Effect.fork(helloDeadline)
        yield* run.pipe(
          Effect.catchTags({
            HelloRefused: (refused) =>
              Effect.zipRight(
                Effect.sync(() =>
                  socket.end(Wire.encode({ _tag: "Refuse", reason: refused.reason, detail: refused.detail }))
                ),
                Effect.logWarning(refused.message).pipe(
                  Effect.annotateLogs({ peer }),
                  Effect.zipRight(noteDisk(refused.diskId, `refused ${peer}: ${refused.message}`))
                )
              ),
            WireError: (error) =>
              Effect.logWarning(`connection closed: ${error.message}`).pipe(
                Effect.annotateLogs({
                  peer,
                  disk: entry?.log.diskId ?? "-",
                  error: "WireError",
                  reason: error.reason
                }),
                Effect.zipRight(
                  noteDisk(entry?.log.diskId, `connection from ${peer} closed: ${error.message}`)
                )
              ),
            SocketFailed: (failed) =>
              Effect.logInfo("connection lost").pipe(
                Effect.annotateLogs({ peer, disk: entry?.log.diskId ?? "-", cause: String(failed.cause) }),
                Effect.zipRight(
                  noteDisk(entry?.log.diskId, `connection from ${peer} lost: ${String(failed.cause)}`)
                )
              ),
            Finished: (finished) =>
              Effect.logWarning(`connection closed: ${finished.detail}`).pipe(
                Effect.annotateLogs({ peer, disk: entry?.log.diskId ?? "-" }),
                Effect.zipRight(
                  noteDisk(entry?.log.diskId, `connection from ${peer} closed: ${finished.detail}`)
                )
              )
          }),
          Effect.ensuring(
            Effect.suspend(() => Fiber.interruptAll(watch === undefined ? [dog] : [dog, watch]))
          ),
          Effect.ensuring(
            Effect.sync(() => {
              unsubscribe()
              if (entry !== undefined && entry.connection === me) entry.connection = undefined
              source.release()
              if (!socket.writableEnded) socket.destroy()
              // Ended after a refusal: the frame is flushed, then the socket closes (or is torn down).
              else setTimeout(() => socket.destroy(), 5000).unref()
            })
          ),
          Effect.zipRight(
            Effect.suspend(() =>
              Effect.logInfo(`${entry?.log.diskId ?? "-"}: connection ended`).pipe(
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
        socket.on("error", () => {}) // the connection's source reports it
        if (sockets.size >= maxConnections) {
          const peer = `${socket.remoteAddress}:${socket.remotePort}`
          socket.destroy()
          runConnection(
            Effect.logWarning("connection refused: too many connections").pipe(
              Effect.annotateLogs({ peer, maxConnections })
            )
          )
          return
        }
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
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
    const disks = Effect.sync(() => {
      const now = wall()
      return store.disks().map((log) => {
        const entry = entries.get(log.diskId)
        const holder = entry?.connection
        return diskStatus(
          {
            log,
            peer: holder === undefined || holder.socket.destroyed ? undefined : holder.peer,
            inResync: entry === undefined ? log.openedInResync : entry.receiver.inResync,
            note: notes.get(log.diskId)
          },
          now
        )
      })
    })
    return { host: options.host, port, store, connections: FiberSet.size(connections), disks }
  })

/**
 * `serve`, the ready line on stdout (`listening HOST:PORT`), then runs until interrupted.
 * With `control`, it answers `cdp-sync status` on that unix socket (`internal/control.ts`).
 */
export const run = (options: ServeOptions & { readonly control?: string | undefined }) =>
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
      if (options.control !== undefined)
        yield* Control.serve({
          path: options.control,
          status: Effect.map(server.disks, (disks) => ({
            role: "receiver" as const,
            pid: process.pid,
            at: new Date().toISOString(),
            disks
          }))
        })
      yield* Console.log(`listening ${endpoint(server.host, server.port)}`)
      return yield* Effect.never
    })
  )

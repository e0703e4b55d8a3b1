/**
 * The transmission phase with simple replies (proto.md, "Transmission"): one fiber
 * reads requests in order, checks each, and hands it to a fiber of its own, so requests
 * pipeline and replies go out as they complete (out of order). The WRITEs a client has
 * pipelined (those already received when the reader would otherwise wait) go to the
 * device together, checked one by one first, as one `writeAll` (writeBatch.ts);
 * replies are written once per turn of the event loop (`ReplyQueue`). Bounds: at most
 * `maxInFlight` requests and `bufferBytes` of payload (write data read and not yet
 * written, read data not yet handed to the kernel) per connection; beyond them the
 * connection stops reading and TCP pushes back on the client.
 *
 * Checks, in the spec's order of preference: command flags not documented for the
 * command → EINVAL; a write to a read-only export → EPERM; a READ or WRITE over the
 * maximum payload → EINVAL (a WRITE's payload is read off and dropped, never held);
 * past the end → ENOSPC for WRITE and WRITE_ZEROES, EINVAL otherwise; offset or length
 * not a multiple of 512 → EINVAL; an unknown command → EINVAL. A bad request magic
 * cannot be answered (nothing says where the next request starts): the connection
 * closes with `NbdProtocolError`.
 */
import type * as Net from "node:net"
import { Cause, Deferred, Effect, FiberSet } from "effect"
import { SECTOR_SIZE } from "../../adapters/VirtualDisk.js"
import * as Codec from "./codec.js"
import { NbdProtocolError, type Request } from "./codec.js"
import type { Device, DeviceWrite } from "./device.js"
import type { Durability } from "./durability.js"
import type { Mutants } from "./mutants.js"
import * as P from "./protocol.js"
import { type EndedMidMessage, ReplyQueue, type SocketFailed, type SocketReader } from "./socketIo.js"
import { Bounds, type QueuedWrite, writeBatch } from "./writeBatch.js"

export interface Target {
  readonly device: Device
  readonly durability: Durability
  readonly size: number
  readonly readOnly: boolean
  readonly maxPayload: number
  readonly maxInFlight: number
  readonly bufferBytes: number
  readonly mutants: Mutants
}

/** How the transmission phase ended (a protocol violation fails it instead). */
export type TransmissionEnd = "disconnect" | "client-closed" | "server-stopping"

export type TransmissionError = NbdProtocolError | EndedMidMessage | SocketFailed

/** TRIM and WRITE_ZEROES write zeros from this buffer (never written to), in pieces this large. */
const ZERO_PIECE = 128 * 1024
const zeros = new Uint8Array(ZERO_PIECE)
/** Zero pieces handed to the device at once (`writeAll`: one trip through the filter). */
const ZERO_BATCH = 16

/** The flags each command may carry; FUA is valid on every command once SEND_FUA is advertised. */
const allowedFlags = (type: number): number =>
  type === P.CMD_WRITE_ZEROES ? P.CMD_FLAG_FUA | P.CMD_FLAG_NO_HOLE : P.CMD_FLAG_FUA

/** The error a request gets without touching the disk, or `undefined` when it may go ahead. */
export const check = (request: Request, target: Pick<Target, "size" | "readOnly" | "maxPayload">) => {
  const { type, flags, offset, length } = request
  const writes = type === P.CMD_WRITE || type === P.CMD_WRITE_ZEROES || type === P.CMD_TRIM
  const ranged = writes || type === P.CMD_READ
  if (!ranged && type !== P.CMD_FLUSH) return P.EINVAL
  if ((flags & ~allowedFlags(type)) !== 0) return P.EINVAL
  if (writes && target.readOnly) return P.EPERM
  if (!ranged) return undefined
  if ((type === P.CMD_READ || type === P.CMD_WRITE) && length > target.maxPayload) return P.EINVAL
  if (offset + length > target.size)
    return type === P.CMD_WRITE || type === P.CMD_WRITE_ZEROES ? P.ENOSPC : P.EINVAL
  if (offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0) return P.EINVAL
  return undefined
}

export const transmission = (
  socket: Net.Socket,
  reader: SocketReader,
  target: Target,
  stopping: Deferred.Deferred<void>
): Effect.Effect<TransmissionEnd, TransmissionError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const { device, durability, mutants } = target
      const bounds = new Bounds(target.maxInFlight, target.bufferBytes)
      const handlers = yield* FiberSet.make<void, never>()
      const replies = new ReplyQueue(socket)
      // Checked WRITEs read and not yet handed to the device; owned by the reading fiber.
      let batch: Array<QueuedWrite> = []

      const reply = (cookie: bigint, error: number, data?: Uint8Array, written?: () => void) =>
        replies.push(
          data === undefined || error !== 0
            ? [Codec.encodeSimpleReply(error, cookie)]
            : [Codec.encodeSimpleReply(error, cookie), data],
          written
        )

      /** Hands the batch to the device on a fiber of its own (before the reader waits for anything). */
      const submit: Effect.Effect<void> = Effect.suspend(() => {
        if (batch.length === 0) return Effect.void
        const writes = batch
        batch = []
        return FiberSet.run(
          handlers,
          writeBatch(writes, { device, durability, reply, bounds, mutants })
        ).pipe(Effect.asVoid)
      })

      /** A slot and `bytes` of budget; the batch goes first if the reader has to wait for them. */
      const room = (bytes: number): Effect.Effect<void> =>
        Effect.suspend(() =>
          bounds.tryTake(bytes) ? Effect.void : Effect.zipRight(submit, bounds.take(bytes))
        )

      /** Exactly `n` bytes; the batch goes first if they are not all here yet. */
      const take = (n: number, what: string) =>
        reader.buffered >= n ? reader.take(n, what) : Effect.zipRight(submit, reader.take(n, what))

      /**
       * Runs a checked request's work on its own fiber and answers it; its slot goes back
       * then, and its `bytes` of budget once the answer is with the kernel.
       */
      const handle = (
        request: Request,
        bytes: number,
        work: Effect.Effect<Uint8Array | undefined, unknown>
      ): Effect.Effect<void> =>
        FiberSet.run(
          handlers,
          work.pipe(
            Effect.matchCauseEffect({
              onSuccess: (data) =>
                Effect.sync(() => reply(request.cookie, 0, data, () => bounds.release(0, bytes))),
              onFailure: (cause) => {
                const error = Cause.squash(cause)
                return Effect.logWarning(
                  `nbd: ${P.commandName(request.type)} at ${request.offset} (${request.length} bytes) failed`,
                  error
                ).pipe(
                  Effect.zipRight(
                    Effect.sync(() =>
                      reply(request.cookie, device.errnoOf(error), undefined, () => bounds.release(0, bytes))
                    )
                  )
                )
              }
            }),
            Effect.ensuring(Effect.sync(() => bounds.release(1, 0)))
          )
        ).pipe(Effect.asVoid)

      const zero = (offset: number, length: number): Effect.Effect<void, unknown> => {
        const pieces: Array<DeviceWrite> = []
        for (let at = offset; at < offset + length && pieces.length < ZERO_BATCH; at += ZERO_PIECE)
          pieces.push({ offset: at, bytes: zeros.subarray(0, Math.min(ZERO_PIECE, offset + length - at)) })
        const done = pieces.reduce((n, w) => n + w.bytes.byteLength, 0)
        return pieces.length === 0
          ? Effect.void
          : Effect.zipRight(device.writeAll(pieces), zero(offset + done, length - done))
      }
      const fua = (request: Request) => (request.flags & P.CMD_FLAG_FUA) !== 0

      const write = (request: Request): Effect.Effect<void, TransmissionError> =>
        Effect.gen(function* () {
          yield* room(request.length)
          const payload = yield* take(request.length, "a WRITE's payload")
          if (payload === undefined)
            return yield* new NbdProtocolError({
              reason: "truncated",
              detail: `the client closed the connection before a WRITE's ${request.length} bytes`
            })
          if (request.length === 0) {
            yield* handle(
              request,
              0,
              fua(request) ? Effect.as(durability.sync, undefined) : Effect.succeed(undefined)
            )
            return
          }
          if (mutants.answerWritesEarly) reply(request.cookie, 0)
          batch.push({ request, payload, answered: mutants.answerWritesEarly })
        })

      const dispatch = (request: Request): Effect.Effect<"go-on" | TransmissionEnd, TransmissionError> =>
        Effect.gen(function* () {
          if (request.type === P.CMD_DISC) return "disconnect" as const
          const refused = check(request, target)
          if (mutants.batchUnchecked && request.type === P.CMD_WRITE && request.length <= target.maxPayload) {
            yield* write(request)
            return "go-on" as const
          }
          if (refused !== undefined) {
            if (request.type === P.CMD_WRITE && request.length > 0) {
              if (reader.buffered < request.length) yield* submit
              yield* reader.skip(request.length, "a refused WRITE's payload")
            }
            reply(request.cookie, refused)
            return "go-on" as const
          }
          if (request.type === P.CMD_WRITE) {
            yield* write(request)
            return "go-on" as const
          }
          // Anything else goes after the WRITEs read before it.
          yield* submit
          yield* room(request.type === P.CMD_READ ? request.length : 0)
          switch (request.type) {
            case P.CMD_READ:
              yield* handle(
                request,
                request.length,
                request.length === 0
                  ? Effect.succeed(new Uint8Array(0))
                  : device.read(request.offset, request.length)
              )
              break
            case P.CMD_FLUSH:
              yield* handle(request, 0, Effect.as(durability.sync, undefined))
              break
            default: {
              // TRIM and WRITE_ZEROES: zeros through the device (the replicator: they replicate like writes).
              const zeroed = zero(request.offset, request.length)
              yield* handle(
                request,
                0,
                Effect.as(fua(request) ? Effect.zipRight(zeroed, durability.sync) : zeroed, undefined)
              )
            }
          }
          return "go-on" as const
        })

      /**
       * A checked WRITE whose payload is already here and fits the bounds joins the batch
       * on this thread (what `write` does, without its steps of the runtime: at 4 KiB
       * those were most of the server's own CPU per request). False: `dispatch` takes it.
       */
      const writeBuffered = (request: Request): boolean => {
        if (request.type !== P.CMD_WRITE || request.length === 0 || mutants.answerWritesEarly) return false
        if (reader.buffered < request.length || check(request, target) !== undefined) return false
        if (!bounds.tryTake(request.length)) return false
        const payload = reader.takeBuffered(request.length)
        if (payload === undefined) {
          bounds.release(1, request.length)
          return false
        }
        batch.push({ request, payload, answered: false })
        return true
      }

      const readRequests: Effect.Effect<TransmissionEnd, TransmissionError> = Effect.gen(function* () {
        for (;;) {
          const header =
            reader.takeBuffered(P.REQUEST_BYTES) ?? (yield* take(P.REQUEST_BYTES, "a request header"))
          if (header === undefined) return "client-closed" as const
          const request = Codec.decodeRequest(header)
          if (request instanceof NbdProtocolError) return yield* request
          if (writeBuffered(request)) continue
          const next = yield* dispatch(request)
          if (next !== "go-on") return next
        }
      })

      const end = yield* Effect.raceFirst(
        readRequests,
        Effect.as(Deferred.await(stopping), "server-stopping" as const)
      ).pipe(
        // The requests already taken are answered (the spec's DISC; a kind shutdown),
        // whatever ended the reading: the WRITEs read (an interrupted reader leaves its
        // batch), then every request fiber, then the replies go out before the socket ends.
        Effect.ensuring(
          Effect.suspend(() => submit).pipe(
            Effect.zipRight(FiberSet.awaitEmpty(handlers)),
            Effect.zipRight(Effect.sync(replies.flush))
          )
        )
      )
      return end
    })
  )

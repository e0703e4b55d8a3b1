/**
 * The transmission phase with simple replies (proto.md, "Transmission"): one fiber
 * reads requests in order, checks each, and hands it to a fiber of its own, so requests
 * pipeline and replies go out as they complete (out of order). Bounds: at most
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
import { DiskRangeError, SECTOR_SIZE, type VirtualDisk } from "../../adapters/VirtualDisk.js"
import type { GuestWrite, Replicator } from "../../replicator/Replicator.js"
import { WriteRejected } from "../../replicator/Replicator.js"
import * as Codec from "./codec.js"
import { NbdProtocolError, type Request } from "./codec.js"
import type { Durability } from "./durability.js"
import type { Mutants } from "./mutants.js"
import * as P from "./protocol.js"
import { type EndedMidMessage, type SocketFailed, type SocketReader, writeParts } from "./socketIo.js"

export interface Target {
  readonly disk: VirtualDisk.Service
  readonly replicator: Replicator.Service
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
/** Zero pieces handed to the replicator at once (`writeAll`: one trip through the filter). */
const ZERO_BATCH = 16

/** The flags each command may carry; FUA is valid on every command once SEND_FUA is advertised. */
const allowedFlags = (type: number): number =>
  type === P.CMD_WRITE_ZEROES ? P.CMD_FLAG_FUA | P.CMD_FLAG_NO_HOLE : P.CMD_FLAG_FUA

/** The errno a failed disk or replicator operation is answered with. */
const errnoOf = (error: unknown): number => {
  if (error instanceof WriteRejected || error instanceof DiskRangeError) return P.EINVAL
  if (
    typeof error === "object" &&
    error !== null &&
    (error as { _tag?: unknown })._tag === "ReplicatorStopped" &&
    (error as { reason?: unknown }).reason === "the replicator is closing"
  )
    return P.ESHUTDOWN
  return P.EIO
}

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
      const { disk, replicator, durability, mutants } = target
      const slots = yield* Effect.makeSemaphore(target.maxInFlight)
      const budget = yield* Effect.makeSemaphore(target.bufferBytes)
      const handlers = yield* FiberSet.make<void, never>()

      const reply = (cookie: bigint, error: number, data?: Uint8Array, written?: () => void) =>
        writeParts(
          socket,
          data === undefined || error !== 0
            ? [Codec.encodeSimpleReply(error, cookie)]
            : [Codec.encodeSimpleReply(error, cookie), data],
          written
        )

      const giveBack = (bytes: number) => () => {
        if (bytes > 0) Effect.runSync(budget.release(bytes))
      }

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
              onSuccess: (data) => Effect.sync(() => reply(request.cookie, 0, data, giveBack(bytes))),
              onFailure: (cause) => {
                const error = Cause.squash(cause)
                return Effect.logWarning(
                  `nbd: ${P.commandName(request.type)} at ${request.offset} (${request.length} bytes) failed`,
                  error
                ).pipe(
                  Effect.zipRight(
                    Effect.sync(() => reply(request.cookie, errnoOf(error), undefined, giveBack(bytes)))
                  )
                )
              }
            }),
            Effect.ensuring(slots.release(1))
          )
        ).pipe(Effect.asVoid)

      const zero = (offset: number, length: number): Effect.Effect<void, unknown> => {
        const batch: Array<GuestWrite> = []
        for (let at = offset; at < offset + length && batch.length < ZERO_BATCH; at += ZERO_PIECE)
          batch.push({ offset: at, bytes: zeros.subarray(0, Math.min(ZERO_PIECE, offset + length - at)) })
        const done = batch.reduce((n, w) => n + w.bytes.byteLength, 0)
        return batch.length === 0
          ? Effect.void
          : Effect.zipRight(replicator.writeAll(batch), zero(offset + done, length - done))
      }
      const fua = (request: Request) => (request.flags & P.CMD_FLAG_FUA) !== 0

      const dispatch = (request: Request): Effect.Effect<"go-on" | TransmissionEnd, TransmissionError> =>
        Effect.gen(function* () {
          if (request.type === P.CMD_DISC) return "disconnect" as const
          const refused = check(request, target)
          if (refused !== undefined) {
            if (request.type === P.CMD_WRITE) yield* reader.skip(request.length, "a refused WRITE's payload")
            reply(request.cookie, refused)
            return "go-on" as const
          }
          yield* slots.take(1)
          switch (request.type) {
            case P.CMD_READ:
              yield* budget.take(request.length)
              yield* handle(
                request,
                request.length,
                request.length === 0
                  ? Effect.succeed(new Uint8Array(0))
                  : disk.read(request.offset, request.length)
              )
              break
            case P.CMD_WRITE: {
              yield* budget.take(request.length)
              const payload = yield* reader.take(request.length, "a WRITE's payload")
              if (payload === undefined)
                return yield* new NbdProtocolError({
                  reason: "truncated",
                  detail: `the client closed the connection before a WRITE's ${request.length} bytes`
                })
              const write = request.length === 0 ? Effect.void : replicator.write(request.offset, payload)
              const durable = fua(request) ? Effect.zipRight(write, durability.sync) : write
              if (mutants.answerWritesEarly) {
                reply(request.cookie, 0)
                yield* FiberSet.run(
                  handlers,
                  durable.pipe(
                    Effect.ignore,
                    Effect.ensuring(Effect.sync(giveBack(request.length))),
                    Effect.ensuring(slots.release(1))
                  )
                )
                break
              }
              yield* handle(request, request.length, Effect.as(durable, undefined))
              break
            }
            case P.CMD_FLUSH:
              yield* handle(request, 0, Effect.as(durability.sync, undefined))
              break
            default: {
              // TRIM and WRITE_ZEROES: zeros through the replicator, so they replicate like writes.
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

      const readRequests: Effect.Effect<TransmissionEnd, TransmissionError> = Effect.gen(function* () {
        for (;;) {
          const header = yield* reader.take(P.REQUEST_BYTES, "a request header")
          if (header === undefined) return "client-closed" as const
          const request = Codec.decodeRequest(header)
          if (request instanceof NbdProtocolError) return yield* request
          const next = yield* dispatch(request)
          if (next !== "go-on") return next
        }
      })

      const end = yield* Effect.raceFirst(
        readRequests,
        Effect.as(Deferred.await(stopping), "server-stopping" as const)
      ).pipe(
        // The requests already taken are answered (the spec's DISC; a kind shutdown), whatever ended the reading.
        Effect.ensuring(FiberSet.awaitEmpty(handlers))
      )
      return end
    })
  )

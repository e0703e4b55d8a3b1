/**
 * One receiver connection's two directions over its socket (docs/receiver.md, the
 * bounds under "Running it"):
 *
 * - `FrameSource`: the frames the filter sends, pulled by the connection's fiber. It ends
 *   whenever the socket closes — a peer's end, a reset, or our own `destroy()` (which
 *   emits `close` only: a reader that waited for `end` or `error` waited for ever, with
 *   the decoder's buffers) — and it releases the decoder's buffers then. It tells how
 *   long the peer has been silent while we were waiting for it (the idle timeout).
 * - `Replies`: what the receiver sends back. Acks are cumulative, so while the socket's
 *   write buffer is above its high-water mark only the latest one is kept (with at most
 *   one gap and one keep-alive): a filter that never reads its acks costs O(1) memory.
 *   Checksum answers are not coalesced: the connection writes one, then waits (`drained`)
 *   until the socket takes more before it answers the next request.
 */
import type * as Net from "node:net"
import type { Writable } from "node:stream"
import { Data, Effect } from "effect"
import * as Wire from "../../protocol/Wire.js"

/** The socket failed under a connection (reset, timeout). */
export class SocketFailed extends Data.TaggedError("SocketFailed")<{ readonly cause: unknown }> {}

/**
 * Decoded frames the fiber has not taken yet, in bytes, before the socket stops reading.
 * The fiber takes them all at once, so a burst costs one wake-up, not one per chunk.
 */
const READY_HIGH_WATER = 1 << 20

const frameBytes = (frame: Wire.Frame) =>
  Wire.HEADER_BYTES + (frame._tag === "Write" || frame._tag === "Block" ? frame.data.byteLength : 0)

export class FrameSource {
  private ready: Array<Wire.Frame> = []
  private readyBytes = 0
  private failure: Wire.WireError | SocketFailed | undefined = undefined
  /** `end`: the peer finished its side; `close`: the socket is gone (possibly closed by us). */
  private ended: "end" | "close" | undefined = undefined
  /** Bytes of an unfinished frame when the peer ended its side (kept: `close` releases them). */
  private leftover = 0
  private wake: (() => void) | undefined = undefined
  private lastHeard: number
  /** Since when the connection's fiber has been waiting for bytes (undefined: busy). */
  private waitingSince: number | undefined = undefined

  constructor(
    private readonly socket: Net.Socket,
    private readonly decoder: Wire.Decoder,
    private readonly now: () => number
  ) {
    this.lastHeard = now()
    socket.on("data", (chunk: Uint8Array) => {
      this.lastHeard = this.now()
      // Frames before a corruption are kept: they precede it and are handled first.
      const from = this.ready.length
      const error = decoder.pushInto(chunk, this.ready)
      for (let i = from; i < this.ready.length; i++) this.readyBytes += frameBytes(this.ready[i]!)
      if (error !== undefined) this.failure ??= error
      // Enough waits for the fiber (busy, or its log is behind): stop reading, and TCP
      // pushes back on the filter. The fiber reads on when it takes them.
      if (error !== undefined || this.readyBytes >= READY_HIGH_WATER) socket.pause()
      if (error !== undefined || this.ready.length > from) this.notify()
    })
    socket.on("end", () => {
      this.ended ??= "end"
      this.leftover = decoder.buffered
      this.notify()
    })
    socket.on("error", (cause) => {
      this.failure ??= new SocketFailed({ cause })
      this.notify()
    })
    socket.on("close", () => {
      this.ended ??= "close"
      // Nothing the peer sent stays reachable, whoever closed the socket.
      decoder.release()
      this.notify()
    })
    socket.pause()
    // The connection's fiber may start after the socket already ended or closed.
    if (socket.readableEnded) {
      this.ended = "end"
      this.leftover = decoder.buffered
    }
    if (socket.destroyed) {
      this.ended ??= "close"
      decoder.release()
    }
  }

  private notify(): void {
    const wake = this.wake
    this.wake = undefined
    this.waitingSince = undefined
    wake?.()
  }

  /**
   * The next frames, in order; `undefined` once the socket has ended or closed between
   * frames. Fails with the `WireError` after the frames that preceded it, with `truncated`
   * when the peer ended its side inside a frame, or with `SocketFailed`.
   */
  readonly next: Effect.Effect<ReadonlyArray<Wire.Frame> | undefined, Wire.WireError | SocketFailed> =
    Effect.suspend(() => {
      if (this.ready.length > 0) {
        const frames = this.ready
        this.ready = []
        this.readyBytes = 0
        if (this.failure === undefined && this.ended === undefined) this.socket.resume()
        return Effect.succeed(frames)
      }
      if (this.failure !== undefined) return Effect.fail(this.failure)
      if (this.ended !== undefined)
        return this.ended === "end" && this.leftover > 0
          ? Effect.fail(
              new Wire.WireError({
                reason: "truncated",
                detail: `the stream ended ${this.leftover} bytes into a frame`
              })
            )
          : Effect.succeed(undefined)
      return Effect.async<ReadonlyArray<Wire.Frame> | undefined, Wire.WireError | SocketFailed>((resume) => {
        this.waitingSince = this.now()
        this.wake = () => resume(this.next)
        this.socket.resume()
        return Effect.sync(() => {
          this.wake = undefined
          this.waitingSince = undefined
        })
      })
    })

  /**
   * How long the peer has been silent while the connection waited for it (0 while the
   * connection is busy: applying frames, or stopped reading because its log is behind).
   */
  silentFor(now: number): number {
    return this.waitingSince === undefined ? 0 : now - Math.max(this.lastHeard, this.waitingSince)
  }

  /** Drops the buffered bytes and frames (the connection is over). */
  release(): void {
    this.ready = []
    this.readyBytes = 0
    this.decoder.release()
  }
}

/** Why `Replies` gave up: a second gap is due while the first has not been written. */
export const REPLIES_OVERFLOW = "the filter does not read what the receiver sends"

export class Replies {
  /** The latest ack due before the pending gap (or the only pending ack). */
  private ackBefore: number | undefined = undefined
  private gapExpected: number | undefined = undefined
  /** The latest ack due after the pending gap. */
  private ackAfter: number | undefined = undefined
  private keepAlivePending = false
  /** A checksum answer not yet written (one at a time: the connection waits for `drained`). */
  private answer: Wire.Frame | undefined = undefined
  private readonly drainWaiters = new Set<() => void>()
  private stalled: number | undefined = undefined

  constructor(
    private readonly socket: Writable,
    private readonly now: () => number,
    /** Mutation testing only (a receiver that queues every reply): never set by the service. */
    private readonly unsafeNoCoalescing = false
  ) {
    socket.on("drain", () => {
      this.stalled = undefined
      this.flush()
      this.wakeDrained()
    })
    socket.on("close", () => this.wakeDrained())
  }

  /**
   * Waits until the last checksum answer has been written and the socket takes more: a peer
   * that asks without reading holds one answer in the receiver, not one per request (the
   * idle timeout closes it once it has not read for that long).
   */
  readonly drained: Effect.Effect<void> = Effect.suspend(() =>
    this.isDrained()
      ? Effect.void
      : Effect.async<void>((resume) => {
          const waiter = () => {
            if (!this.isDrained()) return
            this.drainWaiters.delete(waiter)
            resume(Effect.void)
          }
          this.drainWaiters.add(waiter)
          return Effect.sync(() => {
            this.drainWaiters.delete(waiter)
          })
        })
  )

  private isDrained(): boolean {
    return this.socket.destroyed || (this.answer === undefined && !this.socket.writableNeedDrain)
  }

  private wakeDrained(): void {
    for (const waiter of [...this.drainWaiters]) waiter()
  }

  /** A checksum answer (reply or refusal), written after the acks and gap due before it. */
  checksumAnswer(frame: Wire.ChecksumReply | Wire.ChecksumRefused): void {
    if (this.unsafeNoCoalescing) {
      this.write(frame)
      return
    }
    this.answer = frame
    this.flush()
  }

  /** Since when the socket has been refusing more (above its high-water mark), if it is. */
  get stalledSince(): number | undefined {
    return this.stalled
  }

  /** Every record through `seq` is durable. */
  ack(seq: number): void {
    if (this.unsafeNoCoalescing) {
      this.write({ _tag: "Ack", seq })
      return
    }
    if (this.gapExpected === undefined) this.ackBefore = Math.max(this.ackBefore ?? 0, seq)
    else this.ackAfter = Math.max(this.ackAfter ?? 0, seq)
    this.flush()
  }

  /** A gap; `false` when an earlier one is still unwritten (the caller closes the connection). */
  gap(expected: number): boolean {
    if (this.unsafeNoCoalescing) {
      this.write({ _tag: "Gap", expected })
      return true
    }
    if (this.gapExpected !== undefined) return false
    this.gapExpected = expected
    this.flush()
    return true
  }

  /** The answer to a keep-alive (one outstanding at most). */
  keepAlive(): void {
    if (this.unsafeNoCoalescing) {
      this.write({ _tag: "KeepAlive" })
      return
    }
    this.keepAlivePending = true
    this.flush()
  }

  private take(): Wire.Frame | undefined {
    if (this.ackBefore !== undefined) {
      const seq = this.ackBefore
      this.ackBefore = undefined
      return { _tag: "Ack", seq }
    }
    if (this.gapExpected !== undefined) {
      const expected = this.gapExpected
      this.gapExpected = undefined
      this.ackBefore = this.ackAfter
      this.ackAfter = undefined
      return { _tag: "Gap", expected }
    }
    if (this.keepAlivePending) {
      this.keepAlivePending = false
      return { _tag: "KeepAlive" }
    }
    if (this.answer !== undefined) {
      const answer = this.answer
      this.answer = undefined
      return answer
    }
    return undefined
  }

  private write(frame: Wire.Frame): void {
    if (!this.socket.destroyed && !this.socket.write(Wire.encode(frame))) this.stalled ??= this.now()
  }

  /** Writes what is pending, in order, while the socket takes it. */
  private flush(): void {
    const socket = this.socket
    if (socket.destroyed) {
      this.ackBefore = this.gapExpected = this.ackAfter = undefined
      this.keepAlivePending = false
      this.answer = undefined
      return
    }
    while (!socket.writableNeedDrain) {
      const frame = this.take()
      if (frame === undefined) return
      socket.write(Wire.encode(frame))
    }
    this.stalled ??= this.now()
  }
}

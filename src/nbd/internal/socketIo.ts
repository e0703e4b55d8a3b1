/**
 * Exact reads and ordered writes over a node:net socket, for both ends of NBD.
 * node:net directly: @effect/platform's Socket gives a stream of chunks, and NBD needs
 * "exactly n bytes, then decide" with the socket's own backpressure (paused mode:
 * nothing is read from the kernel beyond the stream's high-water mark until the
 * connection asks for it).
 */
import type * as Net from "node:net"
import { Data, Effect } from "effect"

/** The socket failed (reset, write after the peer left). */
export class SocketFailed extends Data.TaggedError("SocketFailed")<{ readonly cause: unknown }> {
  override get message() {
    const cause = this.cause
    return `socket failed: ${cause instanceof Error ? cause.message : String(cause)}`
  }
}

/** The peer closed its side inside a message: `got` of `wanted` bytes arrived. */
export class EndedMidMessage extends Data.TaggedError("EndedMidMessage")<{
  readonly wanted: number
  readonly got: number
  readonly what: string
}> {
  override get message() {
    return `the peer closed the connection ${this.got} bytes into ${this.what} (of ${this.wanted})`
  }
}

/** Skipped payloads are read in pieces this large at most, and dropped. */
const SKIP_PIECE = 1 << 20

export class SocketReader {
  private ended = false
  private failure: SocketFailed | undefined = undefined
  private wake: (() => void) | undefined = undefined
  private discarding = false

  constructor(private readonly socket: Net.Socket) {
    const notify = () => {
      if (this.discarding) this.drop()
      const wake = this.wake
      this.wake = undefined
      wake?.()
    }
    socket.on("readable", notify)
    socket.on("end", () => {
      this.ended = true
      notify()
    })
    socket.on("close", () => {
      this.ended = true
      notify()
    })
    socket.on("error", (cause) => {
      this.failure ??= new SocketFailed({ cause })
      notify()
    })
    if (socket.readableEnded || socket.destroyed) this.ended = true
  }

  /**
   * Exactly `n` bytes; `undefined` if the peer ended its side before the first of them
   * (a clean end between messages). Fails with `EndedMidMessage` if it ended inside.
   */
  take(n: number, what: string): Effect.Effect<Buffer | undefined, EndedMidMessage | SocketFailed> {
    if (n === 0) return Effect.succeed(Buffer.alloc(0))
    return Effect.suspend(() => this.poll(n, what) ?? this.waitThen(() => this.take(n, what)))
  }

  /** Exactly `n` bytes if they are already here (n > 0), without a step of the runtime; else `undefined`. */
  takeBuffered(n: number): Buffer | undefined {
    if (this.failure !== undefined || this.socket.readableLength < n) return undefined
    const chunk = this.socket.read(n) as Buffer | null
    return chunk !== null && chunk.byteLength === n ? chunk : undefined
  }

  /** Reads and drops `n` bytes (a payload the server refuses), never holding more than a piece. */
  skip(n: number, what: string): Effect.Effect<void, EndedMidMessage | SocketFailed> {
    const go = (left: number): Effect.Effect<void, EndedMidMessage | SocketFailed> =>
      left === 0
        ? Effect.void
        : Effect.flatMap(this.take(Math.min(left, SKIP_PIECE), what), (piece) =>
            piece === undefined
              ? Effect.fail(new EndedMidMessage({ wanted: n, got: n - left, what }))
              : go(left - piece.byteLength)
          )
    return go(n)
  }

  private poll(
    n: number,
    what: string
  ): Effect.Effect<Buffer | undefined, EndedMidMessage | SocketFailed> | undefined {
    if (this.failure !== undefined) return Effect.fail(this.failure)
    const chunk = this.socket.read(n) as Buffer | null
    if (chunk !== null) {
      if (chunk.byteLength === n) return Effect.succeed(chunk)
      // At the end, read(n) hands over what is left, short.
      return Effect.fail(new EndedMidMessage({ wanted: n, got: chunk.byteLength, what }))
    }
    if (this.ended || this.socket.destroyed) {
      const left = this.socket.readableLength
      if (left === 0) return Effect.succeed(undefined)
      return Effect.fail(new EndedMidMessage({ wanted: n, got: left, what }))
    }
    return undefined
  }

  private waitThen<A, E>(next: () => Effect.Effect<A, E>): Effect.Effect<A, E> {
    return Effect.async<A, E>((resume) => {
      this.wake = () => resume(next())
      return Effect.sync(() => {
        this.wake = undefined
      })
    })
  }

  /**
   * From now on, whatever the peer sent or still sends is read and dropped (the server is
   * done with the connection). In paused mode the peer's end only shows once every byte
   * before it was read, and a socket closes once both sides ended: a peer that left bytes
   * unread behind (after a bad request) would otherwise keep its socket open, and its
   * connection slot taken, until it is destroyed.
   */
  discard(): void {
    this.discarding = true
    this.drop()
  }

  private drop(): void {
    while (this.socket.read() !== null) {}
  }

  /** Bytes already received and not taken (a pipelined request may be complete in there). */
  get buffered(): number {
    return this.socket.readableLength
  }
}

/**
 * Writes `parts` back to back (corked: one segment where possible); `written` runs once
 * the socket has handed them to the kernel, or failed.
 */
export const writeParts = (
  socket: Net.Socket,
  parts: ReadonlyArray<Uint8Array>,
  written?: (error: Error | null | undefined) => void
): void => {
  if (socket.destroyed || socket.writableEnded) {
    written?.(new Error("socket closed"))
    return
  }
  socket.cork()
  for (let i = 0; i < parts.length; i++)
    socket.write(parts[i]!, i === parts.length - 1 ? (e) => written?.(e) : undefined)
  socket.uncork()
}

/**
 * Replies queued by a connection's request fibers and written once per turn of the
 * event loop: one syscall for every reply that completed meanwhile, where one each
 * (16 bytes apiece at 4 KiB random writes) was an eighth of the server's CPU.
 * `flush` writes what is queued now (before the connection ends its side).
 */
const COALESCE_BYTES = 64 * 1024

export class ReplyQueue {
  // Owned by the connection (its fibers and the socket's callbacks run on one thread).
  private parts: Array<Uint8Array> = []
  private written: Array<(error: Error | null | undefined) => void> = []
  private scheduled: NodeJS.Immediate | undefined = undefined

  constructor(private readonly socket: Net.Socket) {}

  push(parts: ReadonlyArray<Uint8Array>, written?: (error: Error | null | undefined) => void): void {
    for (const part of parts) this.parts.push(part)
    if (written !== undefined) this.written.push(written)
    this.scheduled ??= setImmediate(this.flush)
  }

  readonly flush = (): void => {
    if (this.scheduled !== undefined) clearImmediate(this.scheduled)
    this.scheduled = undefined
    if (this.parts.length === 0) return
    const parts = this.parts
    const written = this.written
    this.parts = []
    this.written = []
    let bytes = 0
    for (const part of parts) bytes += part.byteLength
    writeParts(
      this.socket,
      // Small replies in one buffer (one write call); large READ data as it is (no copy).
      parts.length > 1 && bytes <= COALESCE_BYTES ? [Buffer.concat(parts, bytes)] : parts,
      written.length === 0
        ? undefined
        : (error) => {
            for (const done of written) done(error)
          }
    )
  }
}

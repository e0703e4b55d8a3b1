/**
 * The LogReceiver port's in-process errors (re-exported by `LogReceiver`). They live
 * here so the layer implementations can build them without a module cycle.
 */
import { Data } from "effect"

const describe = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : String(cause)

/**
 * Refusals no retry can heal: the receiver holds the disk with another geometry, or the
 * hello's geometry is not one. Any other reason (`already-connected`, `log-failed`, one
 * this filter does not know) may pass, and is retried.
 */
export const PERMANENT_REFUSALS: ReadonlySet<string> = new Set(["geometry-mismatch", "bad-geometry"])

/** The receiver refused the hello (geometry mismatch, a second connection for the disk, …). */
export class ReceiverRefused extends Data.TaggedError("ReceiverRefused")<{
  readonly reason: string
  readonly detail: string
}> {
  override get message() {
    return `the log receiver refused the connection (${this.reason}): ${this.detail}`
  }
  /** Whether retrying can never help (see `PERMANENT_REFUSALS`). */
  get permanent(): boolean {
    return PERMANENT_REFUSALS.has(this.reason)
  }
}

/** No handshake: the receiver could not be reached, timed out, or broke the protocol before its welcome. */
export class ReceiverUnreachable extends Data.TaggedError("ReceiverUnreachable")<{
  readonly cause: unknown
}> {
  override get message() {
    return `the log receiver is unreachable: ${describe(this.cause)}`
  }
}

/** An established connection is gone: socket closed, wire error, dropped by the receiver, or scope closed. */
export class ConnectionLost extends Data.TaggedError("ConnectionLost")<{ readonly cause: unknown }> {
  override get message() {
    return `connection to the log receiver lost: ${describe(this.cause)}`
  }
}

/** Why a connection ended when no lower-level error says so (a cause of `ConnectionLost`). */
export class ConnectionClosed extends Data.TaggedError("ConnectionClosed")<{
  readonly by: "filter" | "receiver"
  readonly detail: string
}> {
  override get message() {
    return `closed by the ${this.by}: ${this.detail}`
  }
}

export type ConnectError = ReceiverRefused | ReceiverUnreachable

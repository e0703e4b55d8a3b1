/**
 * The LogReceiver port (client side): one connection per protected disk to the backup
 * system's log receiver (design §6, docs/wire.md). Records go out in seq order through
 * a bounded buffer; acks (cumulative) and gaps come back as `messages`. Checksum requests
 * (checksum-based resync, online verify) travel in the same buffer, ordered with the
 * records, and their answers come back as `messages` too.
 *
 * Layers: `layerMemory` (an in-process receiver with fault injection, controlled through
 * `MemoryReceiver`) and `layerTcp` (the wire codec over a TCP socket).
 */
import { Context, Effect, Layer } from "effect"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type * as Wire from "../protocol/Wire.js"
import { makeMemory, type MemoryOptions } from "./internal/receiverMemory.js"
import type { LogEntry as StoreLogEntry } from "./internal/receiverStore.js"
import { makeTcp, type TcpOptions } from "./internal/receiverTcp.js"
import {
  type ConnectError as ConnectErrors,
  ConnectionClosed,
  ConnectionLost,
  ReceiverRefused,
  ReceiverUnreachable
} from "./internal/receiverErrors.js"

export { ConnectionClosed, ConnectionLost, ReceiverRefused, ReceiverUnreachable }
export type { MemoryOptions, TcpOptions }

/** Why `connect` failed: refused by the receiver, or no handshake (unreachable, timeout, protocol error). */
export type ConnectError = ConnectErrors

export class LogReceiver extends Context.Tag("cdp-sync/LogReceiver")<LogReceiver, LogReceiver.Service>() {}

export declare namespace LogReceiver {
  interface Service {
    /**
     * Opens a connection for one disk: hello → welcome. Closing the scope closes the
     * connection (records still buffered are dropped: they are unacked, so the filter
     * treats them as lost).
     */
    readonly connect: (hello: Hello) => Effect.Effect<Connection, ConnectError, Scope.Scope>
  }

  /** Disk identity, geometry and the filter's watermark. */
  interface Hello {
    readonly diskId: string
    readonly blockSize: number
    readonly blockCount: number
    readonly watermark: number
  }

  interface Connection {
    /** The receiver's durable seq at the handshake (its welcome). */
    readonly durableSeq: number
    /**
     * Queues a record for the receiver. Records are written in the order `send` returns, so
     * a filter that sends from one fiber keeps seq order. Suspends while the bounded buffer
     * is full (backpressure). The record is copied or encoded before `send` returns: the
     * caller may reuse its buffer. Fails with `ConnectionLost` once the connection is gone;
     * a successful `send` promises nothing about delivery — only an ack does.
     */
    readonly send: (record: OutRecord) => Effect.Effect<void, ConnectionLost>
    /**
     * `send` for a caller that lends the record's data: a layer may write it from the
     * caller's buffer instead of a copy (a 64 KiB copy per drained block). Without
     * `onWritten` the caller never changes those bytes again. With it, the layer calls
     * `onWritten` once it no longer reads them (written to the socket, or copied), and
     * from then on the caller may reuse them; if the connection is lost first it may
     * never be called. Same order, backpressure and failures as `send`.
     */
    readonly sendOwned: (record: OutRecord, onWritten?: () => void) => Effect.Effect<void, ConnectionLost>
    /**
     * `sendOwned` for a run of records in one effect: they are queued in the array's order,
     * as if each were `sendOwned` in turn (same backpressure: the effect suspends while the
     * buffer is full and goes on as it empties). The data of every record is lent, as with
     * `sendOwned`: `onWritten`, once for the whole run, says the layer no longer reads any
     * of it. Fails with `ConnectionLost` once the connection is gone (some of the run may
     * have been queued). For a sender of many small records a step of the runtime per
     * record was a share of its CPU (docs/performance.md, "Session 11").
     */
    readonly sendAll: (
      records: ReadonlyArray<OutRecord>,
      onWritten?: () => void
    ) => Effect.Effect<void, ConnectionLost>
    /**
     * Queues a checksum request (docs/wire.md, "Checksums") in the same buffer as the
     * records, so it reaches the receiver after every record whose `send` returned before
     * it. Same backpressure and failures as `send`; the request is copied or encoded before
     * it returns. The receiver answers each request once, in order, with a `ChecksumReply`
     * or a `ChecksumRefused` on `messages`: after making every record before the request
     * durable and acking it (the ack comes first on `messages`), from the newest version of
     * each block its log holds, with `through` the last record that version reflects. A
     * connection lost first never answers: the request is forgotten with it.
     */
    readonly requestChecksums: (request: Wire.ChecksumRequest) => Effect.Effect<void, ConnectionLost>
    /**
     * Acks (cumulative durable seq), gaps (expected seq) and the answers to checksum
     * requests, in the receiver's order; fails with `ConnectionLost` after the messages
     * received before the loss. Consume it once.
     */
    readonly messages: Stream.Stream<Message, ConnectionLost>
  }

  type OutRecord = Wire.Record
  type Message = Wire.Ack | Wire.Gap | Wire.ChecksumReply | Wire.ChecksumRefused
}

export type Hello = LogReceiver.Hello
export type Connection = LogReceiver.Connection
export type OutRecord = LogReceiver.OutRecord
export type Message = LogReceiver.Message

/** A record in the in-memory receiver's log, with whether it marks a recovery point. */
export type LogEntry = StoreLogEntry

/** Control and inspection of the in-memory receiver (`layerMemory`, and the TCP test server). */
export class MemoryReceiver extends Context.Tag("cdp-sync/MemoryReceiver")<
  MemoryReceiver,
  MemoryReceiver.Service
>() {}

export declare namespace MemoryReceiver {
  interface Service {
    /** Makes every accepted record durable and acks it (`ack: "on-flush"`); no-op while acks are stalled. */
    readonly flush: Effect.Effect<void>
    /** A stuck fsync: while on, nothing becomes durable and nothing is acked. */
    readonly stallAcks: (on: boolean) => Effect.Effect<void>
    /** The receiver stops reading: records pile up in the sender's buffer, then `send` suspends. */
    readonly stallIntake: (on: boolean) => Effect.Effect<void>
    /** Drops the connection of one disk (all when omitted): both ends see the loss. */
    readonly dropConnection: (diskId?: string) => Effect.Effect<void>
    /** The next record to arrive vanishes, so the following one makes a gap. */
    readonly dropNextRecord: Effect.Effect<void>
    /** Restarts the receiver: connections drop; records not yet durable are lost when `loseUnacked`. */
    readonly restart: (options: { readonly loseUnacked: boolean }) => Effect.Effect<void>

    readonly durableSeq: (diskId: string) => Effect.Effect<number>
    /** The durable log, in seq order. */
    readonly log: (diskId: string) => Effect.Effect<ReadonlyArray<LogEntry>>
    /** Seqs of the durable records that mark a recovery point. */
    readonly recoveryPoints: (diskId: string) => Effect.Effect<ReadonlyArray<number>>
    /**
     * Damage the receiver detects: the durable copy of `block` fails its check, so a
     * checksum request naming it is refused (`damaged`) until a record rewrites the whole
     * block. Dies (a defect) for a block outside a known disk.
     */
    readonly damage: (diskId: string, block: number) => Effect.Effect<void>
    /**
     * Damage no check detects: the durable copy of `block` becomes `bytes` (checksums and
     * `replicaBlock` see it; the log and `image` do not). Dies for a block outside a known disk.
     */
    readonly overwrite: (diskId: string, block: number, bytes: Uint8Array) => Effect.Effect<void>
    /** One block of the durable replica (zeros if never written). */
    readonly replicaBlock: (diskId: string, block: number) => Effect.Effect<Uint8Array>
    /** The disk image after durable record `atSeq` (default: latest), from a zeroed base. For small disks. */
    readonly image: (diskId: string, atSeq?: number) => Effect.Effect<Uint8Array>
    readonly isConnected: (diskId: string) => Effect.Effect<boolean>
  }
}

/** An in-process receiver; each build of the layer is a fresh, empty receiver. */
export const layerMemory = (options: MemoryOptions = {}): Layer.Layer<LogReceiver | MemoryReceiver> =>
  Layer.effectContext(
    Effect.sync(() => {
      const { client, control } = makeMemory(options)
      return Context.make(LogReceiver, client).pipe(Context.add(MemoryReceiver, control))
    })
  )

/** The wire codec over TCP, one socket per connection. */
export const layerTcp = (options: TcpOptions): Layer.Layer<LogReceiver> =>
  Layer.succeed(LogReceiver, makeTcp(options))

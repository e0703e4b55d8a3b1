/**
 * An in-memory log receiver: per disk, the durable replica (sparse bytes per block), the
 * durable log, the records accepted but not yet durable, and at most one connection.
 * Sequencing follows the pure rules of `domain/Receiver` (accept / duplicate / gap /
 * rejected, recovery points). Synchronous and callback-based so that both the in-process
 * layer and the TCP test server drive the same receiver; fault injection lives here too.
 */
import { Either } from "effect"
import * as Geometry from "../../domain/Geometry.js"
import * as Receiver from "../../domain/Receiver.js"
import type { Ack, Gap, Hello, Record } from "../../protocol/Wire.js"
import * as ProtocolSession from "../../protocol/Session.js"
import { ConnectionClosed } from "./receiverErrors.js"

export type Message = Ack | Gap

/** A record in the receiver's log, with whether it marks a recovery point. */
export type LogEntry = Record & { readonly recoveryPoint: boolean }

/** The connection's far end, as seen by the receiver. */
export interface Peer {
  readonly deliver: (message: Message) => void
  /** The receiver closes the connection (a fault, a restart, a protocol violation). */
  readonly close: (cause: unknown) => void
}

export type HelloInfo = Omit<Hello, "_tag">

export type HelloResult =
  | { readonly _tag: "Welcome"; readonly durableSeq: number; readonly session: Session }
  | { readonly _tag: "Refuse"; readonly reason: string; readonly detail: string }

export interface StoreOptions {
  /** `immediate` (default): a record is durable and acked as soon as it is accepted; `on-flush`: on `flush()`. */
  readonly ack?: "immediate" | "on-flush" | undefined
}

/** Images are materialised whole; refuse absurd sizes rather than exhaust memory. */
const MAX_IMAGE_BYTES = 1 << 30

class Disk {
  readonly blocks = new Map<number, Uint8Array>()
  readonly log: Array<LogEntry> = []
  pending: Array<LogEntry> = []
  durableSeq = 0
  /** Whether the durable log ends inside a resync (derives the sequencing state after a restart). */
  durableInResync = false
  receiver = Receiver.initial(0)
  session: Session | undefined = undefined
  constructor(readonly geometry: Geometry.Geometry) {}

  /** Applies a record to a replica: bytes at an offset, or a whole block. */
  apply(record: Record, blocks: Map<number, Uint8Array>): void {
    const { blockSize } = this.geometry
    if (record._tag === "Block") {
      blocks.set(record.block, new Uint8Array(record.data))
    } else if (record._tag === "Write") {
      let at = record.offset
      let from = 0
      const data = record.data
      while (from < data.byteLength) {
        const block = Math.floor(at / blockSize)
        const within = at - block * blockSize
        const count = Math.min(blockSize - within, data.byteLength - from)
        let bytes = blocks.get(block)
        if (bytes === undefined) blocks.set(block, (bytes = new Uint8Array(blockSize)))
        bytes.set(data.subarray(from, from + count), within)
        from += count
        at += count
      }
    }
  }
}

/** One connection: records in, acks and gaps out. */
export class Session {
  open = true
  constructor(
    private readonly store: ReceiverStore,
    readonly disk: Disk,
    readonly peer: Peer,
    /** What the protocol's verdicts do here (built by the store). */
    readonly log: ProtocolSession.Log<never>
  ) {}
  receive(record: Record): void {
    this.store.receive(this, record)
  }
  /** The filter side closed the connection: free the disk for the next one. */
  close(): void {
    if (!this.open) return
    this.open = false
    if (this.disk.session === this) this.disk.session = undefined
  }
}

export class ReceiverStore {
  private readonly disks = new Map<string, Disk>()
  private readonly ackMode: "immediate" | "on-flush"
  private acksStalled = false
  private dropNext = false
  private paused = false
  private readonly intakeListeners = new Set<(paused: boolean) => void>()

  constructor(options: StoreOptions = {}) {
    this.ackMode = options.ack ?? "immediate"
  }

  hello(hello: HelloInfo, peer: Peer): HelloResult {
    const geometry = Geometry.make(hello.blockSize, hello.blockCount)
    if (Either.isLeft(geometry))
      return { _tag: "Refuse", reason: "bad-geometry", detail: geometry.left.message }
    let disk = this.disks.get(hello.diskId)
    if (disk === undefined) {
      disk = new Disk(geometry.right)
      this.disks.set(hello.diskId, disk)
    } else if (disk.geometry.blockSize !== hello.blockSize || disk.geometry.blockCount !== hello.blockCount) {
      return {
        _tag: "Refuse",
        reason: "geometry-mismatch",
        detail: `disk ${hello.diskId} has ${disk.geometry.blockCount} blocks of ${disk.geometry.blockSize} bytes, the hello says ${hello.blockCount} of ${hello.blockSize}`
      }
    }
    if (disk.session !== undefined)
      return {
        _tag: "Refuse",
        reason: "already-connected",
        detail: `disk ${hello.diskId} already has a connection`
      }
    const session = new Session(this, disk, peer, this.logOf(disk, peer))
    disk.session = session
    return { _tag: "Welcome", durableSeq: disk.durableSeq, session }
  }

  receive(session: Session, record: Record): void {
    if (!session.open) return
    if (this.dropNext) {
      this.dropNext = false
      return
    }
    const invalid = ProtocolSession.receive(session.disk, session.log, record)
    if (invalid !== undefined) this.closeSession(session, invalid)
  }

  private logOf(disk: Disk, peer: Peer): ProtocolSession.Log<never> {
    return {
      geometry: disk.geometry,
      durable: () => disk.durableSeq,
      append: (record, recoveryPoint) => {
        disk.pending.push({ ...record, recoveryPoint })
        if (this.ackMode === "immediate" && !this.acksStalled) this.makeDurable(disk, true)
      },
      ack: (seq) => {
        if (!this.acksStalled) peer.deliver({ _tag: "Ack", seq })
      },
      gap: (expected) => {
        peer.deliver({ _tag: "Gap", expected })
        return undefined
      },
      rejected: () => {}
    }
  }

  private makeDurable(disk: Disk, ack: boolean): void {
    if (disk.pending.length === 0) return
    for (const entry of disk.pending) {
      disk.apply(entry, disk.blocks)
      disk.log.push(entry)
      if (entry._tag === "ResyncBegin") disk.durableInResync = true
      else if (entry._tag === "ResyncEnd") disk.durableInResync = false
    }
    disk.durableSeq = disk.pending[disk.pending.length - 1]!.seq
    disk.pending = []
    if (ack && disk.session !== undefined) disk.session.peer.deliver({ _tag: "Ack", seq: disk.durableSeq })
  }

  private closeSession(session: Session, cause: unknown): void {
    session.close()
    session.peer.close(cause)
  }

  // -------------------------------------------------------------------------------------------
  // Control and fault injection

  /** Makes every accepted record durable and acks it; a no-op while acks are stalled. */
  flush(): void {
    if (this.acksStalled) return
    for (const disk of this.disks.values()) this.makeDurable(disk, true)
  }

  /** A stuck fsync: nothing becomes durable, nothing is acked. Unstalling (immediate mode) flushes. */
  stallAcks(on: boolean): void {
    this.acksStalled = on
    if (!on && this.ackMode === "immediate") this.flush()
  }

  /** The receiver stops reading: records queue up on the connection until resumed (backpressure). */
  stallIntake(on: boolean): void {
    if (this.paused === on) return
    this.paused = on
    for (const listener of this.intakeListeners) listener(on)
  }

  get intakePaused(): boolean {
    return this.paused
  }

  /** Subscribes to intake stalls; returns the unsubscribe function. */
  onIntake(listener: (paused: boolean) => void): () => void {
    this.intakeListeners.add(listener)
    return () => this.intakeListeners.delete(listener)
  }

  /** The next record to arrive (on any connection) vanishes, so the one after it makes a gap. */
  dropNextRecord(): void {
    this.dropNext = true
  }

  /** The receiver drops the connection of `diskId` (all connections when omitted). */
  dropConnection(diskId?: string): void {
    for (const [id, disk] of this.disks)
      if ((diskId === undefined || id === diskId) && disk.session !== undefined)
        this.closeSession(
          disk.session,
          new ConnectionClosed({ by: "receiver", detail: "connection dropped" })
        )
  }

  /**
   * The receiver restarts: every connection drops; records not yet durable (unacked) are
   * lost when `loseUnacked`, else made durable first.
   */
  restart(options: { readonly loseUnacked: boolean }): void {
    for (const disk of this.disks.values()) {
      if (disk.session !== undefined)
        this.closeSession(
          disk.session,
          new ConnectionClosed({ by: "receiver", detail: "receiver restarted" })
        )
      if (options.loseUnacked) disk.pending = []
      else this.makeDurable(disk, false)
      disk.receiver = Receiver.initial(disk.durableSeq, disk.durableInResync)
    }
  }

  // -------------------------------------------------------------------------------------------
  // Inspection (durable state only)

  geometry(diskId: string): Geometry.Geometry | undefined {
    return this.disks.get(diskId)?.geometry
  }

  durableSeq(diskId: string): number {
    return this.disks.get(diskId)?.durableSeq ?? 0
  }

  log(diskId: string): ReadonlyArray<LogEntry> {
    return [...(this.disks.get(diskId)?.log ?? [])]
  }

  recoveryPoints(diskId: string): ReadonlyArray<number> {
    return (this.disks.get(diskId)?.log ?? []).filter((e) => e.recoveryPoint).map((e) => e.seq)
  }

  isConnected(diskId: string): boolean {
    return this.disks.get(diskId)?.session !== undefined
  }

  /** A copy of one durable replica block (zeros if never written). */
  replicaBlock(diskId: string, block: number): Uint8Array {
    const disk = this.disks.get(diskId)
    if (disk === undefined) return new Uint8Array(0)
    const bytes = disk.blocks.get(block)
    return bytes === undefined ? new Uint8Array(disk.geometry.blockSize) : new Uint8Array(bytes)
  }

  /**
   * The disk image after the durable record `atSeq` (default: the latest), replayed from a
   * zeroed base. Meant for small test disks.
   */
  image(diskId: string, atSeq?: number): Uint8Array {
    const disk = this.disks.get(diskId)
    if (disk === undefined) return new Uint8Array(0)
    const bytes = Geometry.diskBytes(disk.geometry)
    if (bytes > MAX_IMAGE_BYTES) throw new RangeError(`image of ${bytes} bytes is too large to materialise`)
    const blocks = new Map<number, Uint8Array>()
    for (const entry of disk.log) {
      if (atSeq !== undefined && entry.seq > atSeq) break
      disk.apply(entry, blocks)
    }
    const image = new Uint8Array(bytes)
    for (const [block, data] of blocks) image.set(data, block * disk.geometry.blockSize)
    return image
  }
}

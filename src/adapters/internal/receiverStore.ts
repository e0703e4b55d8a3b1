/**
 * An in-memory log receiver: per disk, the durable replica (sparse bytes per block), the
 * durable log, the records accepted but not yet durable, and at most one connection.
 * Sequencing follows the pure rules of `domain/Receiver` (accept / duplicate / gap /
 * rejected, recovery points). Synchronous and callback-based so that both the in-process
 * layer and the TCP test server drive the same receiver; fault injection lives here too.
 *
 * Checksum requests are answered as the real receiver answers them (docs/wire.md,
 * "Checksums"): in stream order, once every record before the request is durable and
 * acked, from the durable replica, with `through` its durable seq. While a request waits
 * for that (acks on flush, or stalled) the session reads nothing more (`blocked`): what
 * arrives meanwhile waits behind it, in order.
 */
import { Either } from "effect"
import * as Geometry from "../../domain/Geometry.js"
import * as Receiver from "../../domain/Receiver.js"
import {
  type Ack,
  blockDigest,
  checkChecksumRequest,
  type ChecksumRefused,
  type ChecksumReply,
  type ChecksumRequest,
  DIGEST_BYTES,
  digestAlgorithmOf,
  digestAvailable,
  type Gap,
  type Hello,
  type Record
} from "../../protocol/Wire.js"
import * as ProtocolSession from "../../protocol/Session.js"
import { ConnectionClosed } from "./receiverErrors.js"

export type Message = Ack | Gap | ChecksumReply | ChecksumRefused

/** What a connection carries to the receiver after the hello: records and checksum requests. */
export type Inbound = Record | ChecksumRequest

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
  /**
   * Durable blocks whose bytes fail their check (fault injection, `damage`): a checksum
   * request naming one is refused, as the real receiver refuses a block whose record fails
   * its CRC. A record that rewrites the whole block replaces the damaged bytes.
   */
  readonly damaged = new Set<number>()
  constructor(readonly geometry: Geometry.Geometry) {}

  /** Applies a record to a replica: bytes at an offset, or a whole block. */
  apply(record: Record, blocks: Map<number, Uint8Array>, durable = false): void {
    const { blockSize } = this.geometry
    if (record._tag === "Block") {
      blocks.set(record.block, new Uint8Array(record.data))
      if (durable) this.damaged.delete(record.block)
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
        if (durable && count === blockSize) this.damaged.delete(block)
        from += count
        at += count
      }
    }
  }

  /** The answer to `request` from the durable replica, which holds every record through `durableSeq`. */
  answer(diskId: string, request: ChecksumRequest): ChecksumReply | ChecksumRefused {
    const hurt = request.blocks.find((b) => this.damaged.has(b))
    if (hurt !== undefined)
      return {
        _tag: "ChecksumRefused",
        id: request.id,
        reason: "damaged",
        detail: `disk ${diskId}: block ${hurt} fails its check in the replica`
      }
    const algorithm = digestAlgorithmOf(request.algorithm)
    if (algorithm === undefined || !digestAvailable(algorithm))
      return {
        _tag: "ChecksumRefused",
        id: request.id,
        reason: "unsupported",
        detail: `digest algorithm code ${request.algorithm} is not available here`
      }
    const zeros = new Uint8Array(this.geometry.blockSize)
    const digests = new Uint8Array(request.blocks.length * DIGEST_BYTES)
    request.blocks.forEach((b, k) => {
      digests.set(blockDigest(this.blocks.get(b) ?? zeros, algorithm), k * DIGEST_BYTES)
    })
    return {
      _tag: "ChecksumReply",
      id: request.id,
      through: this.durableSeq,
      algorithm: request.algorithm,
      digests
    }
  }
}

/** One connection: records and checksum requests in; acks, gaps and checksum answers out. */
export class Session {
  open = true
  /**
   * What arrived behind a checksum request still waiting for the records before it to be
   * durable, the request first: taken in order once they are. Bounded by the transport,
   * which reads nothing more while `blocked` (one chunk at most, on a socket).
   */
  readonly backlog: Array<Inbound> = []
  /** Called once the session reads again (the transport resumes its intake). */
  onUnblocked: (() => void) | undefined = undefined
  constructor(
    private readonly store: ReceiverStore,
    readonly diskId: string,
    readonly disk: Disk,
    readonly peer: Peer,
    /** What the protocol's verdicts do here (built by the store). */
    readonly log: ProtocolSession.Log<never>
  ) {}
  receive(frame: Inbound): void {
    if (this.backlog.length > 0) this.backlog.push(frame)
    else this.store.receive(this, frame)
  }
  /** A checksum request waits for durability: the transport should stop reading until `onUnblocked`. */
  get blocked(): boolean {
    return this.open && this.backlog.length > 0
  }
  /** The filter side closed the connection: free the disk for the next one. */
  close(): void {
    if (!this.open) return
    this.open = false
    this.backlog.length = 0
    if (this.disk.session === this) this.disk.session = undefined
    this.onUnblocked?.()
  }
  /** The records before the waiting request are durable now: take the backlog in order. */
  resume(): void {
    while (this.open && this.backlog.length > 0) {
      const head = this.backlog[0]!
      if (head._tag === "ChecksumRequest" && this.disk.pending.length > 0) return // still waiting
      this.backlog.shift()
      this.store.receive(this, head)
    }
    if (this.open) this.onUnblocked?.()
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
    const session = new Session(this, hello.diskId, disk, peer, this.logOf(disk, peer))
    disk.session = session
    return { _tag: "Welcome", durableSeq: disk.durableSeq, session }
  }

  receive(session: Session, frame: Inbound): void {
    if (!session.open) return
    if (frame._tag === "ChecksumRequest") {
      this.checksums(session, frame)
      return
    }
    if (this.dropNext) {
      this.dropNext = false
      return
    }
    const invalid = ProtocolSession.receive(session.disk, session.log, frame)
    if (invalid !== undefined) this.closeSession(session, invalid)
  }

  /**
   * A checksum request: answered now if every record before it is durable (and so acked),
   * else it waits at the front of the backlog until they are (`makeDurable`).
   */
  private checksums(session: Session, request: ChecksumRequest): void {
    const disk = session.disk
    const invalid = checkChecksumRequest(disk.geometry, request)
    if (invalid !== undefined) {
      this.closeSession(session, invalid)
      return
    }
    if (disk.pending.length > 0) {
      session.backlog.unshift(request)
      return
    }
    session.peer.deliver(disk.answer(session.diskId, request))
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
      disk.apply(entry, disk.blocks, true)
      disk.log.push(entry)
      if (entry._tag === "ResyncBegin") disk.durableInResync = true
      else if (entry._tag === "ResyncEnd") disk.durableInResync = false
    }
    disk.durableSeq = disk.pending[disk.pending.length - 1]!.seq
    disk.pending = []
    if (ack && disk.session !== undefined) {
      disk.session.peer.deliver({ _tag: "Ack", seq: disk.durableSeq })
      // A checksum request waiting for these records is answered now, after their ack.
      disk.session.resume()
    }
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

  /**
   * The durable copy of `block` fails its check from now on (a flipped byte the receiver
   * detects): checksum requests naming it are refused (`damaged`) until a record rewrites
   * the whole block.
   */
  damage(diskId: string, block: number): void {
    const disk = this.disks.get(diskId)
    if (disk === undefined || !Geometry.isBlock(disk.geometry, block))
      throw new RangeError(`no block ${block} of disk ${diskId} to damage`)
    disk.damaged.add(block)
  }

  /**
   * Replaces the durable copy of `block` with `bytes`, silently (damage no check detects):
   * the replica (what checksums and `replicaBlock` read) differs from what the filter sent;
   * the log, and so `image`, is unchanged. For tests of checksum resync and verify.
   */
  overwrite(diskId: string, block: number, bytes: Uint8Array): void {
    const disk = this.disks.get(diskId)
    if (
      disk === undefined ||
      !Geometry.isBlock(disk.geometry, block) ||
      bytes.byteLength !== disk.geometry.blockSize
    )
      throw new RangeError(`no block ${block} of disk ${diskId} to overwrite with ${bytes.byteLength} bytes`)
    disk.blocks.set(block, new Uint8Array(bytes))
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

/**
 * A pure simulated world around a filter: a disk (a version number per block), a
 * wire that keeps seq order, a log receiver that applies records in order, acks
 * cumulatively, reports gaps and can restart with or without losing data. Faults
 * are steps like any other. Every step checks the invariants of design §4 and
 * the legality of every event the filter records.
 *
 * The world is deterministic: the same steps give the same run. Property tests
 * draw the steps with fast-check; `npm start` draws them from a seeded PRNG.
 *
 * With `compareFrom` the filter is asked to compare blocks instead of sending them
 * (checksum-based resync, trace version 2): the receiver answers a comparison from the
 * newest version it holds of the block, records received but not yet durable included,
 * and the program compares that with the disk's block as read after the decision.
 * With `compareRun` too, the filter compares in runs (trace version 3): one request of
 * up to that many blocks, read one block per read step, answered as one.
 *
 * Over 600 lines: the world's steps and its invariant checks read one state; the
 * seeded workloads at the end are the seam to split next (issue 14).
 */
import { Either } from "effect"
import * as Bitmap from "../domain/Bitmap.js"
import type { Config } from "../domain/Config.js"
import * as Decider from "../domain/Decider.js"
import * as Event from "../domain/Event.js"
import * as Input from "../domain/Input.js"
import * as Receiver from "../domain/Receiver.js"
import { Checker, type Violation } from "../domain/Legality.js"
import * as State from "../domain/State.js"

/**
 * An implementation the world can drive: the reference decider or a deliberately broken
 * variant. A decider (`domain/Decider`) whose initial state depends on the disk.
 */
export interface Filter<S>
  extends Pick<Decider.Decider<S, Input.Input, Event.Event, unknown>, "decide" | "evolve"> {
  readonly name: string
  readonly initial: (config: Config) => S
  /** A block read finished (the reference filter has nothing to do here). */
  readonly readCompleted?: (state: S, block: number) => S
  /**
   * The filter's state in the model's terms, for the invariant checks. Without it
   * (a foreign implementation) the checks use the model's own fold of the events
   * it emitted: the least obligations a correct filter must honour.
   */
  readonly view?: (state: S) => State.State
}

/**
 * Wraps an implementation that is fed inputs and reports the events it recorded
 * (state kept inside it) as a `Filter`, so the world can drive it.
 */
export const foreign = <H>(
  name: string,
  start: (config: Config) => H,
  feed: (handle: H, input: Input.Input) => ReadonlyArray<Event.Event>
): Filter<H> => ({
  name,
  initial: start,
  decide: (handle, input) => Either.right(feed(handle, input)),
  evolve: (handle) => handle
})

export const reference: Filter<State.State> = {
  name: "reference",
  initial: State.initial,
  decide: Decider.decide,
  evolve: Decider.evolve,
  view: (s) => s
}

export type Step =
  | { readonly _tag: "Write"; readonly offset: number; readonly length: number }
  /** A write of zeros (WRITE_ZEROES, TRIM): blocks it covers whole hold zeros again, as at the start. */
  | { readonly _tag: "Zero"; readonly offset: number; readonly length: number }
  | { readonly _tag: "Pump"; readonly budget: number }
  /** The wire delivers the next record (if its data is ready). */
  | { readonly _tag: "Send" }
  /** The earliest unfinished block read advances one phase (start: data snapshot; end: done). */
  | { readonly _tag: "Read" }
  /** The receiver makes what it received durable and acks it. */
  | { readonly _tag: "Flush" }
  /** The next receiver message (ack, gap) reaches the filter. */
  | { readonly _tag: "Deliver" }
  | { readonly _tag: "Cut"; readonly reason: "connection-lost" | "ack-timeout" }
  | { readonly _tag: "Reconnect" }
  /** Fault: the next record on the wire vanishes, so the receiver sees a gap. */
  | { readonly _tag: "Drop" }
  /** Fault: the receiver restarts; `lose` drops what was not durable, `rollback` also loses acked data. */
  | { readonly _tag: "Restart"; readonly lose: boolean; readonly rollback: number | undefined }

export type InvariantName =
  | "legality"
  | "no-write-lost"
  | "sync-only-when-clean"
  | "sequence"
  | "coverage"
  | "convergence"
  | "rejected-input"

export interface Failure {
  readonly invariant: InvariantName
  readonly detail: string
  readonly step: number
  readonly violation?: Violation
}

type WireRecord =
  | {
      readonly seq: number
      readonly kind: "write"
      readonly first: number
      /** Per touched block: version before, version after, whether the write covers it whole. */
      readonly blocks: ReadonlyArray<readonly [prev: number, next: number, whole: boolean]>
    }
  | {
      readonly seq: number
      readonly kind: "block"
      readonly block: number
      phase: 0 | 1 | 2
      data: number
    }
  | {
      /**
       * A comparison request: not a record (no seq); `data` holds the disk's blocks as
       * read, kept by the program. `run`: one request of a `RunCompared` (comparisons
       * `id + k` of `blocks[k]`), else of one `BlockCompared`.
       */
      readonly kind: "compare"
      readonly id: number
      readonly blocks: ReadonlyArray<number>
      readonly run: boolean
      phase: 0 | 1 | 2
      readonly data: Array<number>
    }
  | { readonly seq: number; readonly kind: "begin"; readonly base: number }
  | { readonly seq: number; readonly kind: "end" }

/** The records: everything on the wire but comparison requests. */
type SequencedRecord = Exclude<WireRecord, { readonly kind: "compare" }>

type Message =
  | { readonly _tag: "ack"; readonly seq: number }
  | { readonly _tag: "gap"; readonly expected: number }
  /** The receiver's checksums of `blocks` for the request `id` (a version stands for its bytes). */
  | {
      readonly _tag: "checksum"
      readonly id: number
      readonly blocks: ReadonlyArray<number>
      readonly run: boolean
      readonly values: ReadonlyArray<number>
      /** The receiver's durable seq when it answered. */
      readonly through: number
    }

/** Replica content that matches no disk version: a partial write applied on stale data. */
const TORN = -1

export const allInvariants: ReadonlyArray<InvariantName> = [
  "legality",
  "no-write-lost",
  "sync-only-when-clean",
  "sequence",
  "coverage",
  "convergence",
  "rejected-input"
]

export interface WorldOptions {
  /** Keep every event in `events` (for replay and traces); default true. */
  readonly recordEvents?: boolean
  /** The invariants to check; default all. A property about one invariant checks only that one. */
  readonly checks?: ReadonlyArray<InvariantName>
  /** Run the whole-disk checks (coverage, replica = disk) every N steps; default 1 (every step). */
  readonly diskCheckEvery?: number
  /**
   * Pump with `compareFrom` (checksum-based resync): while at least this many blocks are
   * owed the filter compares instead of sending. Default: never compare.
   */
  readonly compareFrom?: number
  /** With `compareFrom`: compare in runs of at most this many blocks (trace version 3). Default: block by block. */
  readonly compareRun?: number
}

export interface Stats {
  steps: number
  writes: number
  bytes: number
  events: number
  records: number
  faults: number
  rejections: number
  recoveryPoints: number
  /** Comparisons decided, and how many matched (no data record needed). */
  compared: number
  matched: number
  modeChanges: Record<string, number>
  /** Mode after each step: a timeline for pictures. */
  readonly timeline: Array<"sync" | "resync">
  /** Dirty blocks (obligations) after each step. */
  readonly dirtyCurve: Array<number>
}

export class World<S> {
  readonly disk: Int32Array
  private version = 0
  fs: S
  readonly checker: Checker
  readonly events: Array<Event.Event> = []
  readonly stats: Stats = {
    steps: 0,
    writes: 0,
    bytes: 0,
    events: 0,
    records: 0,
    faults: 0,
    rejections: 0,
    recoveryPoints: 0,
    compared: 0,
    matched: 0,
    modeChanges: {},
    timeline: [],
    dirtyCurve: []
  }
  // wire and receiver
  connected = true
  private wire: Array<WireRecord> = []
  private inbox: Array<Message> = []
  private readonly durable: Int32Array
  private durableSeq = 0
  private pending: Array<SequencedRecord> = []
  private receiver = Receiver.initial(0)
  /** The program's side of the requests it sent: request id → the disk's blocks as read. */
  private readonly reads = new Map<number, ReadonlyArray<number>>()
  private readonly history: Array<{ readonly seq: number; readonly replica: Int32Array }> = []
  /** The receiver lost acked data and the filter has not yet heard of it (coverage cannot hold then). */
  private rollbackUnknown = false
  private lastRecordSeq = 0
  private lastWatermark = 0
  failure: Failure | undefined

  private readonly checks: ReadonlySet<InvariantName>

  constructor(
    readonly config: Config,
    readonly filter: Filter<S>,
    readonly options: WorldOptions = {}
  ) {
    this.checks = new Set(options.checks ?? allInvariants)
    this.disk = new Int32Array(config.blockCount)
    this.durable = new Int32Array(config.blockCount)
    this.fs = filter.initial(config)
    this.checker = new Checker(State.initial(config))
  }

  get view(): State.State {
    return this.filter.view === undefined ? this.checker.state : this.filter.view(this.fs)
  }

  /** The receiver's durable replica, one version per block. */
  get replica(): Int32Array {
    return this.durable
  }

  /** Filter in sync, nothing in flight, nothing on the wire: the replica must equal the disk. */
  get quiescent(): boolean {
    return (
      State.isQuiescent(this.view) && this.wire.length === 0 && this.pending.length === 0 && this.connected
    )
  }

  private fail(invariant: InvariantName, detail: string, violation?: Violation): void {
    if (this.failure === undefined && this.checks.has(invariant))
      this.failure = {
        invariant,
        detail,
        step: this.stats.steps,
        ...(violation === undefined ? {} : { violation })
      }
  }

  // ---------------------------------------------------------------------------
  // The filter side

  private input(input: Input.Input): void {
    if (this.failure !== undefined) return
    const decided = this.filter.decide(this.fs, input)
    if (Either.isLeft(decided)) {
      // A program treats an input it cannot accept as a protocol error on the stream.
      this.stats.rejections++
      if (input._tag === "GapReceived" && this.connected) {
        this.cutConnection()
        this.input(Input.linkFailed("protocol-error"))
        return
      }
      this.fail("rejected-input", `the filter rejected a well-formed input ${JSON.stringify(input)}`)
      return
    }
    for (const event of decided.right) this.record(event)
  }

  private record(event: Event.Event): void {
    if (this.failure !== undefined) return
    const before = this.view
    // Legality first: for a foreign filter it names the rule of design §5 that broke.
    const violation = this.checker.step(event)
    if (violation !== undefined)
      this.fail("legality", `illegal ${event.type}: ${violation.message}`, violation)
    this.checkEvent(before, event)
    this.fs = this.filter.evolve(this.fs, event)
    this.stats.events++
    if (this.options.recordEvents !== false) this.events.push(event)
    const after = this.view
    if (after.mode !== before.mode) {
      const key = event.type === "ResyncActivated" ? event.reason : after.mode
      this.stats.modeChanges[key] = (this.stats.modeChanges[key] ?? 0) + 1
    }
    this.act(event, before)
    if (after.watermark < this.lastWatermark)
      this.fail("sequence", `the watermark went back from ${this.lastWatermark} to ${after.watermark}`)
    if (after.watermark >= after.nextSeq && after.nextSeq > 1)
      this.fail(
        "sequence",
        `the watermark ${after.watermark} passed the last record sent ${after.nextSeq - 1}`
      )
    this.lastWatermark = after.watermark
  }

  /** Invariants 2 and 3 on each event, against the filter's own view before it. */
  private checkEvent(before: State.State, event: Event.Event): void {
    switch (event.type) {
      case "WriteStreamed":
        if (before.mode !== "sync")
          this.fail("sync-only-when-clean", "a write was streamed live in resync mode")
        break
      case "WriteTracked":
        if (before.mode !== "resync")
          this.fail("sync-only-when-clean", "a write was only marked in sync mode")
        break
      case "SyncActivated":
        if (State.hasObligations(before) || before.flight.blockRecords > 0)
          this.fail(
            "sync-only-when-clean",
            `sync resumed with ${State.obligationCount(before)} dirty block(s) and ${before.flight.blockRecords} block record(s) unacked`
          )
        else if (before.comparing.length > 0)
          this.fail(
            "sync-only-when-clean",
            `sync resumed with ${before.comparing.length} comparison(s) without an outcome`
          )
        break
      case "Acked":
        if (event.seq >= before.nextSeq) this.fail("sequence", `ack ${event.seq} for an unsent record`)
        break
      default:
        break
    }
    const seq = Event.recordSeq(event)
    if (seq !== undefined) {
      if (seq !== this.lastRecordSeq + 1)
        this.fail("sequence", `record seq ${seq} does not follow ${this.lastRecordSeq}`)
      this.lastRecordSeq = seq
    }
  }

  /** What the program does for an event: put records on the wire. */
  private act(event: Event.Event, before: State.State): void {
    switch (event.type) {
      case "WriteStreamed": {
        // The write's data was captured when it completed (see `write`).
        const captured = this.lastWrite!
        this.wire.push({ seq: event.seq, kind: "write", first: captured.first, blocks: captured.blocks })
        this.stats.records++
        break
      }
      case "BlockSent":
        this.wire.push({ seq: event.seq, kind: "block", block: event.block, phase: 0, data: 0 })
        this.stats.records++
        break
      case "ResyncBegun":
        this.wire.push({ seq: event.seq, kind: "begin", base: Decider.markerBase(before) })
        this.stats.records++
        break
      case "SyncActivated":
        this.wire.push({ seq: event.seq, kind: "end" })
        this.stats.records++
        break
      case "BlockCompared":
        this.wire.push({
          kind: "compare",
          id: event.id,
          blocks: [event.block],
          run: false,
          phase: 0,
          data: []
        })
        this.stats.compared++
        break
      case "RunCompared":
        this.wire.push({ kind: "compare", id: event.id, blocks: event.blocks, run: true, phase: 0, data: [] })
        this.stats.compared += event.blocks.length
        break
      case "BlockMatched":
        this.stats.matched++
        break
      case "RunMatched":
        this.stats.matched += event.count - event.except.length
        break
      default:
        break
    }
    this.noted(event)
  }

  /** Every event the filter recorded, after the program acted on it (for variants of the program). */
  protected noted(_event: Event.Event): void {}

  /** The program's read of the disk's block for a comparison, taken when the comparison's read starts. */
  protected comparisonRead(block: number): number {
    return this.disk[block]!
  }

  /**
   * The receiver's answer to a comparison of `block`, once every record it accepted before
   * the request is durable and acked: its newest version of the block. (`beforeFlush`,
   * what the durable replica held before that flush, is for broken variants.)
   */
  protected receiverChecksum(block: number, _beforeFlush: number): number {
    return this.newestVersion(block)
  }

  /** The receiver's newest version of `block`: the durable replica with the accepted records on top. */
  protected newestVersion(block: number): number {
    let version = this.durable[block]!
    for (const record of this.pending) {
      if (record.kind === "write") {
        const i = block - record.first
        if (i < 0 || i >= record.blocks.length) continue
        const [prev, next, whole] = record.blocks[i]!
        version = whole || version === prev ? next : TORN
      } else if (record.kind === "block" && record.block === block) version = record.data
    }
    return version
  }

  private lastWrite: { first: number; blocks: Array<readonly [number, number, boolean]> } | undefined

  /**
   * A guest write completes on the disk, then the filter folds it (post-op). With `zero`,
   * the blocks it covers whole hold zeros (version 0, the initial content) again: the
   * same bytes as before, which only a checksum can tell apart from a stale copy.
   */
  write(offset: number, length: number, zero = false): void {
    const bs = this.config.blockSize
    const first = Math.floor(offset / bs)
    const last = Math.floor((offset + length - 1) / bs)
    const blocks: Array<readonly [number, number, boolean]> = []
    for (let b = first; b <= last; b++) {
      const prev = this.disk[b]!
      const whole = offset <= b * bs && offset + length >= (b + 1) * bs
      const next = zero && whole ? 0 : ++this.version
      this.disk[b] = next
      blocks.push([prev, next, whole])
    }
    this.lastWrite = { first, blocks }
    this.stats.writes++
    this.stats.bytes += length
    this.input(Input.writeCompleted(offset, length))
  }

  // ---------------------------------------------------------------------------
  // The receiver side

  private apply(replica: Int32Array, record: WireRecord): void {
    if (record.kind === "write") {
      for (let i = 0; i < record.blocks.length; i++) {
        const [prev, next, whole] = record.blocks[i]!
        const b = record.first + i
        replica[b] = whole || replica[b] === prev ? next : TORN
      }
    } else if (record.kind === "block") {
      replica[record.block] = record.data
    }
  }

  private receive(record: WireRecord): void {
    if (record.kind === "compare") {
      // Answered in stream order, after every record accepted before it is durable and acked
      // (during a gap: the records accepted before it; the gap report is already in the inbox).
      const beforeFlush = record.blocks.map((b) => this.durable[b]!)
      this.flush()
      if (this.connected)
        this.inbox.push({
          _tag: "checksum",
          id: record.id,
          blocks: record.blocks,
          run: record.run,
          values: record.blocks.map((b, k) => this.receiverChecksum(b, beforeFlush[k]!)),
          through: this.durableSeq
        })
      return
    }
    const kind = record.kind === "begin" ? "resync-begin" : record.kind === "end" ? "resync-end" : record.kind
    const { state, verdict } = Receiver.receive(
      this.receiver,
      record.seq,
      kind,
      record.kind === "begin" ? record.base : record.seq - 1
    )
    this.receiver = state
    if (verdict._tag === "Gap") this.inbox.push({ _tag: "gap", expected: verdict.expected })
    if (verdict._tag !== "Accept") return
    if (verdict.recoveryPoint) this.stats.recoveryPoints++
    this.pending.push(record)
  }

  private flush(): void {
    if (this.pending.length === 0) {
      if (this.connected && this.durableSeq > 0) this.inbox.push({ _tag: "ack", seq: this.durableSeq })
      return
    }
    for (const record of this.pending) this.apply(this.durable, record)
    this.durableSeq = this.pending[this.pending.length - 1]!.seq
    this.pending = []
    this.history.push({ seq: this.durableSeq, replica: this.durable.slice() })
    if (this.history.length > 8) this.history.shift()
    if (this.connected) this.inbox.push({ _tag: "ack", seq: this.durableSeq })
  }

  private cutConnection(): void {
    this.connected = false
    this.wire = []
    this.inbox = []
    this.reads.clear()
  }

  private restart(lose: boolean, rollback: number | undefined): void {
    this.cutConnection()
    if (lose) this.pending = []
    else this.flush()
    if (rollback !== undefined && this.history.length > 1) {
      // Lose acked data: go back to an earlier durable point (or the base image).
      const i = rollback % this.history.length
      const back = i === this.history.length - 1 ? undefined : this.history[i]
      if (back !== undefined) {
        this.durable.set(back.replica)
        this.durableSeq = back.seq
        this.history.length = i + 1
        if (back.seq < this.view.watermark) this.rollbackUnknown = true
      }
    }
    this.receiver = Receiver.initial(this.durableSeq, this.receiver.inResync)
  }

  // ---------------------------------------------------------------------------

  /** Runs one step, then checks the state invariants. */
  step(step: Step): void {
    if (this.failure !== undefined) return
    this.stats.steps++
    switch (step._tag) {
      case "Write":
        this.write(step.offset, step.length)
        break
      case "Zero":
        this.write(step.offset, step.length, true)
        break
      case "Pump":
        this.input(Input.pumpTick(step.budget, this.options.compareFrom, this.options.compareRun))
        break
      case "Send": {
        const head = this.wire[0]
        if (head !== undefined && this.connected && !unread(head)) {
          this.wire.shift()
          this.receive(head)
        }
        break
      }
      case "Read": {
        const next = this.wire.find(unread)
        if (next !== undefined && (next.kind === "block" || next.kind === "compare")) {
          if (next.phase === 0) {
            if (next.kind === "block") {
              next.data = this.disk[next.block]!
              next.phase = 1
            } else {
              // A run's blocks are read one per step: writes may complete between them.
              next.data.push(this.comparisonRead(next.blocks[next.data.length]!))
              if (next.data.length === next.blocks.length) {
                this.reads.set(next.id, next.data)
                next.phase = 1
              }
            }
          } else {
            next.phase = 2
            if (this.filter.readCompleted !== undefined)
              for (const b of next.kind === "block" ? [next.block] : next.blocks)
                this.fs = this.filter.readCompleted(this.fs, b)
          }
        }
        break
      }
      case "Flush":
        this.flush()
        break
      case "Deliver": {
        const message = this.inbox.shift()
        if (message === undefined) break
        if (message._tag === "checksum") {
          const read = this.reads.get(message.id)
          this.reads.delete(message.id)
          if (read !== undefined)
            this.input(
              message.run
                ? Input.runCompleted(
                    message.id,
                    message.blocks,
                    message.blocks.map((_, k) => read[k] === message.values[k]),
                    message.through
                  )
                : Input.comparisonCompleted(
                    message.id,
                    message.blocks[0]!,
                    read[0] === message.values[0],
                    message.through
                  )
            )
        } else
          this.input(
            message._tag === "ack" ? Input.ackReceived(message.seq) : Input.gapReceived(message.expected)
          )
        break
      }
      case "Cut":
        if (this.connected) {
          this.stats.faults++
          this.cutConnection()
          this.input(Input.linkFailed(step.reason))
        }
        break
      case "Reconnect":
        if (!this.connected) {
          this.connected = true
          this.rollbackUnknown = false
          this.input(Input.linkReestablished(this.durableSeq))
          // The receiver repeats its durable seq as an ack on a new connection.
          if (this.durableSeq > 0) this.inbox.push({ _tag: "ack", seq: this.durableSeq })
        }
        break
      case "Drop":
        if (this.connected && this.wire.length > 0 && !unread(this.wire[0]!)) {
          this.stats.faults++
          this.wire.shift()
        }
        break
      case "Restart":
        this.stats.faults++
        this.restart(step.lose, step.rollback)
        if (this.view.link === "up") this.input(Input.linkFailed("connection-lost"))
        break
    }
    this.checkState()
  }

  /** Invariants 1 and 4 over the whole disk. */
  private checkState(): void {
    const view = this.view
    this.stats.timeline.push(view.mode)
    this.stats.dirtyCurve.push(State.obligationCount(view))
    if (this.failure !== undefined) return
    if (this.stats.steps % (this.options.diskCheckEvery ?? 1) !== 0) return
    this.checkReplica()
    if (this.checks.has("coverage") && !this.rollbackUnknown) {
      let covered: Bitmap.Bitmap | undefined
      for (let b = 0; b < this.disk.length; b++) {
        if (this.durable[b] === this.disk[b] || State.isObligation(view, b)) continue
        covered ??= Decider.covered(view)
        if (!Bitmap.has(covered, b)) {
          this.fail(
            "coverage",
            `block ${b} differs on the replica (version ${this.durable[b]} vs disk ${this.disk[b]}) but is neither dirty nor covered by an unacked record or a comparison without its outcome`
          )
          return
        }
      }
    }
  }

  /** Invariant 1 on the data: quiescent in sync means the replica equals the disk. */
  private checkReplica(): void {
    if (!this.checks.has("no-write-lost") || !this.quiescent) return
    const b = this.firstDifference()
    if (b >= 0)
      this.fail(
        "no-write-lost",
        `quiescent in sync mode, but block ${b} of the replica (version ${this.durable[b]}) differs from the disk (version ${this.disk[b]})`
      )
  }

  firstDifference(): number {
    for (let b = 0; b < this.disk.length; b++) if (this.durable[b] !== this.disk[b]) return b
    return -1
  }

  /**
   * Heals the world (link up, no more faults) and lets it run until the filter is
   * quiescent in sync. A filter that does not converge fails "convergence".
   */
  settle(maxRounds = 64): void {
    let idle = 0
    for (let round = 0; round < maxRounds && this.failure === undefined; round++) {
      if (this.quiescent && this.inbox.length === 0) break
      const before = `${this.stats.events}/${this.wire.length}/${this.inbox.length}/${this.pending.length}`
      if (!this.connected) this.step({ _tag: "Reconnect" })
      for (
        let guard = 3 * this.wire.length + 8;
        guard > 0 && this.wire.length > 0 && this.connected;
        guard--
      ) {
        this.step({ _tag: "Read" })
        this.step({ _tag: "Read" })
        this.step({ _tag: "Send" })
      }
      this.step({ _tag: "Flush" })
      while (this.inbox.length > 0 && this.failure === undefined) this.step({ _tag: "Deliver" })
      this.step({ _tag: "Pump", budget: this.config.window })
      const after = `${this.stats.events}/${this.wire.length}/${this.inbox.length}/${this.pending.length}`
      idle = after === before ? idle + 1 : 0
      // Stuck (e.g. a lost marker): the program's ack timer would fire.
      if (idle >= 2) {
        this.step({ _tag: "Cut", reason: "ack-timeout" })
        idle = 0
      }
    }
    if (this.failure === undefined && !this.quiescent)
      this.fail("convergence", `not back in sync after ${maxRounds} healing rounds: mode ${this.view.mode}`)
    this.checkReplica()
  }
}

/** A block record or comparison whose disk read has not finished: it cannot go on the wire yet. */
const unread = (record: WireRecord): boolean =>
  (record.kind === "block" || record.kind === "compare") && record.phase < 2

/** Runs steps then settles; the world, with `failure` set if any invariant broke. */
export const run = <S>(
  config: Config,
  filter: Filter<S>,
  steps: Iterable<Step>,
  options?: WorldOptions
): World<S> => {
  const world = new World(config, filter, options)
  for (const step of steps) {
    world.step(step)
    if (world.failure !== undefined) return world
  }
  world.settle()
  return world
}

// ---------------------------------------------------------------------------
// Seeded workloads for demos and benchmarks (the properties use fast-check).

/** mulberry32: a small, fast, seeded PRNG. */
export const prng = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export type FaultLevel = "none" | "some" | "chaos"

/**
 * A mixed workload (random, sequential, hot spot) with faults at the given level.
 * Write pressure rises and falls in waves, so the filter goes through calm periods
 * (live sync) and bursts that overrun the link (congestion pull-ahead, drains).
 * Each of the `count` ticks is a write, a fault, or one round of the program's
 * service loop (pump, reads, sends, receiver flush, acks).
 */
export function* workload(config: Config, seed: number, count: number, faults: FaultLevel): Generator<Step> {
  for (const tick of workloadTicks(config, seed, count, faults)) yield* tick
}

/** The same workload, one array of steps per tick (for progress reporting). */
export function* workloadTicks(
  config: Config,
  seed: number,
  count: number,
  faults: FaultLevel,
  /** Also zero whole blocks now and then (a block's content comes back: what comparisons must not be fooled by). */
  zeroes = false
): Generator<ReadonlyArray<Step>> {
  const random = prng(seed)
  const bs = config.blockSize
  const diskBytes = bs * config.blockCount
  const int = (n: number) => Math.floor(random() * n)
  const faultRate = faults === "none" ? 0 : faults === "some" ? 0.002 : 0.02
  let cursor = 0
  const hot = int(Math.max(1, config.blockCount - 8))
  const period = Math.max(2000, count / 6)
  for (let i = 0; i < count; i++) {
    if (random() < faultRate) {
      const f = random()
      if (f < 0.35) yield [{ _tag: "Cut", reason: random() < 0.5 ? "connection-lost" : "ack-timeout" }]
      else if (f < 0.55) yield [{ _tag: "Drop" }]
      else if (f < 0.8)
        yield [{ _tag: "Restart", lose: random() < 0.5, rollback: random() < 0.1 ? int(8) : undefined }]
      else yield [{ _tag: "Reconnect" }]
      continue
    }
    const pressure = 0.25 + 0.6 * ((Math.sin((2 * Math.PI * i) / period) + 1) / 2) ** 3
    if (random() < pressure) {
      const kind = random()
      const length = Math.min(diskBytes, (1 + int(4)) * (random() < 0.5 ? 4096 : 512))
      // Sector-aligned (512 B), so the same workload can drive a real disk.
      let offset: number
      if (kind < 0.4) offset = int(diskBytes - length + 1)
      else if (kind < 0.7) {
        offset = Math.min(cursor, diskBytes - length)
        cursor = offset + length >= diskBytes ? 0 : offset + length
      } else offset = Math.min(diskBytes - length, hot * bs + int(8 * bs))
      offset -= offset % 512
      if (zeroes && random() < 0.15) {
        // Whole blocks around the write's start, as WRITE_ZEROES or TRIM would leave them.
        const first = Math.floor(offset / bs)
        const blocks = Math.min(1 + int(4), config.blockCount - first)
        yield [{ _tag: "Zero", offset: first * bs, length: blocks * bs }]
        continue
      }
      yield [{ _tag: "Write", offset, length }]
      continue
    }
    const service: Array<Step> = []
    if (random() < 0.02) service.push({ _tag: "Reconnect" })
    service.push({ _tag: "Pump", budget: 1 + int(config.window) })
    const n = 1 + int(2 * config.window)
    for (let k = 0; k < n; k++) service.push({ _tag: "Read" })
    for (let k = 0; k < n; k++) service.push({ _tag: "Send" })
    if (random() < 0.7) service.push({ _tag: "Flush" })
    for (let k = 0; k < 3; k++) service.push({ _tag: "Deliver" })
    yield service
  }
}

/**
 * The journal stage: durable first, then act, in decision order. It makes the events of
 * every batch waiting durable with one append (one fsync), and only then acts on them:
 * records go to the sender in seq order, block reads start, compared blocks are read and
 * hashed, flush barriers complete, pending-write slots and activity-log extents are let
 * go. A snapshot is saved every `snapshotEvery` events so start-up stays fast.
 *
 * Where a checksum request goes: comparisons take no seq, so the request is placed in
 * the outbox where its comparisons were decided, among the records. The outbox is one
 * queue in decision order and the sender takes it in order, so the request leaves after
 * every record decided before its comparisons and before every record decided after.
 * Comparisons decided in a row (no record between them, one session, blocks strictly
 * increasing, at most 16 MiB of blocks or `Wire.MAX_CHECKSUM_BLOCKS`) share one request.
 */
import { Deferred, Effect, Fiber, FiberId } from "effect"
import type { EventJournal } from "../../adapters/EventJournal.js"
import type { DiskError, VirtualDisk } from "../../adapters/VirtualDisk.js"
import * as Wire from "../../protocol/Wire.js"
import type { Config } from "../../domain/Config.js"
import type * as Event from "../../domain/Event.js"
import * as Geometry from "../../domain/Geometry.js"
import * as State from "../../domain/State.js"
import { type Metrics, timed } from "./metrics.js"
import { type Decided, type Outgoing, type Shared, stop } from "./shared.js"

/** Consecutive drained blocks read with one disk request, at most. */
export const READ_RUN = 16

export interface JournalSettings {
  readonly config: Config
  readonly snapshotEvery: number
  readonly onEvents: ((events: ReadonlyArray<Event.Event>) => Effect.Effect<void>) | undefined
  /** This disk's series (`forDisk`). */
  readonly metrics: Metrics
  /** The mutant (internal/mutants.ts). */
  readonly readComparedEarly?: boolean | undefined
}

export const journalStage = (
  shared: Shared,
  journal: EventJournal.Service,
  disk: VirtualDisk.Service,
  settings: JournalSettings
): Effect.Effect<never> =>
  Effect.gen(function* () {
    for (;;) {
      const taken = yield* shared.decisions.takeAll
      const events = taken.length === 1 ? taken[0]!.events : taken.flatMap((d) => d.events)
      const early = settings.readComparedEarly === true
      if (early)
        for (const d of taken)
          yield* act(shared, disk, settings.config, d.outgoing.filter(isComparison), { inline: true })
      if (events.length > 0) {
        shared.position = yield* journal.append(events).pipe(
          timed(settings.metrics.journalCommit),
          Effect.tapError((e) => stop(shared, "the journal failed", e)),
          Effect.orDie
        )
        shared.sinceSnapshot += events.length
        shared.journaled = taken[taken.length - 1]!.after
        if (settings.onEvents !== undefined) yield* settings.onEvents(events)
      }
      let writes = 0
      let writtenBytes = 0
      for (const decision of taken) {
        yield* act(
          shared,
          disk,
          settings.config,
          early ? decision.outgoing.filter((o) => !isComparison(o)) : decision.outgoing
        )
        writes += decision.writes
        writtenBytes += decision.writtenBytes
        for (const done of decision.barriers) yield* Deferred.succeed(done, undefined)
        // Journaled: the activity log may let these extents go.
        const extents = decision.extents
        const tracker = shared.activity?.tracker
        if (extents !== undefined && tracker !== undefined)
          for (let k = 0; k < extents.length; k += 2) tracker.leave(extents[k]!, extents[k + 1]!)
      }
      // An overfull log (every extent was busy) lets idle extents go without waiting for
      // a write to ask for a new one.
      if (shared.activity?.tracker.hasWork() === true) shared.activity.signal.offer(undefined)
      shared.pendingWrites.release(writes, writtenBytes)
      if (shared.sinceSnapshot >= settings.snapshotEvery) {
        yield* journal
          .saveSnapshot(State.toSnapshot(taken[taken.length - 1]!.after), shared.position)
          .pipe(
            Effect.catchAll((e) => Effect.logWarning("snapshot failed; the journal still has everything", e))
          )
        shared.sinceSnapshot = 0
      }
    }
  })

type BlockRead = Extract<Decided, { readonly seq: number; readonly block: number }>
type Comparison = Extract<Decided, { readonly compared: number }>
type Run = Extract<Decided, { readonly run: number }>

const isBlockRead = (out: Decided): out is BlockRead => "epoch" in out
const isRun = (out: Decided): out is Run => "run" in out
const isComparison = (out: Decided): out is Comparison | Run => "compared" in out || isRun(out)

/** A run's comparisons one by one, as those decided per block (the reads take them so). */
const comparisonsOf = (run: Run): ReadonlyArray<Comparison> =>
  run.blocks.map((block, k) => ({ session: run.session, compared: run.run + k, block }))

/**
 * Compared blocks read with one disk request, at most this many bytes: a request's blocks
 * (up to `REQUEST_BYTES`) are several reads, the next read while the last is hashed. Each
 * read goes into one of two buffers the request takes from `readBuffers` and gives back:
 * a fresh buffer per read is faulted in and zeroed by the kernel, and counts as external
 * memory, which has V8 run a full mark-compact every few MiB read (docs/performance.md,
 * "The checksum group" and "Session 11").
 */
export const COMPARE_READ_BYTES = 1 << 20

/** Read buffers no request uses, kept for the next (the process's, at most `READ_BUFFERS_KEPT`). */
const readBuffers: Array<Uint8Array> = []
const READ_BUFFERS_KEPT = 8
/** Read buffers made so far (tests: requests reuse them rather than making one per read). */
export const compareReadBuffers = {
  made: 0
}
const takeReadBuffer = (bytes: number): Uint8Array => {
  const spare = readBuffers.pop()
  if (spare !== undefined && spare.byteLength === bytes) return spare
  compareReadBuffers.made++
  return new Uint8Array(bytes)
}

/**
 * Reads the blocks of comparisons decided in a row (consecutive blocks with one request,
 * up to `COMPARE_READ_BYTES`) and hashes each: the disk's digests, in request order. Runs
 * only once their events are journaled, so every read follows its decision: a write that
 * completes after a read marked the block again after the decision. The request itself
 * is already on its way: the receiver hashes its versions while this hashes the disk's.
 * The next run is read (in libuv's pool) while this one is hashed, into the other of the
 * request's two buffers. They go back for reuse only when every read is done: a read
 * interrupted or failed may still be writing into its buffer, which is then left alone.
 */
const readAndHash = (
  disk: VirtualDisk.Service,
  config: Config,
  batch: ReadonlyArray<Comparison>,
  algorithm: Wire.DigestAlgorithm
): Effect.Effect<Uint8Array, DiskError> =>
  Effect.gen(function* () {
    const { blockSize } = config
    const most = Math.max(1, Math.floor(COMPARE_READ_BYTES / blockSize))
    // Runs of consecutive blocks: [index in batch, count].
    const runs: Array<[number, number]> = []
    for (let k = 0; k < batch.length; ) {
      let run = 1
      while (run < most && k + run < batch.length && batch[k + run]!.block === batch[k]!.block + run) run++
      runs.push([k, run])
      k += run
    }
    const buffers =
      runs.length > 1
        ? [takeReadBuffer(most * blockSize), takeReadBuffer(most * blockSize)]
        : [takeReadBuffer(most * blockSize)]
    const readRun = (r: number) => {
      const [k, run] = runs[r]!
      const into = buffers[r % buffers.length]!.subarray(0, run * blockSize)
      return Effect.as(disk.readInto(Geometry.blockOffset(config, batch[k]!.block), into), into)
    }
    const digests = Buffer.alloc(batch.length * Wire.DIGEST_BYTES)
    let ahead = yield* Effect.fork(readRun(0))
    for (let r = 0; r < runs.length; r++) {
      const bytes = yield* Fiber.join(ahead)
      if (r + 1 < runs.length) ahead = yield* Effect.fork(readRun(r + 1))
      const [k, run] = runs[r]!
      Wire.blockDigestsInto(bytes, blockSize, run, digests, k, algorithm)
    }
    for (const b of buffers) if (readBuffers.length < READ_BUFFERS_KEPT) readBuffers.push(b)
    return digests
  })

/**
 * A request asks for at most this many bytes' worth of blocks: a window's comparisons are
 * then several requests in flight, so the receiver hashes one while the next is read and
 * hashed here (one request of a window's blocks would leave each side waiting in turn).
 */
const REQUEST_BYTES = 16 << 20

/** The most blocks one request asks for: the decider's run length (`PumpTick.compareRun`). */
export const requestBlocks = (blockSize: number): number =>
  Math.max(1, Math.min(Wire.MAX_CHECKSUM_BLOCKS, Math.floor(REQUEST_BYTES / blockSize)))

/** How many of the comparisons from `from` on go in one request. */
const requestLength = (outgoing: ReadonlyArray<Decided>, from: number, blockSize: number): number => {
  const first = outgoing[from] as Comparison
  const most = requestBlocks(blockSize)
  let n = 1
  while (n < most && from + n < outgoing.length) {
    const next = outgoing[from + n]!
    if (!isComparison(next) || isRun(next) || next.session !== first.session) break
    if (next.block <= (outgoing[from + n - 1] as Comparison).block) break
    n++
  }
  return n
}

/**
 * Hands a journaled batch's records and checksum requests to the sender, in decision
 * order. Each keeps the session it was decided in; the sender drops stale ones. Blocks
 * drained in a row are read with one request (up to `READ_RUN` blocks), so a full sync
 * costs one thread-pool hop per run rather than per block.
 */
export const act = (
  shared: Shared,
  disk: VirtualDisk.Service,
  config: Config,
  outgoing: ReadonlyArray<Decided>,
  /** The mutant's: compared blocks are read and hashed before `act` returns. */
  options: { readonly inline?: boolean } = {}
): Effect.Effect<void> =>
  Effect.suspend(() => {
    const items: Array<Outgoing> = []
    const reads: Array<Effect.Effect<unknown>> = []
    for (let i = 0; i < outgoing.length; ) {
      const out = outgoing[i]!
      if ("record" in out) {
        // Decided in the sender's shape: passed on as it is.
        items.push(out)
        i++
        continue
      }
      if (isComparison(out)) {
        // A run is one request as decided; comparisons decided per block are grouped here.
        const n = isRun(out) ? 1 : requestLength(outgoing, i, config.blockSize)
        const batch = isRun(out)
          ? comparisonsOf(out)
          : (outgoing.slice(i, i + n) as ReadonlyArray<Comparison>)
        // The algorithm asked now: the disk's digests are made by the one the request names.
        const algorithm = shared.digest
        // Hashed after the request before it (`hashed`), so digests are ready in the order
        // answers come; a failed read stops the replicator (the loop drops the answer).
        const hashing = Deferred.unsafeMake<Uint8Array, DiskError>(FiberId.none)
        const hash = Effect.intoDeferred(
          Effect.zipRight(
            shared.hashed,
            Effect.tapError(readAndHash(disk, config, batch, algorithm), (e) =>
              stop(shared, "a block read failed", e)
            )
          ),
          hashing
        )
        shared.hashed = Effect.ignore(Deferred.await(hashing))
        reads.push(options.inline === true ? hash : Effect.fork(hash))
        items.push({
          session: out.session,
          comparisons: {
            // The first comparison's id names the request: ids are unique, and each is in one request.
            request: {
              _tag: "ChecksumRequest",
              id: batch[0]!.compared,
              algorithm: Wire.DigestCode[algorithm],
              blocks: batch.map((c) => c.block)
            },
            ids: batch.map((c) => c.compared),
            run: isRun(out),
            digests: Deferred.await(hashing)
          }
        })
        i += n
        continue
      }
      let run = 1
      while (run < READ_RUN && i + run < outgoing.length) {
        const next = outgoing[i + run]!
        if (!isBlockRead(next) || next.block !== out.block + run || next.session !== out.session) break
        run++
      }
      // Started below, before the records go out, so the sender never waits on an unstarted read.
      const reading = Deferred.unsafeMake<Uint8Array, DiskError>(FiberId.none)
      reads.push(
        Effect.fork(
          Effect.intoDeferred(
            disk.read(Geometry.blockOffset(config, out.block), run * config.blockSize),
            reading
          )
        )
      )
      for (let k = 0; k < run; k++) {
        const { seq, block, epoch, session } = outgoing[i + k] as BlockRead
        items.push({
          session,
          seq,
          record: undefined,
          release: undefined,
          read: Effect.map(
            Deferred.await(reading),
            (bytes): Wire.Record => ({
              _tag: "Block",
              seq,
              epoch,
              block,
              data: bytes.subarray(k * config.blockSize, (k + 1) * config.blockSize)
            })
          )
        })
      }
      i += run
    }
    const offered = Effect.sync(() => shared.outbox.offerAll(items))
    return reads.length === 0 ? offered : Effect.zipRight(Effect.all(reads, { discard: true }), offered)
  })

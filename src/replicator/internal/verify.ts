/**
 * Online verify (docs/replicator.md, "Online verify"; DRBD's `verify-alg`): while the
 * filter replicates, compare the receiver's version of every block with the disk's, at
 * points where they must match, and report the blocks that differ.
 *
 * Where they must match. A batch of blocks is opened in sync mode with the link up: their
 * `touched` marks are cleared and `decidedBefore`, the last record decided so far, is
 * noted, in one step of the decision loop's thread. The blocks are then read and hashed,
 * and their checksums asked for on the same connection. The answer is judged only if the
 * link, the epoch and sync mode held throughout and the answer reaches `decidedBefore`
 * (`through`): then every write decided before the batch opened is in the receiver's
 * version, and a write decided since marked its blocks `touched` (the decision loop marks
 * a write's blocks when it decides it). A touched block is set aside and compared again;
 * so is every block of an answer that cannot be judged. A block whose checksums differ
 * then differs for real: the disk's content is not what the receiver durably holds for it.
 *
 * A refusal (the receiver found its copy damaged, or cannot check it) is narrowed down by
 * asking for halves, so the blocks reported are exactly the refused ones. A receiver that
 * cannot answer the digest algorithm asked (`unsupported`, or a reply by another: one from
 * before the code) judges nothing: the filter asks SHA-256 from then on, the batch again.
 */
import { Clock, Data, Deferred, Duration, Effect, Either, Fiber } from "effect"
import type { VirtualDisk } from "../../adapters/VirtualDisk.js"
import type { Config } from "../../domain/Config.js"
import * as Input from "../../domain/Input.js"
import * as Wire from "../../protocol/Wire.js"
import { blockRuns } from "../../internal/blockRuns.js"
import type { ReplicatorStopped } from "./errors.js"
import { type Shared, useSha256, type Verifying } from "./shared.js"

/** An opened batch: where and when its blocks were marked clean. */
export interface Opened {
  readonly link: number
  readonly epoch: number
  /** The last record decided when the batch opened. */
  readonly decidedBefore: number
}

/** What verify needs of the running filter (`verifyPort` in the replicator builds it from `Shared`). */
export interface VerifyPort {
  readonly blockSize: number
  readonly blockCount: number
  /** In sync with the link up: clears `touched` for `blocks` and says where; otherwise `undefined`. */
  readonly open: (blocks: ReadonlyArray<number>) => Effect.Effect<Opened | undefined>
  /** The blocks from `first` that fill `into`, as the disk holds them now (`into` is reused from read to read). */
  readonly read: (first: number, into: Uint8Array) => Effect.Effect<void, VerifyIoError>
  /** The digest algorithm to ask for now. */
  readonly digest: () => Wire.DigestAlgorithm
  /** The receiver cannot answer the algorithm asked (`why`): SHA-256 from now on. */
  readonly unsupported: (why: string) => Effect.Effect<void>
  /** Asks the receiver for `blocks` by `algorithm` on `opened`'s connection; `undefined` when that connection is gone first. */
  readonly ask: (
    opened: Opened,
    blocks: ReadonlyArray<number>,
    algorithm: Wire.DigestAlgorithm
  ) => Effect.Effect<Wire.ChecksumReply | Wire.ChecksumRefused | undefined>
  /** Whether the link, the epoch and sync mode are still those of `opened`. */
  readonly still: (opened: Opened) => Effect.Effect<boolean>
  /** Whether a write to `block` was decided since its batch opened. */
  readonly touched: (block: number) => boolean
  /** Marks `block` so the next pass sends it (`Input.differenceFound`). */
  readonly differ: (block: number) => Effect.Effect<void>
  /**
   * Waits before trying again: `attempt` 0 when the batch could not open (out of sync,
   * link down), then 1, 2, … after attempts that had blocks set aside (`backoff`).
   */
  readonly pause: (attempt: number) => Effect.Effect<void>
}

/** The real filter's pause: 50 ms while out of sync, then growing to 200 ms (a block written now is likely written again soon). */
export const backoff = (attempt: number): Effect.Effect<void> =>
  Effect.sleep(Duration.millis(attempt === 0 ? 50 : Math.min(200, 2 ** attempt)))

/** The disk could not be read. */
export class VerifyIoError extends Data.TaggedError("VerifyIoError")<{ readonly cause: unknown }> {
  override get message() {
    return `verify could not read the disk: ${String(this.cause)}`
  }
}

export interface VerifyOptions {
  /** Disk bytes read per second at most; `undefined`: as fast as it goes. */
  readonly bytesPerSecond?: number | undefined
  /** Mark the differing blocks so that the next pass sends them. */
  readonly resync?: boolean | undefined
  /** Told about once a second: blocks judged so far (verified or not), and differing. */
  readonly onProgress?: ((p: VerifyProgress) => Effect.Effect<void>) | undefined
}

export interface VerifyProgress {
  readonly blocks: number
  readonly verified: number
  readonly differing: number
  readonly bytesPerSecond: number
}

export interface VerifyResult {
  readonly blocks: number
  readonly verified: number
  /** The differing blocks, ascending. */
  readonly differing: ReadonlyArray<number>
  readonly rechecked: number
  readonly unverified: number
  readonly resync: boolean
  readonly seconds: number
  readonly bytesPerSecond: number
  /** The digest algorithm asked at the end (SHA-256 if the receiver could not answer the option's). */
  readonly algorithm: Wire.DigestAlgorithm
}

/** Blocks asked for at once: the wire's bound, and at most 16 MiB read per batch. */
export const batchBlocks = (blockSize: number): number =>
  Math.max(1, Math.min(Wire.MAX_CHECKSUM_BLOCKS, Math.floor((16 << 20) / blockSize)))
/** Batches asked for at once. */
export const IN_FLIGHT = 4
/** Attempts at a block before it is left unverified (it is written during every one). */
export const MAX_ATTEMPTS = 32

/**
 * Bytes read at once, at most: a batch is several reads, each into a buffer reused from
 * read to read (one per batch being read). Fresh buffers cost more than the hashing: the
 * kernel faults and zeroes their pages, and each one counts as external memory, which had
 * the collector run a full mark-compact every ~16 MiB read (docs/performance.md, "The
 * checksum group").
 */
const READ_BYTES = 1 << 20

export const verify = (
  port: VerifyPort,
  options: VerifyOptions = {}
): Effect.Effect<VerifyResult, VerifyIoError> =>
  Effect.gen(function* () {
    const { blockSize, blockCount } = port
    const rate = options.bytesPerSecond
    const resync = options.resync === true
    const started = yield* Clock.currentTimeMillis
    const differing: Array<number> = []
    let verified = 0
    let judged = 0
    let rechecked = 0
    let unverified = 0
    let bytesRead = 0
    let tokens = 0
    let refilledAt = started
    let reportedAt = started
    // Read buffers not in use: at most one per batch being read (`IN_FLIGHT`).
    const runBlocks = Math.max(1, Math.floor(READ_BYTES / blockSize))
    const spare: Array<Uint8Array> = []

    const pace = (bytes: number) =>
      Effect.gen(function* () {
        if (rate === undefined) return
        for (;;) {
          const now = yield* Clock.currentTimeMillis
          tokens = Math.min(Math.max(rate, bytes), tokens + ((now - refilledAt) / 1000) * rate)
          refilledAt = now
          if (tokens >= bytes) break
          yield* Effect.sleep(Duration.millis(Math.max(1, ((bytes - tokens) / rate) * 1000)))
        }
        tokens -= bytes
      })

    const progress = (force: boolean) =>
      Effect.gen(function* () {
        if (options.onProgress === undefined) return
        const now = yield* Clock.currentTimeMillis
        if (!force && now - reportedAt < 1000) return
        reportedAt = now
        yield* options.onProgress({
          blocks: blockCount,
          verified: judged,
          differing: differing.length,
          bytesPerSecond: now > started ? (bytesRead / (now - started)) * 1000 : 0
        })
      })

    const found = (block: number) =>
      Effect.gen(function* () {
        differing.push(block)
        if (resync) yield* port.differ(block)
      })

    /** One attempt at `blocks` (ascending): those to try again, or `undefined` when the batch cannot start yet. */
    const attempt = (blocks: ReadonlyArray<number>) =>
      Effect.gen(function* () {
        const opened = yield* port.open(blocks)
        if (opened === undefined) return undefined
        // Asked before the disk is read, so the receiver hashes its copy while this side hashes
        // the disk's. Sound in either order: a write decided after `open` is `touched`, and
        // every one decided before it is in the answer (`through`) and on the disk read below.
        const algorithm = port.digest()
        const asking = yield* Effect.fork(port.ask(opened, blocks, algorithm))
        const disk = new Uint8Array(blocks.length * Wire.DIGEST_BYTES)
        const buffer = spare.pop() ?? new Uint8Array(runBlocks * blockSize)
        let i = 0
        for (const [first, count] of blockRuns(blocks, runBlocks)) {
          yield* pace(count * blockSize)
          yield* port.read(first, buffer.subarray(0, count * blockSize))
          bytesRead += count * blockSize
          Wire.blockDigestsInto(buffer, blockSize, count, disk, i, algorithm)
          i += count
        }
        // Given back once its runs are hashed (a refusal's halves, below, read with their own).
        spare.push(buffer)
        const answer = yield* Fiber.join(asking)
        const unanswerable =
          answer === undefined
            ? undefined
            : answer._tag === "ChecksumRefused"
              ? answer.reason === "unsupported"
                ? `refused ${algorithm} (${answer.detail})`
                : undefined
              : answer.algorithm !== Wire.DigestCode[algorithm]
                ? `answered ${algorithm} with digest code ${answer.algorithm} (a receiver from before the code?)`
                : undefined
        if (unanswerable !== undefined) {
          yield* port.unsupported(unanswerable)
          rechecked += blocks.length
          return blocks
        }
        const held = answer !== undefined && (yield* port.still(opened))
        // A reply of another size answers another question: it judges nothing.
        const short =
          answer?._tag === "ChecksumReply" &&
          (answer.through < opened.decidedBefore ||
            answer.digests.byteLength !== blocks.length * Wire.DIGEST_BYTES)
        if (!held || short) {
          rechecked += blocks.length
          return blocks
        }
        if (answer._tag === "ChecksumRefused") {
          if (blocks.length === 1) {
            judged++
            verified++
            yield* found(blocks[0]!)
            return []
          }
          // Narrow it down: each half on its own.
          const half = Math.ceil(blocks.length / 2)
          const again: Array<number> = []
          for (const part of [blocks.slice(0, half), blocks.slice(half)]) {
            const left = yield* settle(part)
            again.push(...left)
          }
          return again
        }
        const again: Array<number> = []
        for (let k = 0; k < blocks.length; k++) {
          const block = blocks[k]!
          if (port.touched(block)) {
            again.push(block)
            rechecked++
            continue
          }
          judged++
          verified++
          const read = disk.subarray(k * Wire.DIGEST_BYTES, (k + 1) * Wire.DIGEST_BYTES)
          if (Buffer.compare(read, Wire.digestAt(answer, k)) !== 0) yield* found(block)
        }
        return again
      })

    /** Attempts until every block of `blocks` is judged or has had its attempts: those left. */
    const settle = (blocks: ReadonlyArray<number>): Effect.Effect<ReadonlyArray<number>, VerifyIoError> =>
      Effect.gen(function* () {
        let left = blocks
        for (let attempts = 0; left.length > 0 && attempts < MAX_ATTEMPTS; ) {
          const again = yield* attempt(left)
          yield* progress(false)
          if (again === undefined) {
            yield* port.pause(0)
            continue
          }
          if (again.length > 0) {
            attempts++
            yield* port.pause(attempts)
          }
          left = again
        }
        return left
      })

    // Batches in flight at once: one is read and hashed here while the receiver answers another.
    const step = batchBlocks(blockSize)
    const batches = Array.from({ length: Math.ceil(blockCount / step) }, (_, i) => i * step)
    yield* Effect.forEach(
      batches,
      (first) =>
        Effect.gen(function* () {
          const blocks = Array.from({ length: Math.min(step, blockCount - first) }, (_, k) => first + k)
          const left = yield* settle(blocks)
          unverified += left.length
          judged += left.length
        }),
      { concurrency: IN_FLIGHT, discard: true }
    )
    yield* progress(true)
    const seconds = ((yield* Clock.currentTimeMillis) - started) / 1000
    differing.sort((a, b) => a - b)
    return {
      blocks: blockCount,
      verified,
      differing,
      rechecked,
      unverified,
      resync,
      seconds,
      bytesPerSecond: seconds > 0 ? bytesRead / seconds : 0,
      algorithm: port.digest()
    }
  })

// ---------------------------------------------------------------------------
// The running filter's side: the port over `Shared`.

/** Verify's request ids, apart from the comparisons' (which count up from 0). */
const VERIFY_IDS = 2 ** 52
/** An answer that does not come in this long is given up (the batch is asked again). */
const ANSWER_TIMEOUT = Duration.seconds(30)

/** A verify is already running on this replicator. */
export class VerifyInProgress extends Data.TaggedError("VerifyInProgress")<{}> {
  override get message() {
    return "a verify is already running on this disk"
  }
}

const touchedAt = (v: Verifying, block: number): boolean =>
  (v.touched[block >>> 5]! & (1 << (block & 31))) !== 0

/** The port of the filter `shared` replicates with, reading `disk`. Only while `shared.verifying` is set. */
const portOf = (shared: Shared, disk: VirtualDisk.Service, config: Config): VerifyPort => {
  const v = shared.verifying!
  let requests = 0
  return {
    blockSize: config.blockSize,
    blockCount: config.blockCount,
    // One synchronous step: no decision can fall between the cleared marks and `decidedBefore`.
    open: (blocks) =>
      Effect.sync(() => {
        const s = shared.state
        if (s.mode !== "sync" || s.link !== "up" || shared.connection === undefined) return undefined
        for (const b of blocks) v.touched[b >>> 5]! &= ~(1 << (b & 31))
        return { link: shared.link, epoch: s.epoch, decidedBefore: shared.lastDecided }
      }),
    read: (first, into) =>
      Effect.mapError(disk.readInto(first * config.blockSize, into), (cause) => new VerifyIoError({ cause })),
    digest: () => shared.digest,
    unsupported: (why) => useSha256(shared, why),
    ask: (opened, blocks, algorithm) =>
      Effect.gen(function* () {
        const conn = shared.connection
        if (conn === undefined || shared.link !== opened.link) return undefined
        const id = VERIFY_IDS + requests++
        const answer = yield* Deferred.make<Wire.ChecksumReply | Wire.ChecksumRefused | undefined>()
        v.answers.set(id, answer)
        const sent = yield* Effect.either(
          conn.requestChecksums({
            _tag: "ChecksumRequest",
            id,
            algorithm: Wire.DigestCode[algorithm],
            blocks
          })
        )
        if (Either.isLeft(sent)) {
          v.answers.delete(id)
          return undefined
        }
        // Forgotten however the wait ends: answered, timed out, or interrupted (a failed disk read).
        return yield* Effect.timeout(Deferred.await(answer), ANSWER_TIMEOUT).pipe(
          Effect.catchTag("TimeoutException", () => Effect.succeed(undefined)),
          Effect.ensuring(Effect.sync(() => v.answers.delete(id)))
        )
      }),
    still: (opened) =>
      Effect.sync(
        () =>
          shared.link === opened.link &&
          shared.state.link === "up" &&
          shared.state.mode === "sync" &&
          shared.state.epoch === opened.epoch
      ),
    touched: (block) => touchedAt(v, block),
    differ: (block) =>
      Effect.sync(() => {
        shared.inbox.offer({ _tag: "Input", input: Input.differenceFound(block) })
      }),
    pause: backoff
  }
}

/** Runs a verify on the replicator `shared` (one at a time), until it ends or the replicator stops. */
export const runVerify = (
  shared: Shared,
  disk: VirtualDisk.Service,
  config: Config,
  options: VerifyOptions
): Effect.Effect<VerifyResult, VerifyInProgress | VerifyIoError | ReplicatorStopped> =>
  Effect.suspend((): Effect.Effect<VerifyResult, VerifyInProgress | VerifyIoError | ReplicatorStopped> => {
    if (shared.verifying !== undefined) return Effect.fail(new VerifyInProgress())
    shared.verifying = { touched: new Uint32Array(Math.ceil(config.blockCount / 32)), answers: new Map() }
    const stopped = Effect.flatMap(Deferred.await(shared.stopped), () => Effect.never)
    return Effect.raceFirst(verify(portOf(shared, disk, config), options), stopped).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          shared.verifying = undefined
        })
      )
    )
  })

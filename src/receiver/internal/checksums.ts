/**
 * The receiver's answer to a checksum request (docs/receiver.md, "Checksums"): for each
 * block asked for, the `Wire.blockDigest` (by the algorithm the request names, echoed in the
 * reply) of its newest version in the log — read through
 * the live block index (`liveIndex.ts`), every byte checked before it is hashed: a record's
 * payload against the record's CRC32C and the seq the index names, base bytes against their
 * unit's CRC32C. Damage is a `LogCorrupt` naming the file and byte, never a digest.
 *
 * The caller holds the disk's maintenance permit (no fold replaces the base or removes a
 * segment meanwhile) and has let the writer make every record before the request durable.
 */
import * as path from "node:path"
import { Data, Effect } from "effect"
import * as Wire from "../../protocol/Wire.js"
import { blockRuns } from "../../internal/blockRuns.js"
import type { Note } from "./chain.js"
import { type Hold, Records, type Span } from "./checkedRecords.js"
import { LogCorrupt, LogIoError } from "./errors.js"
import { RECORD_HEADER_BYTES } from "./format.js"
import type { LiveIndex, LogView } from "./liveIndex.js"
import { BaseRanges } from "./point.js"

/** The bytes have no checksum to check them by (a format-1 base image): no digest is given. */
export class Unverifiable extends Data.TaggedError("Unverifiable")<{ readonly file: string }> {
  override get message() {
    return `${this.file} is format 1, without data checksums: its bytes cannot be checked before they are hashed (the next retention fold writes format 2)`
  }
}

/** What an answer needs of a disk's log (`LogStore.DiskLog` is one). */
export interface ChecksumLog extends LogView {
  readonly live: LiveIndex
  readonly maintenance: Effect.Semaphore
}

/** Consecutive blocks are hashed together, up to this many bytes at a time (a run). */
const RUN_BYTES = 1 << 20

/** Bytes `[start, end)` of the disk as one view: a record's payload, or base bytes read for the run. */
export interface Piece {
  readonly start: number
  readonly end: number
  readonly bytes: Uint8Array
}

/**
 * The digests of `blocks` (each `DIGEST_BYTES`, in order) as the log holds them now, and what
 * building the live index noted. The caller holds the maintenance permit.
 */
export const digestsOf = async (
  log: ChecksumLog,
  blocks: ReadonlyArray<number>,
  algorithm: Wire.DigestAlgorithm = Wire.DIGEST_ALGORITHM
): Promise<{ readonly digests: Uint8Array; readonly notes: ReadonlyArray<Note> }> => {
  const notes = await log.live.ensure(log)
  const { blockSize } = log.geometry
  // Every extent taken at once, before any read: what the answer reflects is fixed here.
  const runs = blockRuns(blocks, Math.max(1, Math.floor(RUN_BYTES / blockSize))).map(([first, count]) => {
    const start = first * blockSize
    const end = start + count * blockSize
    return { start, end, extents: log.live.extentsIn(start, end), hold: new Set<Span>() as Hold }
  })
  const baseSeq = log.base.seq
  const records = new Records(log.diskDir)
  let base: BaseRanges | undefined
  const baseBytes = async (start: number, end: number, out: Buffer, at: number) => {
    if (base === undefined) {
      base = await BaseRanges.openAt(log.diskDir, log.geometry, baseSeq)
      if (base === undefined) throw new Error("the base image changed under a checksum answer")
    }
    if (base.base.format !== 2) throw new Unverifiable({ file: base.file })
    await base.read(start, end, out, at)
  }
  // The next run's records are read (in the pool) while this run is hashed. A
  // read ahead that fails is told when its run comes (handled at once, so never unhandled).
  let ahead: Promise<void> | undefined
  const readAhead = (r: number) => {
    if (r >= runs.length) return undefined
    const reading = records.prefetch(runs[r]!.extents, runs[r]!.hold)
    reading.catch(() => undefined)
    return reading
  }
  try {
    const digests = new Uint8Array(blocks.length * Wire.DIGEST_BYTES)
    let k = 0
    ahead = readAhead(0)
    for (let r = 0; r < runs.length; r++) {
      const run = runs[r]!
      await ahead
      ahead = readAhead(r + 1)
      // The run as views, no byte copied: records' payloads, and base bytes between them read
      // into one pooled buffer at their place in the run.
      const pieces: Array<Piece> = []
      let scratch: Buffer | undefined
      const fromBase = async (start: number, end: number) => {
        scratch ??= records.scratch(run.end - run.start, run.hold)
        await baseBytes(start, end, scratch, start - run.start)
        pieces.push({ start, end, bytes: scratch.subarray(start - run.start, end - run.start) })
      }
      let cursor = run.start
      for (const x of run.extents) {
        if (x.start > cursor) await fromBase(cursor, x.start)
        const payload = await records.payload(x, run.hold)
        const from = x.fileOffset - x.record - RECORD_HEADER_BYTES
        if (from < 0 || from + (x.end - x.start) > payload.byteLength)
          throw new LogCorrupt({
            file: path.join(log.diskDir, x.segment.name),
            offset: x.record,
            reason: `record ${x.seq}: ${payload.byteLength} bytes hold no bytes ${from}..${from + x.end - x.start}`
          })
        pieces.push({ start: x.start, end: x.end, bytes: payload.subarray(from, from + (x.end - x.start)) })
        cursor = x.end
      }
      if (cursor < run.end) await fromBase(cursor, run.end)
      hashInto(pieces, run.start, run.end, blockSize, digests, k, algorithm)
      k += (run.end - run.start) / blockSize
      records.release(run.hold)
    }
    return { digests, notes }
  } finally {
    // A read ahead still running when a run failed: done before its buffers go back and the files close.
    await ahead?.catch(() => undefined)
    // Closed behind the answer: a close is a trip through the pool the reply need not wait for
    // (under load, one such trip took 15–60 ms). Its failure changes nothing already read.
    void records.close()
    await (base as BaseRanges | undefined)?.close()
  }
}

/**
 * The digest of each block of `[start, end)` into `digests` from block `k` on: `algorithm`
 * (`Wire.blockDigest`'s) fed the pieces that cover the block, in order — one-shot where one
 * piece holds the block, an incremental hasher (`Wire.digestHasher`) otherwise. `pieces`
 * cover the range without gap or overlap (the live index's extents and the base between them).
 */
export const hashInto = (
  pieces: ReadonlyArray<Piece>,
  start: number,
  end: number,
  blockSize: number,
  digests: Uint8Array,
  k: number,
  algorithm: Wire.DigestAlgorithm
): void => {
  let p = 0
  for (let b = start; b < end; b += blockSize, k++) {
    const blockEnd = b + blockSize
    const whole = pieces[p]
    if (whole !== undefined && whole.start <= b && whole.end >= blockEnd) {
      // The common case: one piece holds the whole block (one-shot, no Hash object).
      digests.set(
        Wire.blockDigest(whole.bytes.subarray(b - whole.start, blockEnd - whole.start), algorithm),
        k * Wire.DIGEST_BYTES
      )
      if (whole.end === blockEnd) p++
      continue
    }
    const hash = Wire.digestHasher(algorithm)
    // Hashed up to `at`: each piece must go on from there.
    for (let at = b; at < blockEnd; ) {
      const piece = pieces[p]
      if (piece === undefined || piece.start > at || piece.end <= at)
        throw new Error(`the pieces of a checksum answer do not cover byte ${at}`)
      const to = Math.min(blockEnd, piece.end)
      hash.update(piece.bytes.subarray(at - piece.start, to - piece.start))
      if (piece.end <= blockEnd) p++
      at = to
    }
    digests.set(hash.digest(), k * Wire.DIGEST_BYTES)
  }
}

/**
 * The answer to `request` on `log`, whose records through `through` are all durable: a
 * `ChecksumReply` by the algorithm the request names (its code echoed), or a
 * `ChecksumRefused` (damage, a format-1 base, an I/O error; `unsupported`: a code this
 * receiver cannot compute) — logged, with the file and byte when damage. The connection
 * stays up either way.
 */
export const answer = (
  log: ChecksumLog,
  request: Wire.ChecksumRequest,
  through: number
): Effect.Effect<Wire.ChecksumReply | Wire.ChecksumRefused> => {
  const algorithm = Wire.digestAlgorithmOf(request.algorithm)
  if (algorithm === undefined || !Wire.digestAvailable(algorithm)) {
    const detail =
      algorithm === undefined
        ? `digest algorithm code ${request.algorithm} is unknown here (0: sha256, 1: blake3)`
        : `${algorithm} is not available here (its native module did not load)`
    const refused: Wire.ChecksumRefused = {
      _tag: "ChecksumRefused",
      id: request.id,
      reason: "unsupported",
      detail
    }
    return Effect.as(
      Effect.logWarning(`${log.diskId}: checksum request ${request.id} refused: ${detail}`).pipe(
        Effect.annotateLogs({ reason: "unsupported", blocks: request.blocks.length })
      ),
      refused
    )
  }
  return log.maintenance
    .withPermits(1)(
      Effect.tryPromise({
        try: () => digestsOf(log, request.blocks, algorithm),
        catch: (cause) =>
          cause instanceof LogCorrupt || cause instanceof Unverifiable
            ? cause
            : new LogIoError({ op: "read", path: log.diskDir, cause })
      })
    )
    .pipe(
      Effect.tap(({ notes }) =>
        Effect.forEach(notes, (note) =>
          Effect.logWarning(`${log.diskId}: ${note.message}`).pipe(Effect.annotateLogs(note.annotations))
        )
      ),
      Effect.map(({ digests }): Wire.ChecksumReply | Wire.ChecksumRefused => ({
        _tag: "ChecksumReply",
        id: request.id,
        through,
        algorithm: request.algorithm,
        digests
      })),
      Effect.catchAll((error) => {
        const reason =
          error._tag === "LogCorrupt" ? "damaged" : error._tag === "Unverifiable" ? "unverifiable" : "failed"
        const annotations =
          error._tag === "LogCorrupt" ? { file: error.file, offset: error.offset } : { error: error._tag }
        const refused: Wire.ChecksumRefused = {
          _tag: "ChecksumRefused",
          id: request.id,
          reason,
          detail: error.message
        }
        return Effect.as(
          Effect.logError(`${log.diskId}: checksum request ${request.id} refused: ${error.message}`).pipe(
            Effect.annotateLogs({ reason, blocks: request.blocks.length, ...annotations })
          ),
          refused
        )
      })
    )
}

/**
 * The decoder's pooled copies of payloads that span socket reads (issue 19, session 11):
 * each copy's room goes back to the pool only once the log has written its bytes. Two
 * disks' streams, cut at random boundaries and fed in turn (their copies share the pool's
 * slabs), every record appended before the writers run (so many copies wait in the queue
 * at once); then each log is read back and every byte compared with what was sent. The
 * log that hands a copy back when it queues the record (`releasesCopyBeforeWrite`) writes
 * other payloads' bytes in its place, and must be caught.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import fc from "fast-check"
import { afterAll, afterEach, describe, expect, it } from "vitest"
import * as Wire from "../../src/protocol/Wire.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import { parseRecord, SEGMENT_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import * as LogStore from "../../src/receiver/LogStore.js"

const RUNS = Math.max(2, Math.round(6 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1)))
const geometry = { blockSize: 4096, blockCount: 1024 }

const root = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-decoder-copies-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
afterEach(() => {
  ReceiverMutants.releasesCopyBeforeWrite = false
})
let dirs = 0

/** Sizes around the edges a copy meets (a 4 KiB block, a 64 KiB socket read) and many large ones. */
const size = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom(1, 4095, 4096, 4097, 65535, 65536, 65537) },
  { weight: 4, arbitrary: fc.integer({ min: 30_000, max: 100_000 }) }
)
const stream = fc.record({
  sizes: fc.array(size, { minLength: 24, maxLength: 40 }),
  /** Bytes of each socket read, cycled. */
  cuts: fc.array(fc.integer({ min: 1, max: 40_000 }), { minLength: 1, maxLength: 16 }),
  seed: fc.integer({ min: 0, max: 255 })
})

type Stream = { sizes: Array<number>; cuts: Array<number>; seed: number }

const payloadOf = (seed: number, seq: number, n: number) => {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (seed + seq * 31 + i * 7 + (i >> 8)) & 0xff
  return b
}

const writesOf = (s: { sizes: ReadonlyArray<number>; seed: number }): Array<Wire.Write> =>
  s.sizes.map((n, i) => ({
    _tag: "Write",
    seq: i + 1,
    epoch: 1,
    offset: (i * 65536) % (2 << 20),
    data: payloadOf(s.seed, i + 1, n)
  }))

/** The stream's bytes as the socket reads of `cuts` (fresh buffers, as a socket's are). */
const readsOf = (writes: ReadonlyArray<Wire.Write>, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const parts = writes.map((w) => Wire.encode(w))
  const all = Buffer.concat(parts)
  const reads: Array<Uint8Array> = []
  for (let at = 0, k = 0; at < all.byteLength; k++) {
    const n = Math.min(cuts[k % cuts.length]!, all.byteLength - at)
    reads.push(Uint8Array.prototype.slice.call(all, at, at + n))
    at += n
  }
  return reads
}

/** Every record of a disk's segments, in order: seq and payload (the record's CRC checked). */
const readBack = (diskDir: string): Array<{ seq: number; payload: Uint8Array } | string> => {
  const out: Array<{ seq: number; payload: Uint8Array } | string> = []
  for (const name of fs
    .readdirSync(diskDir)
    .filter((n) => n.endsWith(".seg"))
    .sort()) {
    const bytes = fs.readFileSync(path.join(diskDir, name))
    for (let at = SEGMENT_HEADER_BYTES; at < bytes.byteLength; ) {
      const parsed = parseRecord(bytes, at)
      if (parsed._tag !== "Record") {
        out.push(`${name} at ${at}: ${parsed._tag === "Bad" ? parsed.reason : "short"}`)
        break
      }
      const start = at + parsed.size - parsed.header.length
      out.push({ seq: parsed.header.seq, payload: bytes.subarray(start, at + parsed.size) })
      at += parsed.size
    }
  }
  return out
}

/** Feeds both streams read by read, in turn, appending each decoded record at once; then reads both logs back. */
const ingest = (a: Stream, b: Stream, turns: ReadonlyArray<boolean>) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const dir = path.join(root, `r${dirs++}`)
        const store = yield* LogStore.open({ dir, verifyRate: 0 })
        const sides = [a, b].map((s) => {
          const writes = writesOf(s)
          return { writes, reads: readsOf(writes, s.cuts), next: 0, decoder: Wire.makeDecoder() }
        })
        const logs = [
          yield* store.disk({ diskId: "vm-a", ...geometry, watermark: 0 }),
          yield* store.disk({ diskId: "vm-b", ...geometry, watermark: 0 })
        ]
        let pooled = 0
        // One synchronous stretch: the writers run only once every record waits in their queues.
        for (let turn = 0; sides.some((s) => s.next < s.reads.length); turn++) {
          const i = turns[turn % turns.length] ? 1 : 0
          const side = sides[i]!.next < sides[i]!.reads.length ? i : 1 - i
          const s = sides[side]!
          const frames: Array<Wire.Frame> = []
          expect(s.decoder.pushInto(s.reads[s.next++]!, frames)).toBeUndefined()
          for (const frame of frames) {
            if (frame._tag !== "Write") throw new Error(`unexpected ${frame._tag}`)
            if (Wire.payloadRelease(frame) !== undefined) pooled++
            logs[side]!.append(frame, true)
          }
        }
        for (const log of logs) yield* log.flushed
        return { sides, diskDirs: logs.map((l) => l.diskDir), pooled }
      })
    )
  )

describe("the decoder's pooled copies reach the log intact", () => {
  const property = fc.asyncProperty(
    stream,
    stream,
    fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
    async (a, b, turns) => {
      const { sides, diskDirs, pooled } = await ingest(a, b, turns)
      // Not vacuous: payloads spanned reads and were copied into the pool.
      expect(pooled).toBeGreaterThan(0)
      for (const [i, side] of sides.entries()) {
        const back = readBack(diskDirs[i]!)
        expect(back.filter((r) => typeof r === "string")).toEqual([])
        expect(back.map((r) => (typeof r === "string" ? -1 : r.seq))).toEqual(side.writes.map((w) => w.seq))
        for (const [k, record] of back.entries()) {
          if (typeof record === "string") continue
          expect(Buffer.compare(record.payload, side.writes[k]!.data)).toBe(0)
        }
      }
    }
  )

  it("every byte of records split across socket reads, two disks at once", async () => {
    await fc.assert(property, { numRuns: RUNS })
  }, 120_000)

  it("catches a log that hands a copy back before writing it", async () => {
    ReceiverMutants.releasesCopyBeforeWrite = true
    // No shrinking: each step is a whole ingest; that it fails is the point.
    const outcome = await fc.check(property, { numRuns: RUNS, endOnFailure: true })
    expect(outcome.failed).toBe(true)
  }, 120_000)
})

/**
 * The receiver writes each log record's 40-byte header where its frame's header was, in
 * the socket chunk (or in room the decoder leaves before a copied payload), so records
 * read together go to disk as one span (issue 19, session 12). The segment format must not
 * change: a stream cut into random socket reads, decoded by a lending decoder and appended,
 * must leave segments, indexes and block indexes byte for byte those of the same records
 * appended as plain values (each header in a buffer of its own), with the same clocks and
 * the same commits. A decoder that lends the tail of another copy instead of room of the
 * copy's own (`DecoderLendingCopyTails`) writes headers over payloads not yet written, and
 * must be caught.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import fc from "fast-check"
import { afterAll, describe, expect, it } from "vitest"
import { DecoderLendingCopyTails } from "../../src/protocol/internal/mutants.js"
import * as Wire from "../../src/protocol/Wire.js"
import * as LogStore from "../../src/receiver/LogStore.js"

const RUNS = Math.max(2, Math.round(6 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1)))
const geometry = { blockSize: 4096, blockCount: 1024 }
/** Small segments: rolls, and so indexes and block indexes, in every run (see `framesOf`). */
const SEGMENT_BYTES = 64 * 1024

const root = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-header-room-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
let dirs = 0

type Item =
  | { readonly _tag: "write"; readonly size: number }
  | { readonly _tag: "block" }
  | { readonly _tag: "resync" }
  /** A frame that is no record (nothing appended): the records around it are not side by side. */
  | { readonly _tag: "keep-alive" }

/** Sizes around a header's 40 bytes, a 4 KiB block and a 64 KiB socket read, and many others. */
const item: fc.Arbitrary<Item> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .oneof(
        fc.constantFrom(1, 39, 40, 41, 4095, 4096, 4097, 65535, 65536, 65537),
        fc.integer({ min: 1, max: 100_000 })
      )
      .map((size) => ({ _tag: "write" as const, size }))
  },
  { weight: 2, arbitrary: fc.constant({ _tag: "block" as const }) },
  { weight: 1, arbitrary: fc.constant({ _tag: "resync" as const }) },
  { weight: 1, arbitrary: fc.constant({ _tag: "keep-alive" as const }) }
)
const scenario = fc.record({
  items: fc.array(item, { minLength: 8, maxLength: 40 }),
  /** Bytes of each socket read, cycled. */
  cuts: fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 12 }),
  /** Where the records are split into two commits (a share of them). */
  split: fc.double({ min: 0, max: 1, noNaN: true }),
  seed: fc.integer({ min: 0, max: 255 })
})
type Scenario = typeof scenario extends fc.Arbitrary<infer A> ? A : never

const payloadOf = (seed: number, seq: number, n: number) => {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (seed + seq * 31 + i * 7 + (i >> 8)) & 0xff
  return b
}

/** The frames of a scenario (records numbered from 1; a resync is its begin and end markers). */
const framesOf = (s: Scenario): Array<Wire.Frame> => {
  const frames: Array<Wire.Frame> = []
  let seq = 0
  // At least one roll, whatever the items: three records of 30 000 bytes first.
  const items: Array<Item> = [...Array(3).fill({ _tag: "write", size: 30_000 }), ...s.items]
  for (const it of items) {
    if (it._tag === "keep-alive") frames.push({ _tag: "KeepAlive" })
    else if (it._tag === "resync") {
      frames.push({ _tag: "ResyncBegin", seq: ++seq, epoch: 1, base: seq - 1 })
      frames.push({ _tag: "ResyncEnd", seq: ++seq, epoch: 1 })
    } else if (it._tag === "block") {
      seq++
      frames.push({
        _tag: "Block",
        seq,
        epoch: 1,
        block: (seq * 7) % 1024,
        data: payloadOf(s.seed, seq, 4096)
      })
    } else {
      seq++
      const offset = (seq * 65536) % (2 << 20)
      frames.push({ _tag: "Write", seq, epoch: 1, offset, data: payloadOf(s.seed, seq, it.size) })
    }
  }
  return frames
}

/** The stream's bytes as the socket reads of `cuts` (fresh buffers, as a socket's are). */
const readsOf = (frames: ReadonlyArray<Wire.Frame>, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const all = Buffer.concat(frames.map((f) => Wire.encode(f)))
  const reads: Array<Uint8Array> = []
  for (let at = 0, k = 0; at < all.byteLength; k++) {
    const n = Math.min(cuts[k % cuts.length]!, all.byteLength - at)
    reads.push(Uint8Array.prototype.slice.call(all, at, at + n))
    at += n
  }
  return reads
}

const isRecord = (f: Wire.Frame): f is Wire.Record =>
  f._tag === "Write" || f._tag === "Block" || f._tag === "ResyncBegin" || f._tag === "ResyncEnd"

/** Every segment, index and block index of a disk's directory, by name. */
const logFiles = (diskDir: string): Map<string, Buffer> =>
  new Map(
    fs
      .readdirSync(diskDir)
      .filter((n) => /\.(seg|idx|bix)$/.test(n))
      .sort()
      .map((n) => [n, fs.readFileSync(path.join(diskDir, n))])
  )

/**
 * Appends `records` to a fresh store with fixed clocks, in two commits (the first `split`
 * records, then the rest, each appended before the writer runs); returns the log's files.
 */
const logOf = (records: ReadonlyArray<Wire.Record>, split: number) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const dir = path.join(root, `r${dirs++}`)
        const store = yield* LogStore.open({
          dir,
          verifyRate: 0,
          segmentBytes: SEGMENT_BYTES,
          now: () => 1_700_000_000_000,
          monotonic: () => 0
        })
        const log = yield* store.disk({ diskId: "vm", ...geometry, watermark: 0 })
        const cut = Math.floor(split * records.length)
        for (const part of [records.slice(0, cut), records.slice(cut)]) {
          for (const r of part) log.append(r, r._tag === "Write" || r._tag === "ResyncEnd")
          yield* log.flushed
        }
        return logFiles(log.diskDir)
      })
    )
  )

const property = (makeDecoder: () => Wire.Decoder) =>
  fc.asyncProperty(scenario, async (s) => {
    const frames = framesOf(s)
    const decoder = makeDecoder()
    const decoded: Array<Wire.Frame> = []
    for (const read of readsOf(frames, s.cuts)) expect(decoder.pushInto(read, decoded)).toBeUndefined()
    const records = decoded.filter(isRecord)
    // Not vacuous: headers lent in socket chunks and before copies.
    const lent = records.filter(
      (r) => (r._tag === "Write" || r._tag === "Block") && Wire.headerRoom(r) !== undefined
    )
    expect(lent.length).toBeGreaterThan(0)
    const lending = await logOf(records, s.split)
    const plain = await logOf(frames.filter(isRecord), s.split)
    expect([...lending.keys()]).toEqual([...plain.keys()])
    expect([...plain.keys()].some((n) => n.endsWith(".idx"))).toBe(true)
    for (const [name, bytes] of plain) {
      const other = lending.get(name)!
      if (Buffer.compare(other, bytes) !== 0) {
        let at = 0
        while (at < bytes.byteLength && other[at] === bytes[at]) at++
        expect.fail(`${name} differs at byte ${at} (${other.byteLength} bytes, expected ${bytes.byteLength})`)
      }
    }
  })

describe("log records written over their frames' headers", () => {
  it("leave the segments, indexes and block indexes byte for byte as before", async () => {
    await fc.assert(
      property(() => Wire.makeDecoder({ lendHeaderBytes: true })),
      { numRuns: RUNS }
    )
  }, 120_000)

  it("a decoder that lends another copy's tail is caught", async () => {
    // No shrinking: each step is two logs written; that it fails is the point.
    const outcome = await fc.check(
      property(() => new DecoderLendingCopyTails({ lendHeaderBytes: true })),
      { numRuns: RUNS, endOnFailure: true }
    )
    expect(outcome.failed).toBe(true)
    // For the reason this test is about: a log file's bytes differ.
    expect(String(outcome.errorInstance)).toMatch(/differs at byte/)
  }, 120_000)
})

/**
 * The segment reader over every edge of its read window (issue 13, finding 1): records of
 * random sizes — payloads of window - 1, window, window + 1, headers straddling the edge,
 * payloads larger than the window — written by the real encoder to a real file, then read
 * back with a tiny window (64..512 bytes) and with the default one. `scanSegment` and
 * `readRange` must return exactly what was written; a cut anywhere keeps exactly the whole
 * records before it. The reader of the bug (test/support/segmentMutants.ts) must be caught.
 * The index of such a segment round-trips, and any flipped byte or cut of it is a defect.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import fc from "fast-check"
import { afterAll, describe, expect, it } from "vitest"
import {
  decodeIndex,
  encodeIndex,
  encodeRecordHeader,
  encodeSegmentHeader,
  FLAG_BATCH_START,
  FLAG_RECOVERY_POINT,
  Kind,
  RECORD_HEADER_BYTES,
  type RecordHeader,
  SEGMENT_HEADER_BYTES
} from "../../src/receiver/internal/format.js"
import {
  DEFAULT_WINDOW,
  isTorn,
  type NextRecord,
  readRange,
  scanSegment,
  wholeRecord
} from "../../src/receiver/internal/segment.js"
import { headerOnlyRetry } from "../support/segmentMutants.js"

const RUNS = Math.round(150 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1))

const root = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-segment-prop-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
let files = 0

// ---------------------------------------------------------------------------------------------
// Generators

interface Planned {
  readonly kind: Kind
  /** Payload length, for writes and blocks (markers carry none). */
  readonly size: number
  readonly point: boolean
  /** Starts a new commit (the first record always does). */
  readonly commit: boolean
  /** Seqs a resync-begin skips (accepted across a gap). */
  readonly skip: number
  readonly position: number
  readonly epoch: number
}

/** Payload sizes around the window's edges, and any size up to three windows. */
const sizeNear = (window: number) =>
  fc.oneof(
    fc.constantFrom(
      1,
      window - 1,
      window,
      window + 1,
      window - RECORD_HEADER_BYTES - 1,
      window - RECORD_HEADER_BYTES,
      window - RECORD_HEADER_BYTES + 1,
      2 * window + 3
    ),
    fc.integer({ min: 1, max: 3 * window })
  )

const planned = (window: number): fc.Arbitrary<Planned> =>
  fc.record({
    kind: fc.constantFrom<Kind>(Kind.Write, Kind.Write, Kind.Block, Kind.ResyncBegin, Kind.ResyncEnd),
    size: sizeNear(window).filter((n) => n > 0),
    point: fc.boolean(),
    commit: fc.boolean(),
    skip: fc.nat({ max: 3 }),
    position: fc.maxSafeNat(),
    epoch: fc.integer({ min: 0, max: 0xffff_ffff })
  })

// ---------------------------------------------------------------------------------------------
// Writing and reading back

interface Written extends RecordHeader {
  readonly offset: number
  readonly payload: Buffer
}

const FIRST_SEQ = 1000

/** Encodes the records with the real encoder into a segment file; what each record is. */
const writeSegment = (plan: ReadonlyArray<Planned>, lead?: number) => {
  const parts: Array<Buffer> = [encodeSegmentHeader({ firstSeq: FIRST_SEQ, created: 7 })]
  const written: Array<Written> = []
  let at = SEGMENT_HEADER_BYTES
  let seq = FIRST_SEQ
  const all = lead === undefined ? plan : [{ ...plan[0]!, kind: Kind.Write, size: lead }, ...plan]
  all.forEach((p, i) => {
    const data = p.kind === Kind.Write || p.kind === Kind.Block
    if (i > 0) seq += 1 + (p.kind === Kind.ResyncBegin ? p.skip : 0)
    const payload = Buffer.alloc(data ? p.size : 0)
    for (let k = 0; k < payload.length; k++) payload[k] = (seq * 31 + k * 7) & 0xff
    const header: RecordHeader = {
      length: payload.length,
      kind: p.kind,
      flags: (p.point ? FLAG_RECOVERY_POINT : 0) | (i === 0 || p.commit ? FLAG_BATCH_START : 0),
      epoch: p.epoch,
      seq,
      position: p.kind === Kind.ResyncEnd ? 0 : p.position,
      time: 1_700_000_000_000 + seq
    }
    parts.push(encodeRecordHeader(header, payload), payload)
    written.push({ ...header, offset: at, payload })
    at += RECORD_HEADER_BYTES + payload.length
  })
  const file = path.join(root, `${files++}.seg`)
  const bytes = Buffer.concat(parts)
  fs.writeFileSync(file, bytes)
  return { file, bytes, written }
}

const fieldsOf = (r: RecordHeader & { readonly offset: number }) => ({
  seq: r.seq,
  kind: r.kind,
  flags: r.flags,
  epoch: r.epoch,
  position: r.position,
  time: r.time,
  length: r.length,
  offset: r.offset
})

/** What `scanSegment` and `readRange` read back, with `window` and `next`. */
const readBack = async (file: string, size: number, window: number, next: NextRecord) => {
  const handle = await fs.promises.open(file, "r")
  try {
    const scan = await scanSegment(
      handle,
      size,
      { firstSeq: FIRST_SEQ, prevSeq: FIRST_SEQ - 1 },
      { window, next }
    )
    const ranged: Array<Written> = []
    let error: unknown
    if (scan.entries.length > 0)
      await readRange(
        handle,
        file,
        SEGMENT_HEADER_BYTES,
        scan.end,
        FIRST_SEQ - 1,
        (h, payload, offset) => {
          ranged.push({ ...h, offset, payload: Buffer.from(payload) })
          return false
        },
        { window, next }
      ).catch((e: unknown) => {
        error = e
      })
    return { scan, ranged, error }
  } finally {
    await handle.close()
  }
}

/** Throws when what was read back is not exactly what was written. */
const exactly = async (
  file: string,
  bytes: Buffer,
  written: ReadonlyArray<Written>,
  window: number,
  next: NextRecord
) => {
  const { scan, ranged, error } = await readBack(file, bytes.length, window, next)
  expect(scan.damage, `window ${window}: ${scan.damage?.reason} at ${scan.damage?.offset}`).toBeUndefined()
  expect(scan.end).toBe(bytes.length)
  expect(scan.entries.map(fieldsOf)).toEqual(written.map(fieldsOf))
  // Thrown whole: an assertion's message would cut the reason off.
  if (error !== undefined) throw new Error(`readRange, window ${window}: ${String(error)}`)
  expect(ranged.map(fieldsOf)).toEqual(written.map(fieldsOf))
  ranged.forEach((r, i) => {
    if (!r.payload.equals(written[i]!.payload)) throw new Error(`payload of seq ${r.seq} differs`)
  })
}

const segmentProperty = (next: NextRecord) =>
  fc.asyncProperty(
    fc
      .integer({ min: 64, max: 512 })
      .chain((window) =>
        fc.tuple(fc.constant(window), fc.array(planned(window), { minLength: 1, maxLength: 24 }))
      ),
    async ([window, plan]) => {
      const { file, bytes, written } = writeSegment(plan)
      await exactly(file, bytes, written, window, next)
      await exactly(file, bytes, written, DEFAULT_WINDOW, next)
    }
  )

describe("segment reading over the window's edges", () => {
  it("scanSegment and readRange return exactly what was written (tiny and default windows)", async () => {
    await fc.assert(segmentProperty(wholeRecord), { numRuns: RUNS })
  })

  it("the reader of finding 1 (header across the window edge read as short) is caught", async () => {
    const details = await fc.check(segmentProperty(headerOnlyRetry), { numRuns: RUNS })
    expect(details.failed, `the mutant survived ${details.numRuns} runs`).toBe(true)
    // The scan says "short record …"; readRange, when the scan's window missed the edge,
    // "the segment ends inside a record": the same whole record taken for a torn one.
    expect(String(details.errorInstance)).toMatch(/short record|the segment ends inside a record/)
  })

  it("a file cut anywhere reads back exactly the whole records before the cut, the rest a torn tail", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .integer({ min: 64, max: 512 })
          .chain((window) =>
            fc.tuple(
              fc.constant(window),
              fc.array(planned(window), { minLength: 1, maxLength: 16 }),
              fc.double({ min: 0, max: 1, noNaN: true })
            )
          ),
        async ([window, plan, where]) => {
          const { file, bytes, written } = writeSegment(plan)
          const cut = SEGMENT_HEADER_BYTES + Math.floor(where * (bytes.length - SEGMENT_HEADER_BYTES))
          fs.truncateSync(file, cut)
          const whole = written.filter((w) => w.offset + RECORD_HEADER_BYTES + w.length <= cut)
          for (const w of [window, DEFAULT_WINDOW]) {
            const { scan, ranged, error } = await readBack(file, cut, w, wholeRecord)
            expect(scan.entries.map(fieldsOf)).toEqual(whole.map(fieldsOf))
            expect(ranged.map(fieldsOf)).toEqual(whole.map(fieldsOf))
            expect(error).toBeUndefined()
            const end =
              whole.length === 0
                ? SEGMENT_HEADER_BYTES
                : whole.at(-1)!.offset + RECORD_HEADER_BYTES + whole.at(-1)!.length
            expect(scan.end).toBe(end)
            if (cut > end) {
              expect(scan.damage?.offset).toBe(end)
              expect(isTorn(scan.damage!)).toBe(true)
            } else expect(scan.damage).toBeUndefined()
          }
        }
      ),
      { numRuns: RUNS }
    )
  })

  it("the default window: a header straddling 4 MiB by 1..40 bytes, then random records", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: RECORD_HEADER_BYTES }),
        fc.array(planned(DEFAULT_WINDOW >> 10), { minLength: 1, maxLength: 6 }),
        async (before, plan) => {
          // A first write long enough that the second record's header starts `before` bytes short of 4 MiB.
          const lead = DEFAULT_WINDOW - before - SEGMENT_HEADER_BYTES - RECORD_HEADER_BYTES
          const { file, bytes, written } = writeSegment(plan, lead)
          expect(written[1]!.offset).toBe(DEFAULT_WINDOW - before)
          await exactly(file, bytes, written, DEFAULT_WINDOW, wholeRecord)
          fs.rmSync(file)
        }
      ),
      { numRuns: Math.max(5, Math.round(RUNS / 15)) }
    )
  })

  it("the index of any segment round-trips; every flipped byte and every cut of it is a defect inside it", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .integer({ min: 64, max: 512 })
          .chain((window) => fc.array(planned(window), { minLength: 1, maxLength: 12 })),
        async (plan) => {
          const { file, bytes } = writeSegment(plan)
          const handle = await fs.promises.open(file, "r")
          const scan = await scanSegment(handle, bytes.length, {
            firstSeq: FIRST_SEQ,
            prevSeq: undefined
          }).finally(() => handle.close())
          const index = encodeIndex(bytes.length, scan.entries)
          expect(decodeIndex(index, bytes.length, FIRST_SEQ)).toEqual(scan.entries)
          for (let i = 0; i < index.length; i++) {
            const flipped = Buffer.from(index)
            flipped[i]! ^= 1 << (i % 8)
            const decoded = decodeIndex(flipped, bytes.length, FIRST_SEQ)
            expect("reason" in decoded, `flip at ${i}`).toBe(true)
            if ("reason" in decoded) expect(decoded.offset).toBeLessThan(index.length)
          }
          for (let n = 0; n < index.length; n++)
            expect(decodeIndex(index.subarray(0, n), bytes.length, FIRST_SEQ)).toHaveProperty("reason")
          // The index of another size of segment, or of another first seq, is refused too.
          expect(decodeIndex(index, bytes.length + 1, FIRST_SEQ)).toHaveProperty("offset", 8)
          expect(decodeIndex(index, bytes.length, FIRST_SEQ + 1)).toHaveProperty("offset", 24)
        }
      ),
      { numRuns: Math.round(RUNS / 3) }
    )
  })
})

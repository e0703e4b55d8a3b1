/**
 * Issue 17, session 13: restore's worker threads check each record before writing a byte of
 * it with code evaluated from a string (`checkSource` in restoreThreads.ts); the main thread
 * checks with `checkedRecord`, and the segment scan's reading of a record is `parseRecord`
 * then `entryMismatch`. Over random valid records (every kind, every flag, payloads around 0,
 * 1 and the block size, forged lengths around `MAX_RECORD_PAYLOAD`), placed inside a read
 * with other bytes around them as a thread sees them, and one damage (a flipped bit or byte
 * anywhere in the record, a cut at any length, an index entry differing in one field, a
 * header field forged with its CRC made right again): the thread's check, evaluated here as
 * the thread evaluates it and given the entry through the real plan (`encodePlan`), refuses
 * exactly when `checkedRecord` does, exactly when `parseRecord` + `entryMismatch` do, and
 * exactly when the damage changed something. A thread whose check skips the entry's epoch
 * (a kept mutant) is caught.
 */
import { crc32c as addonCrc32c } from "@node-rs/crc32"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import type { Chain } from "../../src/receiver/internal/chain.js"
import { EntryTable } from "../../src/receiver/internal/entryTable.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import {
  encodeRecordHeader,
  entryMismatch,
  type IndexEntry,
  Kind,
  MAX_RECORD_PAYLOAD,
  parseRecord,
  RECORD_HEADER_BYTES
} from "../../src/receiver/internal/format.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import { checkedRecord } from "../../src/receiver/internal/recordCache.js"
import { checkSource, encodePlan, threadData } from "../../src/receiver/internal/restoreThreads.js"
import type { Segment } from "../../src/receiver/internal/segmentSummary.js"
import { numRuns } from "../support/arbitraries.js"

afterEach(() => {
  ReceiverMutants.restoreThreadCheckSkipsEpoch = false
})

const BLOCK = 4096
const MAX_SAFE = Number.MAX_SAFE_INTEGER

// ---------------------------------------------------------------------------------------------
// Records

interface Planned {
  readonly kind: Kind
  readonly length: number
  readonly flags: number
  readonly epoch: number
  readonly seq: number
  readonly position: number
  readonly time: number
  /** Fills the payload and the bytes around the record. */
  readonly seed: number
  /** Bytes of the read before the record and after it (other records, as far as the check knows). */
  readonly before: number
  readonly after: number
}

const safeNear = (low: number) =>
  fc.oneof(
    fc.constantFrom(low, low + 1, 2 ** 32 - 1, 2 ** 32, MAX_SAFE - 1, MAX_SAFE),
    fc.integer({ min: low, max: MAX_SAFE })
  )

/** Payload lengths around 1 and the block size (and a few blocks); markers carry none. */
const payloadLength = fc.oneof(
  fc.constantFrom(1, 2, 3, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 16 * BLOCK - 1, 16 * BLOCK),
  fc.integer({ min: 1, max: 16 * BLOCK + 1 })
)

const planned: fc.Arbitrary<Planned> = fc
  .record({
    kind: fc.constantFrom(Kind.Write, Kind.Block, Kind.ResyncBegin, Kind.ResyncEnd),
    length: payloadLength,
    flags: fc.integer({ min: 0, max: 3 }),
    epoch: fc.oneof(fc.constantFrom(0, 1, 0xffff_ffff), fc.nat({ max: 0xffff_ffff })),
    seq: safeNear(1),
    position: safeNear(0),
    time: safeNear(0),
    seed: fc.integer({ min: 1, max: 0x7fff_ffff }),
    before: fc.oneof(fc.constant(0), fc.nat({ max: 100 })),
    after: fc.oneof(fc.constant(0), fc.nat({ max: 100 }))
  })
  .map((p) => ({ ...p, length: p.kind === Kind.Write || p.kind === Kind.Block ? p.length : 0 }))

/** Bytes from `seed` (xorshift32): cheap for payloads of 64 KiB. */
const fill = (b: Buffer, seed: number): void => {
  let x = seed | 1
  for (let i = 0; i < b.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    b[i] = x & 0xff
  }
}

// ---------------------------------------------------------------------------------------------
// Damage

/** Header fields a forgery may set, and where: u32 or u8 at `at`, or a u64 as its two words. */
const HEADER_FIELDS = {
  length: { at: 0, size: 4 },
  kind: { at: 4, size: 1 },
  flags: { at: 5, size: 1 },
  reserved6: { at: 6, size: 1 },
  reserved7: { at: 7, size: 1 },
  epoch: { at: 8, size: 4 },
  seq: { at: 12, size: 8 },
  position: { at: 20, size: 8 },
  time: { at: 28, size: 8 }
} as const
type HeaderField = keyof typeof HEADER_FIELDS

const ENTRY_FIELDS = ["length", "seq", "kind", "flags", "epoch", "position", "time", "crc"] as const
type EntryField = (typeof ENTRY_FIELDS)[number]

type Damage =
  | { readonly _tag: "None" }
  /** `at`: a byte of the record (header or payload), xor `mask` (one bit, or all eight). */
  | { readonly _tag: "Flip"; readonly at: number; readonly mask: number }
  /** The read ends `keep` bytes into the record (the segment cut there). */
  | { readonly _tag: "Cut"; readonly keep: number }
  /** The entry's `field` is `value` instead (`value` may equal the original: then no damage). */
  | { readonly _tag: "Entry"; readonly field: EntryField; readonly value: number }
  /** Header `field` set to `value` (a u64 as `[low, high]` words), the CRC made right again. */
  | { readonly _tag: "Forge"; readonly field: HeaderField; readonly low: number; readonly high: number }

/** Values around a field's edges and the planned value, and any of its width. */
const u32Near = (v: number) =>
  fc.oneof(
    fc.constantFrom(v, (v + 1) >>> 0, (v - 1) >>> 0, (v ^ 1) >>> 0, 0, 1, 0xffff_ffff),
    fc.nat({ max: 0xffff_ffff })
  )
const u8Near = (v: number) =>
  fc.oneof(fc.constantFrom(v, (v + 1) & 0xff, (v - 1) & 0xff, 2, 3, 6, 7), fc.nat({ max: 255 }))
const safeAround = (v: number) =>
  fc.oneof(
    fc.constantFrom(v, v + 1, v - 1, 0, 1, MAX_SAFE).filter((n) => n >= 0 && n <= MAX_SAFE),
    safeNear(0)
  )

const damage = (p: Planned): fc.Arbitrary<Damage> => {
  const size = RECORD_HEADER_BYTES + p.length
  const byte = fc.oneof(
    fc.nat({ max: RECORD_HEADER_BYTES - 1 }),
    fc.constantFrom(36, 39, RECORD_HEADER_BYTES, size - 1).map((n) => Math.min(n, size - 1)),
    fc.nat({ max: size - 1 })
  )
  const entry = fc
    .constantFrom(...ENTRY_FIELDS)
    .chain((field) =>
      (field === "kind" || field === "flags"
        ? u8Near(field === "kind" ? p.kind : p.flags)
        : field === "length" || field === "epoch" || field === "crc"
          ? u32Near(field === "length" ? p.length : field === "epoch" ? p.epoch : 0)
          : safeAround(p[field])
      ).map((value) => ({ _tag: "Entry" as const, field, value }))
    )
  const u64 = (v: number) =>
    fc.oneof(
      safeAround(v).map((n) => [n % 2 ** 32, Math.floor(n / 2 ** 32)] as const),
      // High words just past a safe integer's.
      fc.tuple(fc.nat({ max: 0xffff_ffff }), fc.constantFrom(0x1f_ffff, 0x20_0000, 0xffff_ffff))
    )
  const forge = fc.constantFrom(...(Object.keys(HEADER_FIELDS) as Array<HeaderField>)).chain((field) => {
    const words =
      field === "seq" || field === "position" || field === "time"
        ? u64(p[field])
        : field === "length"
          ? fc
              .oneof(
                fc.constantFrom(
                  0,
                  1,
                  p.length + 1,
                  Math.max(0, p.length - 1),
                  MAX_RECORD_PAYLOAD - 1,
                  MAX_RECORD_PAYLOAD,
                  MAX_RECORD_PAYLOAD + 1,
                  0xffff_ffff
                ),
                fc.nat({ max: p.length + 200 })
              )
              .map((n) => [n, 0] as const)
          : field === "epoch"
            ? u32Near(p.epoch).map((n) => [n, 0] as const)
            : u8Near(field === "kind" ? p.kind : field === "flags" ? p.flags : 0).map((n) => [n, 0] as const)
    return words.map(([low, high]) => ({ _tag: "Forge" as const, field, low, high }))
  })
  // Weighted by how many ways each has to go wrong (an entry has 8 fields, a header 9).
  return fc.oneof(
    { arbitrary: fc.constant({ _tag: "None" as const }), weight: 1 },
    {
      arbitrary: fc.record({
        _tag: fc.constant("Flip" as const),
        at: byte,
        mask: fc.constantFrom(1, 2, 4, 8, 16, 32, 64, 128, 0xff)
      }),
      weight: 2
    },
    {
      arbitrary: fc.record({
        _tag: fc.constant("Cut" as const),
        keep: fc.oneof(
          fc.constantFrom(0, 39, 40, size - 1).map((n) => Math.min(n, size - 1)),
          fc.nat({ max: size - 1 })
        )
      }),
      weight: 1
    },
    { arbitrary: entry, weight: 3 },
    { arbitrary: forge, weight: 3 }
  )
}

// ---------------------------------------------------------------------------------------------
// The three checks

/** The thread's check, evaluated from its source as the thread evaluates it (the addon's CRC32C, its `workerData`). */
const threadCheck = (plan: Float64Array) =>
  new Function("crc32c", "k", "plan", `${checkSource}\nreturn check`)(addonCrc32c, threadData(""), plan) as (
    bytes: Buffer,
    o: number,
    p: number
  ) => string | undefined

const chain = { diskDir: "/nowhere" } as unknown as Chain

/** Whether `checkedRecord` refuses `bytes` as record 0 of `table` (a `LogCorrupt`; anything else is thrown on). */
const mainRefuses = (table: EntryTable, bytes: Buffer, indexed: boolean): boolean => {
  const segment = {
    name: "0000000000000001.seg",
    indexFile: indexed ? "/nowhere/x.idx" : undefined
  } as Segment
  try {
    checkedRecord(chain, segment, table, 0, bytes)
    return false
  } catch (e) {
    if (e instanceof LogCorrupt) return true
    throw e
  }
}

/** The segment scan's reading: `parseRecord` then `entryMismatch` (what `checkedRecord` did before). */
const specRefuses = (entry: IndexEntry, bytes: Buffer): boolean => {
  const parsed = parseRecord(bytes, 0)
  return parsed._tag !== "Record" || entryMismatch(entry, parsed.header, entry.offset, parsed.crc).length > 0
}

interface Outcome {
  readonly thread: string | undefined
  readonly main: boolean
  readonly spec: boolean
  readonly changed: boolean
}

/** The record of `p` in a read, damaged by `d`, seen by the three checks. */
const outcome = (p: Planned, d: Damage, indexed: boolean): Outcome => {
  const size = RECORD_HEADER_BYTES + p.length
  const read = Buffer.allocUnsafe(p.before + size + p.after)
  fill(read, p.seed)
  const o = p.before
  const header = {
    kind: p.kind,
    length: p.length,
    flags: p.flags,
    epoch: p.epoch,
    seq: p.seq,
    position: p.position,
    time: p.time
  }
  const payload = read.subarray(o + RECORD_HEADER_BYTES, o + size)
  const encoded = encodeRecordHeader(header, payload)
  encoded.copy(read, o)
  const original = Buffer.from(read)
  const offset = 4096 + p.before
  const entry: { -readonly [K in keyof IndexEntry]: number } = {
    ...header,
    offset,
    crc: encoded.readUInt32LE(36)
  }
  let end = read.length
  switch (d._tag) {
    case "None":
      break
    case "Flip":
      read[o + d.at]! ^= d.mask
      break
    case "Cut":
      end = o + d.keep
      break
    case "Entry":
      entry[d.field] = d.value
      break
    case "Forge": {
      const { at, size: width } = HEADER_FIELDS[d.field]
      if (width === 1) read[o + at] = d.low
      else read.writeUInt32LE(d.low, o + at)
      if (width === 8) read.writeUInt32LE(d.high, o + at + 4)
      const claimed = read.readUInt32LE(o)
      const covered = read.subarray(
        o + RECORD_HEADER_BYTES,
        Math.min(read.length, o + RECORD_HEADER_BYTES + claimed)
      )
      read.writeUInt32LE(addonCrc32c(covered, addonCrc32c(read.subarray(o, o + 36))) >>> 0, o + 36)
      break
    }
  }
  // The entry through the table's columns and the threads' plan, as a restore hands it over.
  const table = EntryTable.fromEntries([entry as IndexEntry])
  const bytes = read.subarray(0, end)
  const start = offset - p.before
  const { plan, at } = encodePlan(
    [
      {
        file: 0,
        start,
        end: start + bytes.length,
        table,
        records: [{ k: 0, from: 0, to: 0 }],
        order: new Uint32Array(0)
      }
    ],
    { start: [], end: [], fileOffset: [] }
  )
  const thread = threadCheck(plan)(bytes, o, at[0]! + 4)
  // The main thread reads the entry's length from the entry's offset (restore's `refusal`, the record cache).
  const own = bytes.subarray(o, Math.min(bytes.length, o + RECORD_HEADER_BYTES + table.length[0]!))
  const changed =
    end < o + size ||
    !read.subarray(o, o + size).equals(original.subarray(o, o + size)) ||
    ENTRY_FIELDS.some((f) => table[f][0] !== (f === "crc" ? encoded.readUInt32LE(36) : header[f]))
  return { thread, main: mainRefuses(table, own, indexed), spec: specRefuses(table.entry(0), own), changed }
}

const agree = fc.property(
  planned.chain((p) => fc.tuple(fc.constant(p), damage(p), fc.boolean())),
  ([p, d, indexed]) => {
    const r = outcome(p, d, indexed)
    const refused = r.thread !== undefined
    return refused === r.main && refused === r.spec && refused === r.changed
  }
)

describe("restore threads' record check", () => {
  it("refuses exactly what checkedRecord and parseRecord + entryMismatch refuse: any flip, cut, entry field or forged header", () => {
    fc.assert(agree, { numRuns: numRuns(400) })
  })

  it("takes every untouched record, of every kind, flag and length", () => {
    fc.assert(
      fc.property(planned, fc.boolean(), (p, indexed) => {
        expect(outcome(p, { _tag: "None" }, indexed)).toEqual({
          thread: undefined,
          main: false,
          spec: false,
          changed: false
        })
      }),
      { numRuns: numRuns(100) }
    )
  })

  it("catches a thread whose check skips the entry's epoch (mutant)", () => {
    ReceiverMutants.restoreThreadCheckSkipsEpoch = true
    // The property as it is, given the runs to meet an entry whose epoch differs (about 1 in 40).
    const result = fc.check(agree, { numRuns: 2000 })
    expect(result.failed).toBe(true)
    const [[p, d, indexed]] = result.counterexample!
    // An entry's epoch changed, or the record's forged with its CRC made right.
    expect(d).toMatchObject({ field: "epoch" })
    expect(outcome(p, d, indexed)).toMatchObject({ thread: undefined, main: true, spec: true, changed: true })
  })
})

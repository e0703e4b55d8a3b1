/**
 * A fuzz corpus for the segment and index readers (issue 13): random mutations — flipped
 * bits, overwritten and zeroed runs, cuts, inserted and deleted bytes, a copied range — of a
 * small real log (test/support/receiverLog.ts), fed to `scanSegment`, `readRange`,
 * `decodeIndex` and `openChain` in read mode. Seeded, so the corpus is the same every run.
 * Nothing may throw but a `LogCorrupt`, and nothing may return a record that was not written.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { openChain } from "../../src/receiver/internal/chain.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import {
  decodeIndex,
  type IndexEntry,
  indexName,
  parseSegmentName,
  SEGMENT_HEADER_BYTES
} from "../../src/receiver/internal/format.js"
import { readRange, scanSegment } from "../../src/receiver/internal/segment.js"
import { meta, segmentFiles, writeLog } from "../support/receiverLog.js"

const RUNS = Math.round(300 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1))

let diskDir = ""
let files: Array<string> = []
const original = new Map<string, Buffer>()
/** Every record written, by its fields (offset aside: a shifted file moves records). */
const written = new Set<string>()
const key = (e: IndexEntry) =>
  JSON.stringify([e.seq, e.kind, e.flags, e.epoch, e.position, e.time, e.length, e.crc])

const root = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-segment-fuzz-"))
beforeAll(async () => {
  diskDir = await writeLog(root)
  files = segmentFiles(diskDir)
  for (const name of fs.readdirSync(diskDir)) original.set(name, fs.readFileSync(path.join(diskDir, name)))
  const chain = await openChain(diskDir, meta(diskDir), "read")
  for (const s of chain.segments) for (const e of s.entries!) written.add(key(e))
  expect(written.size).toBe(24)
})
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

const restoreFiles = () => {
  for (const name of fs.readdirSync(diskDir)) if (!original.has(name)) fs.rmSync(path.join(diskDir, name))
  for (const [name, bytes] of original) fs.writeFileSync(path.join(diskDir, name), bytes)
}

// ---------------------------------------------------------------------------------------------
// Mutations

type Mutation =
  | { readonly _tag: "flip"; readonly at: number; readonly bit: number }
  | { readonly _tag: "set"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly _tag: "zero"; readonly at: number; readonly length: number }
  | { readonly _tag: "cut"; readonly at: number }
  | { readonly _tag: "insert"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly _tag: "delete"; readonly at: number; readonly length: number }
  | { readonly _tag: "copy"; readonly from: number; readonly at: number; readonly length: number }

/** Positions are fractions of the file's length, so one generator fits every file. */
const where = fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true })
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ _tag: fc.constant("flip" as const), at: where, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({
    _tag: fc.constant("set" as const),
    at: where,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 48 })
  }),
  fc.record({ _tag: fc.constant("zero" as const), at: where, length: fc.integer({ min: 1, max: 4096 }) }),
  fc.record({ _tag: fc.constant("cut" as const), at: where }),
  fc.record({
    _tag: fc.constant("insert" as const),
    at: where,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 64 })
  }),
  fc.record({ _tag: fc.constant("delete" as const), at: where, length: fc.integer({ min: 1, max: 200 }) }),
  fc.record({
    _tag: fc.constant("copy" as const),
    from: where,
    at: where,
    length: fc.integer({ min: 1, max: 2000 })
  })
)

const apply = (bytes: Buffer, m: Mutation): Buffer => {
  const at = Math.floor(m.at * bytes.length)
  switch (m._tag) {
    case "flip": {
      const out = Buffer.from(bytes)
      if (out.length > 0) out[at]! ^= 1 << m.bit
      return out
    }
    case "set": {
      const out = Buffer.from(bytes)
      out.set(m.bytes.subarray(0, Math.max(0, out.length - at)), at)
      return out
    }
    case "zero":
      return Buffer.concat([
        bytes.subarray(0, at),
        Buffer.alloc(Math.min(m.length, bytes.length - at)),
        bytes.subarray(at + m.length)
      ])
    case "cut":
      return bytes.subarray(0, at)
    case "insert":
      return Buffer.concat([bytes.subarray(0, at), m.bytes, bytes.subarray(at)])
    case "delete":
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + m.length)])
    case "copy": {
      const from = Math.floor(m.from * bytes.length)
      const out = Buffer.from(bytes)
      bytes.copy(out, at, from, Math.min(bytes.length, from + m.length))
      return out
    }
  }
}

/** Which file a case mutates: a sealed segment, the active one, or an index. */
const target = fc.constantFrom("sealed", "active", "index", "both")
const mutations = fc.array(mutation, { minLength: 1, maxLength: 4 })

const onlyLogCorrupt = (e: unknown) => {
  if (!(e instanceof LogCorrupt)) throw new Error(`threw something else than LogCorrupt: ${String(e)}`)
}

const assertWritten = (entries: ReadonlyArray<IndexEntry>, what: string) => {
  for (const e of entries)
    if (!written.has(key(e))) throw new Error(`${what} returned a record never written: ${key(e)}`)
}

// ---------------------------------------------------------------------------------------------

describe("fuzz: mutated segments and indexes", () => {
  it("scanSegment and readRange: no throw, only records that were written, and readRange reads what the scan found", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(0, 1, 2, 3), mutations, async (n, ms) => {
        const file = files[n]!
        const bytes = ms.reduce(apply, original.get(path.basename(file))!)
        const mutated = path.join(root, "mutated.seg")
        fs.writeFileSync(mutated, bytes)
        const handle = await fs.promises.open(mutated, "r")
        try {
          const firstSeq = parseSegmentName(path.basename(file))!
          const scan = await scanSegment(handle, bytes.length, { firstSeq, prevSeq: undefined })
          assertWritten(scan.entries, "scanSegment")
          expect(scan.end).toBeLessThanOrEqual(bytes.length)
          if (scan.entries.length > 0) {
            const read: Array<number> = []
            await readRange(handle, mutated, SEGMENT_HEADER_BYTES, scan.end, undefined, (h) => {
              read.push(h.seq)
              return false
            })
            expect(read).toEqual(scan.entries.map((e) => e.seq))
          }
        } finally {
          await handle.close()
        }
      }),
      { numRuns: RUNS, seed: 1313 }
    )
  })

  it("decodeIndex: a defect, or exactly the entries written", async () => {
    const indexes = files.slice(0, 3).map((f) => ({
      bytes: original.get(path.basename(indexName(f)))!,
      size: original.get(path.basename(f))!.length,
      firstSeq: parseSegmentName(path.basename(f))!
    }))
    await fc.assert(
      fc.property(fc.constantFrom(0, 1, 2), mutations, (n, ms) => {
        const { bytes, size, firstSeq } = indexes[n]!
        const mutated = ms.reduce(apply, bytes)
        const decoded = decodeIndex(mutated, size, firstSeq)
        if ("reason" in decoded) {
          expect(decoded.offset).toBeGreaterThanOrEqual(0)
          expect(decoded.offset).toBeLessThanOrEqual(mutated.length)
        } else expect(decoded).toEqual(decodeIndex(bytes, size, firstSeq))
      }),
      { numRuns: RUNS * 3, seed: 1314 }
    )
  })

  it("openChain (read): a chain of written records, or a LogCorrupt — nothing else", async () => {
    const seen = { chains: 0, damaged: 0 }
    await fc.assert(
      fc.asyncProperty(target, fc.constantFrom(0, 1, 2), mutations, mutations, async (which, n, ms, more) => {
        try {
          const sealed = which === "active" ? files[3]! : files[n]!
          if (which !== "index") {
            const name = path.basename(sealed)
            fs.writeFileSync(sealed, ms.reduce(apply, original.get(name)!))
          }
          if (which === "index" || which === "both") {
            const name = path.basename(indexName(files[n]!))
            fs.writeFileSync(
              indexName(files[n]!),
              (which === "both" ? more : ms).reduce(apply, original.get(name)!)
            )
          }
          const chain = await openChain(diskDir, meta(diskDir), "read").catch((e: unknown) => {
            onlyLogCorrupt(e)
            return undefined
          })
          if (chain === undefined) return
          if (chain.damaged === undefined) seen.chains++
          else seen.damaged++
          for (const s of chain.segments) assertWritten(s.entries ?? [], "openChain")
          // Seqs only ever go up, and never past what was written.
          const seqs = chain.segments.flatMap((s) => (s.entries ?? []).map((e) => e.seq))
          expect([...seqs].sort((a, b) => a - b)).toEqual(seqs)
          expect(chain.lastSeq).toBeLessThanOrEqual(24)
        } finally {
          restoreFiles()
        }
      }),
      { numRuns: RUNS, seed: 1315 }
    )
    // The corpus reaches both outcomes: whole chains (a damaged index is scanned past, a torn
    // tail ignored) and chains that stop at damage (read mode reports it rather than throwing).
    expect(seen.chains).toBeGreaterThan(0)
    expect(seen.damaged).toBeGreaterThan(0)
  })
})

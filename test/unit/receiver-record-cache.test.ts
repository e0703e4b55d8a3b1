/**
 * Issue 17 (session 11): the point readers' record cache (`recordCache.ts`) reads records into
 * buffers used again. Many reads at once, through a cache shrunk to one to three records (so
 * nearly every read evicts one while others are still reading or copying), through the mount's
 * reader and the eager one, each equal the model image: a buffer a read is using is never read
 * into for another record. Mutant caught: a cache that reuses a slot in use
 * (`recordCacheReusesPinned`). A damaged record fails every read waiting for it and is not kept.
 */
import * as fsp from "node:fs/promises"
import * as path from "node:path"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { openChain } from "../../src/receiver/internal/chain.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import { RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import { openLazyPointReader } from "../../src/receiver/internal/lazyPoint.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import { openPointMap, openPointReader } from "../../src/receiver/internal/point.js"
import { recordCacheTuning, recordPayloads } from "../../src/receiver/internal/recordCache.js"
import { flipByte, imageAt, makeChanges, readMetaFile, writeDisk } from "../support/receiverDisk.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-record-cache-", "each")
const geometry = { blockSize: 4096, blockCount: 8 }
const diskBytes = geometry.blockSize * geometry.blockCount
const defaultRecords = recordCacheTuning.records

afterEach(() => {
  ReceiverMutants.recordCacheReusesPinned = false
  recordCacheTuning.records = defaultRecords
})

interface Case {
  readonly seed: number
  readonly count: number
  readonly at: number
  readonly cache: number
  readonly eager: boolean
  /** Batches of reads issued together. */
  readonly batches: ReadonlyArray<ReadonlyArray<{ readonly offset: number; readonly length: number }>>
}

const arbitraryCase: fc.Arbitrary<Case> = fc.record({
  seed: fc.integer({ min: 1, max: 1 << 30 }),
  count: fc.integer({ min: 10, max: 50 }),
  at: fc.double({ min: 0.5, max: 1, noNaN: true }),
  cache: fc.integer({ min: 1, max: 3 }),
  eager: fc.boolean(),
  batches: fc.array(
    fc.array(
      fc.record({
        offset: fc.integer({ min: 0, max: diskBytes - 1 }),
        length: fc.oneof(fc.integer({ min: 1, max: 600 }), fc.constantFrom(4095, 4096, 4097))
      }),
      { minLength: 2, maxLength: 16 }
    ),
    { minLength: 1, maxLength: 4 }
  )
})

const property = fc.asyncProperty(arbitraryCase, async (c) => {
  recordCacheTuning.records = c.cache
  const changes = makeChanges(geometry, c.count, { seed: c.seed, limit: 16_000 })
  const { diskDir, lastSeq } = await writeDisk(tempDir(), "vm", geometry, changes, { segmentBytes: 20_000 })
  const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
  const seq = Math.max(1, Math.round(c.at * lastSeq))
  const expected = imageAt(geometry, changes, seq)
  const reader = c.eager
    ? await openPointReader(await openPointMap(chain, seq, false))
    : await openLazyPointReader(chain, seq, false, () => undefined)
  if (reader === undefined) throw new Error("no fold runs here")
  try {
    for (const batch of c.batches) {
      const got = await Promise.all(
        batch.map(async (r) => {
          const length = Math.min(r.length, diskBytes - r.offset)
          return { r, length, bytes: Buffer.from(await reader.read(r.offset, length)) }
        })
      )
      for (const { r, length, bytes } of got)
        expect(
          bytes.equals(expected.subarray(r.offset, r.offset + length)),
          `bytes ${r.offset}+${length}`
        ).toBe(true)
    }
  } finally {
    await reader.close()
  }
})

describe("the point readers' record cache: buffers used again, never while in use (issue 17)", () => {
  it("many reads at once through a cache of one to three records equal the model image", async () => {
    await fc.assert(property, { numRuns: 30 })
  }, 120_000)

  it("catches a cache that reads into a buffer a read is still using (mutant)", async () => {
    ReceiverMutants.recordCacheReusesPinned = true
    const result = await fc.check(property, { numRuns: 30, seed: 11, endOnFailure: true })
    expect(result.failed).toBe(true)
  }, 120_000)

  it("a damaged record fails every read waiting for it, is not kept, and other reads go on", async () => {
    const changes = makeChanges(geometry, 30, { seed: 5, limit: 12_000 })
    const { diskDir, lastSeq } = await writeDisk(tempDir(), "vm", geometry, changes, { segmentBytes: 20_000 })
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const reader = (await openLazyPointReader(chain, lastSeq, false, () => undefined))!
    try {
      const last = changes.at(-1)!
      const segment = chain.segments.find(
        (s) => s.firstSeq <= last.record.seq && last.record.seq <= s.lastSeq
      )!
      const entry = segment.entries!.find((e) => e.seq === last.record.seq)!
      const file = path.join(diskDir, segment.name)
      flipByte(file, entry.offset + RECORD_HEADER_BYTES + 1)
      const failed = (p: Promise<unknown>) =>
        p.then(
          () => undefined,
          (e: unknown) => e
        )
      // Two reads of the record at once: both refused, naming the record's file and byte.
      const [a, b] = await Promise.all([
        failed(reader.read(last.offset, 1)),
        failed(reader.read(last.offset, 1))
      ])
      for (const e of [a, b]) {
        expect(e).toBeInstanceOf(LogCorrupt)
        expect(e).toMatchObject({ file, offset: entry.offset })
      }
      // Repaired, it is read again (nothing of the failed read was kept) and served.
      flipByte(file, entry.offset + RECORD_HEADER_BYTES + 1)
      const expected = imageAt(geometry, changes, lastSeq)
      expect(
        Buffer.from(await reader.read(last.offset, 1)).equals(expected.subarray(last.offset, last.offset + 1))
      ).toBe(true)
      expect(Buffer.from(await reader.read(0, diskBytes)).equals(expected)).toBe(true)
    } finally {
      await reader.close()
    }
  })

  it("holds more records than its size only while they are in use at once, and shrinks back after", async () => {
    recordCacheTuning.records = 2
    const changes = makeChanges(geometry, 40, { seed: 9, limit: 8000 })
    const { diskDir } = await writeDisk(tempDir(), "vm", geometry, changes, { segmentBytes: 1 << 20 })
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const segment = chain.segments[0]!
    const handle = await fsp.open(path.join(diskDir, segment.name), "r")
    try {
      const payload = recordPayloads(chain, new Map([[0, handle]]))
      const entries = segment.entries!.filter((e) => e.length > 0).slice(0, 13)
      const at = (e: (typeof entries)[number]) => e.offset + RECORD_HEADER_BYTES
      // Twelve records in use at once: each is kept while its read uses it.
      let peak = 0
      await Promise.all(
        entries.slice(0, 12).map((e) =>
          payload(0, e.seq, at(e), () => {
            peak = Math.max(peak, payload.kept())
          })
        )
      )
      expect(peak).toBeGreaterThan(2)
      // The next record read frees what is no longer in use.
      await payload(0, entries[12]!.seq, at(entries[12]!), () => undefined)
      expect(payload.kept()).toBeLessThanOrEqual(2)
    } finally {
      await handle.close()
    }
  })
})

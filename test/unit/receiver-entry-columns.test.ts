/**
 * The writer's active segment keeps its records as growing columns until its seal
 * (`keepEntriesAsColumns`, issue 19 session 12): `entries` must give back exactly the
 * records appended, in order, across every growth of the columns, and the index a seal
 * encodes from them must be the one encoded from the objects.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { GrowingEntryTable } from "../../src/receiver/internal/entryTable.js"
import { encodeIndex, type IndexEntry, Kind } from "../../src/receiver/internal/format.js"
import {
  appendEntry,
  emptySegment,
  entryColumns,
  keepEntriesAsColumns
} from "../../src/receiver/internal/segmentSummary.js"

const entry: fc.Arbitrary<Omit<IndexEntry, "seq" | "offset">> = fc.record({
  position: fc.maxSafeNat(),
  time: fc.maxSafeNat(),
  length: fc.nat({ max: 0xffff_ffff }),
  epoch: fc.nat({ max: 0xffff_ffff }),
  crc: fc.nat({ max: 0xffff_ffff }),
  kind: fc.constantFrom(Kind.Write, Kind.Block, Kind.ResyncBegin, Kind.ResyncEnd),
  flags: fc.nat({ max: 3 })
})
/** Counts around the columns' growths (256, 512, 1024). */
const entries = fc.tuple(fc.constantFrom(0, 1, 255, 256, 257, 511, 512, 513, 1100), entry).map(([n, e]) =>
  Array.from(
    { length: n },
    (_, i): IndexEntry => ({
      ...e,
      seq: i + 1,
      offset: 32 + i * 4136,
      time: (e.time + i) % Number.MAX_SAFE_INTEGER,
      crc: (e.crc + i * 7919) >>> 0
    })
  )
)

describe("the active segment's entries as columns", () => {
  it("give back every record appended, in order, and the same index", () => {
    fc.assert(
      fc.property(entries, fc.nat({ max: 300 }), (all, before) => {
        const segment = emptySegment("0000000000000001.seg", 1, 0, true)
        // A recovered tail arrives with objects: they are kept, then the columns take over.
        const kept = Math.min(before, all.length)
        segment.entries = all.slice(0, kept)
        keepEntriesAsColumns(segment)
        for (const e of all.slice(kept)) appendEntry(segment, e)
        expect(segment.entries).toEqual(all)
        expect(Buffer.compare(encodeIndex(1 << 20, segment.entries!), encodeIndex(1 << 20, all))).toBe(0)
        // What the seal encodes: the columns themselves.
        expect(Buffer.compare(encodeIndex(1 << 20, entryColumns(segment)), encodeIndex(1 << 20, all))).toBe(0)
        // The seal clears them; the columns are dropped.
        segment.entries = undefined
        expect(segment.entries).toBeUndefined()
      }),
      { numRuns: 40 }
    )
  })

  it("a table grows past each capacity without losing a row", () => {
    const t = new GrowingEntryTable()
    const rows: Array<IndexEntry> = []
    for (let i = 0; i < 2000; i++) {
      const e: IndexEntry = {
        offset: i * 40,
        seq: i + 1,
        position: i * 4096,
        time: 1_700_000_000_000 + i,
        length: i,
        epoch: i % 3,
        crc: (i * 2654435761) >>> 0,
        kind: Kind.Write,
        flags: i % 4
      }
      rows.push(e)
      t.push(e)
    }
    expect(t.count).toBe(2000)
    expect(t.toEntries()).toEqual(rows)
  })
})

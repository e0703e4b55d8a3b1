import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { type Lease, makeSlabPool } from "../../src/internal/slab.js"

describe("the slab pool of guest-data copies", () => {
  it("a live copy keeps its bytes whatever is copied and released around it; freed slabs are reused", () => {
    // Each step copies a buffer of a drawn size and fill, or releases a drawn live copy.
    const step = fc.oneof(
      fc.record({ copy: fc.integer({ min: 1, max: 3000 }), fill: fc.integer({ min: 1, max: 255 }) }),
      fc.record({ release: fc.nat() })
    )
    fc.assert(
      fc.property(fc.array(step, { maxLength: 300 }), (steps) => {
        const pool = makeSlabPool({ slabBytes: 8192, largest: 2048, keep: 2 })
        const live: Array<{ lease: Lease; fill: number; length: number }> = []
        for (const s of steps) {
          if ("copy" in s) {
            const lease = pool.copy(new Uint8Array(s.copy).fill(s.fill))
            live.push({ lease, fill: s.fill, length: s.copy })
          } else if (live.length > 0) {
            const [gone] = live.splice(s.release % live.length, 1)
            gone!.lease.release()
            gone!.lease.release() // idempotent
          }
          for (const l of live) {
            expect(l.lease.bytes.length).toBe(l.length)
            expect(l.lease.bytes.every((b) => b === l.fill)).toBe(true)
          }
          expect(pool.freeSlabs()).toBeLessThanOrEqual(2)
        }
      }),
      { numRuns: 200 }
    )
  })

  it("a full slab whose copies are all released goes back to the pool and is carved again", () => {
    const pool = makeSlabPool({ slabBytes: 4096, largest: 4096, keep: 4 })
    const first = [pool.copy(new Uint8Array(2048).fill(1)), pool.copy(new Uint8Array(2048).fill(2))]
    const third = pool.copy(new Uint8Array(2048).fill(3)) // the first slab is full now
    expect(pool.freeSlabs()).toBe(0)
    for (const l of first) l.release()
    expect(pool.freeSlabs()).toBe(1)
    const fourth = pool.copy(new Uint8Array(2048).fill(4)) // still room in the second slab
    const fifth = pool.copy(new Uint8Array(2048).fill(5)) // the first slab again
    expect(fifth.bytes.buffer).toBe(first[0]!.bytes.buffer)
    expect(third.bytes.every((b) => b === 3) && fourth.bytes.every((b) => b === 4)).toBe(true)
  })
})

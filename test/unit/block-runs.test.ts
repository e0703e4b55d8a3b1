import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { blockRuns } from "../../src/internal/blockRuns.js"

const ascending = fc
  .uniqueArray(fc.integer({ min: 0, max: 200 }), { maxLength: 120 })
  .map((xs) => xs.sort((a, b) => a - b))

describe("blockRuns", () => {
  it("splits ascending blocks into maximal runs of consecutive blocks, each at most `most` long", () => {
    fc.assert(
      fc.property(ascending, fc.integer({ min: 1, max: 20 }), (blocks, most) => {
        const runs = blockRuns(blocks, most)
        // Every block once, in order.
        expect(runs.flatMap(([first, count]) => Array.from({ length: count }, (_, i) => first + i))).toEqual(
          blocks
        )
        for (const [, count] of runs) expect(count).toBeGreaterThanOrEqual(1)
        for (const [, count] of runs) expect(count).toBeLessThanOrEqual(most)
        // Maximal: a run ends at a gap or at `most`.
        for (let i = 1; i < runs.length; i++) {
          const [first, count] = runs[i - 1]!
          if (runs[i]![0] === first + count) expect(count).toBe(most)
        }
      })
    )
  })

  it("cuts a long run at `most` and keeps scattered blocks apart", () => {
    expect(blockRuns([0, 1, 2, 3, 4], 2)).toEqual([
      [0, 2],
      [2, 2],
      [4, 1]
    ])
    expect(blockRuns([1, 3, 4, 9], 8)).toEqual([
      [1, 1],
      [3, 2],
      [9, 1]
    ])
    expect(blockRuns([], 4)).toEqual([])
  })
})

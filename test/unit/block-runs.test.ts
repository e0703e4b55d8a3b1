import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { verifyReport } from "../../src/cli/internal/control.js"
import { blockRuns } from "../../src/internal/blockRuns.js"
import { MAX_VERIFY_RANGES } from "../../src/internal/controlProtocol.js"

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

describe("a verify report's ranges", () => {
  const result = (differing: ReadonlyArray<number>) => ({
    blocks: 10_000,
    verified: 10_000,
    differing,
    rechecked: 0,
    unverified: 0,
    resync: false,
    seconds: 1,
    bytesPerSecond: 1,
    algorithm: "sha256" as const
  })
  const where = { diskId: "vm1", blockSize: 4096 }

  it("are the runs of differing blocks, however long", () => {
    const report = verifyReport(result([3, 4, 5, 9, 100, 101]), where)
    expect(report.ranges).toEqual([
      { first: 3, count: 3 },
      { first: 9, count: 1 },
      { first: 100, count: 2 }
    ])
    expect(report).toMatchObject({ differing: 6, rangesOmitted: 0 })
  })

  it(`list at most ${MAX_VERIFY_RANGES} and count the rest`, () => {
    const scattered = Array.from({ length: MAX_VERIFY_RANGES + 7 }, (_, i) => i * 2)
    const report = verifyReport(result(scattered), where)
    expect(report.ranges).toHaveLength(MAX_VERIFY_RANGES)
    expect(report.ranges.at(-1)).toEqual({ first: (MAX_VERIFY_RANGES - 1) * 2, count: 1 })
    expect(report).toMatchObject({ differing: MAX_VERIFY_RANGES + 7, rangesOmitted: 7 })
  })
})

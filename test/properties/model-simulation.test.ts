/**
 * `ModelSimulation` with checksum-based resync: random runs of the model with faults
 * (link cuts, dropped records, receiver restarts and rollbacks) where pumps compare
 * blocks and the workload zeroes whole blocks now and then. Every invariant holds as it
 * goes and the healed replica equals the disk, block for block.
 */
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import * as ModelSimulation from "../../src/simulator/ModelSimulation.js"

const options = (compareFrom: number | undefined, seed: number): ModelSimulation.Options => ({
  ...ModelSimulation.defaults,
  steps: 20_000,
  blockCount: 64,
  blockSize: 4096,
  window: 8,
  congestionLimit: 16 * 1024,
  faults: "chaos",
  seed,
  compareFrom
})

describe("ModelSimulation with comparisons", () => {
  it.each([1, 8])(
    "compareFrom %i: comparisons match and mismatch, every invariant holds, the healed replica equals the disk",
    (compareFrom) => {
      for (const seed of [1, 2]) {
        const report = Effect.runSync(ModelSimulation.run(options(compareFrom, seed)))
        expect(report.failure).toBeUndefined()
        expect(report.verdict).toBe("match")
        expect(report.finalMode).toBe("sync")
        expect(report.compared).toBeGreaterThan(100)
        expect(report.matched).toBeGreaterThan(10)
        expect(report.matched).toBeLessThan(report.compared)
        expect(report.faults).toBeGreaterThan(10)
      }
    },
    60_000
  )

  it("without compareFrom nothing is compared (the version 1 model)", () => {
    const report = Effect.runSync(ModelSimulation.run(options(undefined, 1)))
    expect(report.failure).toBeUndefined()
    expect(report.verdict).toBe("match")
    expect(report.compared).toBe(0)
  }, 60_000)
})

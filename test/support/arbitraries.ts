/**
 * fast-check 4 generators for the model: configurations and world steps with
 * faults (link loss, ack stalls, gaps, congestion, receiver restarts and rollbacks).
 */
import fc from "fast-check"
import type { Config } from "../../src/domain/Config.js"
import type { Step } from "../../src/domain/Simulation.js"

/** Runs per property: 200 by default, `CDP_SYNC_RUNS_FACTOR`× more on demand. */
export const numRuns = (base = 200): number =>
  Math.round(base * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1))

export const config: fc.Arbitrary<Config> = fc.record({
  blockSize: fc.constantFrom(4096, 8192),
  blockCount: fc.integer({ min: 1, max: 40 }),
  window: fc.integer({ min: 1, max: 6 }),
  // Small limits make congestion pull-ahead common; large ones leave it rare.
  congestionLimit: fc.constantFrom(4096, 8192, 16384, 65536, 1 << 20),
  initial: fc.constantFrom("in-sync" as const, "full-sync" as const)
})

/** A raw write: positions are reduced modulo the disk when the config is known. */
export interface RawWrite {
  readonly _tag: "RawWrite"
  readonly at: number
  readonly sectors: number
}

export type RawStep = Step | RawWrite

export const rawStep: fc.Arbitrary<RawStep> = fc.oneof(
  {
    weight: 30,
    arbitrary: fc.record({
      _tag: fc.constant("RawWrite" as const),
      at: fc.nat(),
      sectors: fc.integer({ min: 1, max: 40 })
    })
  },
  {
    weight: 12,
    arbitrary: fc.record({ _tag: fc.constant("Pump" as const), budget: fc.integer({ min: 1, max: 8 }) })
  },
  { weight: 14, arbitrary: fc.constant({ _tag: "Send" as const }) },
  { weight: 10, arbitrary: fc.constant({ _tag: "Read" as const }) },
  { weight: 8, arbitrary: fc.constant({ _tag: "Flush" as const }) },
  { weight: 12, arbitrary: fc.constant({ _tag: "Deliver" as const }) },
  {
    weight: 3,
    arbitrary: fc.record({
      _tag: fc.constant("Cut" as const),
      reason: fc.constantFrom("connection-lost" as const, "ack-timeout" as const)
    })
  },
  { weight: 4, arbitrary: fc.constant({ _tag: "Reconnect" as const }) },
  { weight: 3, arbitrary: fc.constant({ _tag: "Drop" as const }) },
  {
    weight: 3,
    arbitrary: fc.record({
      _tag: fc.constant("Restart" as const),
      lose: fc.boolean(),
      rollback: fc.option(fc.nat({ max: 7 }), { nil: undefined })
    })
  }
)

/** Places a raw write on the disk: sector-aligned, inside the disk, 512 B … 20 KiB. */
export const place = (config: Config, step: RawStep): Step => {
  if (step._tag !== "RawWrite") return step
  const sectors = (config.blockSize * config.blockCount) / 512
  const first = step.at % sectors
  const count = Math.min(step.sectors, sectors - first)
  return { _tag: "Write", offset: first * 512, length: count * 512 }
}

export const scenario = fc.record({ config, steps: fc.array(rawStep, { maxLength: 160, size: "max" }) })
export type Scenario = typeof scenario extends fc.Arbitrary<infer A> ? A : never

export const stepsOf = (s: Scenario): Array<Step> => s.steps.map((step) => place(s.config, step))

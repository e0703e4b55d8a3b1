/**
 * fast-check 4 generators for the simulated world: configurations and steps with
 * faults (link loss, ack stalls, gaps, congestion, receiver restarts and rollbacks).
 * Shared by the conformance kit and the property tests.
 */
import fc from "fast-check"
import type { Config } from "../../domain/Config.js"
import type { Step } from "../Simulation.js"

/** Small disks and windows: every rule is reached within a few dozen steps. */
export const config: fc.Arbitrary<Config> = fc.record({
  blockSize: fc.constantFrom(4096, 8192),
  blockCount: fc.integer({ min: 1, max: 40 }),
  window: fc.integer({ min: 1, max: 6 }),
  // Small limits make congestion pull-ahead common; large ones leave it rare.
  congestionLimit: fc.constantFrom(4096, 8192, 16384, 65536, 1 << 20),
  initial: fc.constantFrom("in-sync" as const, "full-sync" as const)
})

/** A raw write: positions are reduced modulo the disk once the config is known (so shrinking stays valid). */
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

export interface Scenario {
  readonly config: Config
  readonly steps: ReadonlyArray<RawStep>
}

/** A configuration and up to `maxSteps` steps (writes, pumps, wire and receiver moves, faults). */
export const scenarioOf = (
  options: { readonly config?: fc.Arbitrary<Config>; readonly maxSteps?: number } = {}
): fc.Arbitrary<Scenario> =>
  fc.record({
    config: options.config ?? config,
    steps: fc.array(rawStep, { maxLength: options.maxSteps ?? 160, size: "max" })
  })

export const scenario: fc.Arbitrary<Scenario> = scenarioOf()

export const stepsOf = (s: Scenario): Array<Step> => s.steps.map((step) => place(s.config, step))

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

/** A raw zeroing of whole blocks (WRITE_ZEROES): placed like a raw write, block aligned. */
export interface RawZero {
  readonly _tag: "RawZero"
  readonly at: number
  readonly blocks: number
}

/**
 * One round of the program's service loop, as `Simulation.workload` runs it: a pump,
 * then `records` times read-read-send, then as many deliveries; no flush (a comparison is
 * answered while the records before it are received but not durable).
 */
export interface RawRound {
  readonly _tag: "RawRound"
  readonly budget: number
  readonly records: number
}

export type RawStep = Step | RawWrite | RawZero

/** A step of a comparing scenario: a raw step or a whole service round. */
export type RawComparingStep = RawStep | RawRound

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
  if (step._tag === "RawZero") {
    const first = step.at % config.blockCount
    const count = Math.min(step.blocks, config.blockCount - first)
    return { _tag: "Zero", offset: first * config.blockSize, length: count * config.blockSize }
  }
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

// ---------------------------------------------------------------------------
// Checksum-based resync (trace version 2): the version 1 generators above are unchanged,
// so every version 1 scenario, seed and counterexample stays what it was.

/**
 * Steps for comparisons: the same moves, plus whole blocks zeroed (a block's content
 * comes back, so a stale or misplaced checksum can match), rarer flushes, on few blocks
 * so writes race the comparisons of the blocks they touch.
 */
export const rawComparingStep: fc.Arbitrary<RawComparingStep> = fc.oneof(
  {
    weight: 20,
    arbitrary: fc.record({
      _tag: fc.constant("RawWrite" as const),
      at: fc.nat(),
      sectors: fc.integer({ min: 1, max: 24 })
    })
  },
  {
    weight: 10,
    arbitrary: fc.record({
      _tag: fc.constant("RawZero" as const),
      at: fc.nat(),
      blocks: fc.integer({ min: 1, max: 3 })
    })
  },
  {
    weight: 12,
    arbitrary: fc.record({ _tag: fc.constant("Pump" as const), budget: fc.integer({ min: 1, max: 8 }) })
  },
  {
    weight: 8,
    arbitrary: fc.record({
      _tag: fc.constant("RawRound" as const),
      budget: fc.integer({ min: 1, max: 6 }),
      records: fc.integer({ min: 1, max: 4 })
    })
  },
  { weight: 14, arbitrary: fc.constant({ _tag: "Send" as const }) },
  { weight: 12, arbitrary: fc.constant({ _tag: "Read" as const }) },
  // Rare flushes: records stay received-but-not-durable while comparisons are answered.
  { weight: 4, arbitrary: fc.constant({ _tag: "Flush" as const }) },
  { weight: 14, arbitrary: fc.constant({ _tag: "Deliver" as const }) },
  {
    weight: 2,
    arbitrary: fc.record({
      _tag: fc.constant("Cut" as const),
      reason: fc.constantFrom("connection-lost" as const, "ack-timeout" as const)
    })
  },
  { weight: 3, arbitrary: fc.constant({ _tag: "Reconnect" as const }) },
  { weight: 2, arbitrary: fc.constant({ _tag: "Drop" as const }) },
  {
    weight: 3,
    arbitrary: fc.record({
      _tag: fc.constant("Restart" as const),
      lose: fc.boolean(),
      rollback: fc.option(fc.nat({ max: 7 }), { nil: undefined })
    })
  }
)

/** A version 2 scenario: a config, when to compare (`compareFrom`), and the steps. */
export interface ComparingScenario {
  readonly config: Config
  /** Pumps compare while at least this many blocks are owed (1: every block is compared). */
  readonly compareFrom: number
  /** Compare in runs of at most this many blocks (trace version 3); absent: block by block. */
  readonly compareRun?: number
  readonly steps: ReadonlyArray<RawComparingStep>
}

export const comparingScenarioOf = (
  options: { readonly config?: fc.Arbitrary<Config>; readonly maxSteps?: number } = {}
): fc.Arbitrary<ComparingScenario> =>
  fc.record({
    config:
      options.config ??
      fc.record({
        blockSize: fc.constantFrom(4096, 8192),
        blockCount: fc.integer({ min: 1, max: 8 }),
        window: fc.integer({ min: 1, max: 6 }),
        congestionLimit: fc.constantFrom(4096, 8192, 16384, 65536),
        initial: fc.constantFrom("in-sync" as const, "full-sync" as const)
      }),
    compareFrom: fc.constantFrom(1, 1, 2, 4),
    steps: fc.array(rawComparingStep, { maxLength: options.maxSteps ?? 160, size: "max" })
  })

export const comparingScenario: fc.Arbitrary<ComparingScenario> = comparingScenarioOf()

/** A version 3 scenario: as `comparingScenarioOf`, comparing in runs of 1 to 4 blocks. */
export const runScenarioOf = (
  options: { readonly config?: fc.Arbitrary<Config>; readonly maxSteps?: number } = {}
): fc.Arbitrary<ComparingScenario> =>
  fc
    .tuple(comparingScenarioOf(options), fc.integer({ min: 1, max: 4 }))
    .map(([s, compareRun]) => ({ ...s, compareRun }))

export const runScenario: fc.Arbitrary<ComparingScenario> = runScenarioOf()

export const stepsOf = (s: Scenario | ComparingScenario): Array<Step> =>
  s.steps.flatMap((step: RawComparingStep) =>
    step._tag === "RawRound" ? roundOf(step) : [place(s.config, step)]
  )

const roundOf = (round: RawRound): Array<Step> => {
  const steps: Array<Step> = [{ _tag: "Pump", budget: round.budget }]
  for (let k = 0; k < round.records; k++) steps.push({ _tag: "Read" }, { _tag: "Read" }, { _tag: "Send" })
  for (let k = 0; k < round.records; k++) steps.push({ _tag: "Deliver" })
  return steps
}

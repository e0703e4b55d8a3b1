/**
 * The invariant properties of design §4 as functions of the filter under test, so
 * the same property runs against the reference filter (must hold) and against
 * each mutant (must be caught).
 */
import fc from "fast-check"
import { runIn, type Variant } from "../../src/conformance/internal/mutants.js"
import { type Filter, type InvariantName, run, type World } from "../../src/conformance/Simulation.js"
import {
  type ComparingScenario,
  comparingScenario,
  runScenario,
  type Scenario,
  scenario,
  stepsOf
} from "./arbitraries.js"

const describeFailure = <S>(world: World<S>): string => {
  const f = world.failure!
  return `${world.filter.name}: ${f.invariant} broken at step ${f.step}: ${f.detail}`
}

/** A property: running the scenario and healing the world breaks none of `invariants`. */
export const invariantHolds = <S>(filter: Filter<S>, invariants: ReadonlyArray<InvariantName>) =>
  fc.property(scenario, (s: Scenario) => {
    const world = run(s.config, filter, stepsOf(s), { checks: invariants, recordEvents: false })
    if (world.failure !== undefined) throw new Error(describeFailure(world))
  })

/**
 * The same with checksum-based resync (trace version 2): pumps compare, the steps zero
 * whole blocks too, and the world may be a broken `variant` of the program or receiver.
 */
export const comparingInvariantHolds = <S>(
  filter: Filter<S>,
  invariants: ReadonlyArray<InvariantName>,
  variant?: Variant,
  /** Compare in runs (trace version 3) instead of block by block. */
  runs = false
) =>
  fc.property(runs ? runScenario : comparingScenario, (s: ComparingScenario) => {
    const options = {
      checks: invariants,
      recordEvents: false,
      compareFrom: s.compareFrom,
      ...(s.compareRun === undefined ? {} : { compareRun: s.compareRun })
    }
    const steps = stepsOf(s)
    const world =
      variant === undefined
        ? run(s.config, filter, steps, options)
        : runIn(variant, s.config, filter, steps, options)
    if (world.failure !== undefined)
      throw new Error(`${variant === undefined ? "" : `(${variant} world) `}${describeFailure(world)}`)
  })

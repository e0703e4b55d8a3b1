/**
 * The invariant properties of design §4 as functions of the filter under test, so
 * the same property runs against the reference filter (must hold) and against
 * each mutant (must be caught).
 */
import fc from "fast-check"
import { type Filter, type InvariantName, run, type World } from "../../src/conformance/Simulation.js"
import { type Scenario, scenario, stepsOf } from "./arbitraries.js"

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

/**
 * fast-check 4 generators for the model: the conformance kit's scenarios (configs
 * and world steps with faults), shared with the property suite.
 */
export * from "../../src/conformance/internal/arbitraries.js"

/** Runs per property: 200 by default, `CDP_SYNC_RUNS_FACTOR`× more on demand. */
export const numRuns = (base = 200): number =>
  Math.round(base * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1))

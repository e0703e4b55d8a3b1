/**
 * The simulators: `Simulate` (a real disk image, the log receiver as a child process and
 * injected faults, ending with a verdict), the guest `Workload` driver, and
 * `ModelSimulation` (the pure model alone against the simulated receiver).
 */
export * as ModelSimulation from "./ModelSimulation.js"
export * as Simulate from "./Simulate.js"
export * as Workload from "./Workload.js"

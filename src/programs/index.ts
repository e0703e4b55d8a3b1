/**
 * cdp-sync's programs for embedding: the replicator (the filter), its guest
 * workload driver, trace checking and the simulations.
 */
export * as CheckTrace from "./CheckTrace.js"
export * as IoScheduler from "./IoScheduler.js"
export * as ModelSimulation from "./ModelSimulation.js"
export * as Replicator from "../replicator/Replicator.js"
export * as Simulate from "./Simulate.js"
export * as Workload from "./Workload.js"

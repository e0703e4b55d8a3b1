/**
 * cdp-sync's programs for embedding: the replicator (the filter), its guest
 * workload driver, trace checking and the simulations.
 */
export * as CheckTrace from "../conformance/CheckTrace.js"
export * as IoScheduler from "../internal/IoScheduler.js"
export * as ModelSimulation from "../simulator/ModelSimulation.js"
export * as Replicator from "./Replicator.js"
export * as Simulate from "../simulator/Simulate.js"
export * as Workload from "../simulator/Workload.js"

/**
 * The filter for embedding (docs/replicator.md): the `Replicator` service, its options,
 * errors, status and layers, and the I/O scheduler its fibers run on by default.
 */
export * as IoScheduler from "../internal/IoScheduler.js"
export * as Replicator from "./Replicator.js"

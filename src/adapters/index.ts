/**
 * The ports through which cdp-sync's programs touch the world, each with an
 * in-memory layer for fast tests and a real one (file / TCP); and `Metrics`, which
 * exports the process's metrics to OpenTelemetry and Prometheus.
 */
export * as ActivityLog from "./ActivityLog.js"
export * as EventJournal from "./EventJournal.js"
export * as LogReceiver from "./LogReceiver.js"
export * as Metrics from "./Metrics.js"
export * as VirtualDisk from "./VirtualDisk.js"

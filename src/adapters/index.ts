/**
 * The ports through which cdp-sync's programs touch the world, each with an
 * in-memory layer for fast tests and a real one (file / TCP).
 */
export * as ActivityLog from "./ActivityLog.js"
export * as EventJournal from "./EventJournal.js"
export * as LogReceiver from "./LogReceiver.js"
export * as VirtualDisk from "./VirtualDisk.js"

/**
 * cdp-sync: continuous data protection for a virtual machine's disk.
 * The pure core lives in `cdp-sync/domain`; this entry re-exports it.
 */
export * from "./domain/index.js"

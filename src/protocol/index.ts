/**
 * The wire between the filter and the log receiver (design §6, docs/wire.md): frames,
 * their codec and its typed errors, shared by both ends.
 */
export * as Wire from "./Wire.js"

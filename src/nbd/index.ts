/**
 * The NBD front end (docs/nbd.md): `Nbd.serve` exports the protected disk to guests
 * through the replicator; `Nbd.serveMount` serves a recovery point of a receiver directory
 * (`cdp-sync mount`); `Nbd.connect` is a small client for the same protocol.
 */
export * as Nbd from "./Nbd.js"

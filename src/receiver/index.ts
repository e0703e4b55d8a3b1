/**
 * The log receiver for embedding (docs/receiver.md): the service, the reading side
 * (`points`, `restore`, `mount`, `verify`, `scrub`, `blockDigests`) and the retention policy.
 * Everything the `cdp-sync receiver`, `points`, `restore` and `mount` commands do is reachable from here.
 */
export * as Checksums from "./Checksums.js"
export * as LogStore from "./LogStore.js"
export * as Mount from "./Mount.js"
export * as ReceiverService from "./ReceiverService.js"
export * as Restore from "./Restore.js"
export * as Retention from "./Retention.js"
export * as Scrub from "./Scrub.js"
export * as Verify from "./Verify.js"
export {
  DiskNotFound,
  HelloRefused,
  InvalidOption,
  LogCorrupt,
  LogIoError,
  NotARecoveryPoint,
  PointBeyondDamage,
  ReceiverLocked
} from "./internal/errors.js"
export { blockDigests } from "./Checksums.js"
export { points, restore } from "./Restore.js"
export { scrub } from "./Scrub.js"
export { verify } from "./Verify.js"

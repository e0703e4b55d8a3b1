/**
 * ActivityLog: which extents of the disk may hold guest writes the event journal
 * lacks (a DRBD-style activity log). The filter writes to the disk before it
 * journals, so after a crash some disk writes may be missing from the journal; with
 * this log only the extents recorded active need a resync, not the whole disk.
 *
 * The disk is divided into extents of `extentBytes` (default 4 MiB). Before a guest
 * write touches an extent, the caller commits it active; once every write to it is
 * in the journal, the caller retires it. Reopening tells which extents were active.
 *
 * Guarantees of every layer:
 * - `commit(activate, retire)` is one transaction, durable when it returns; commits
 *   are serialized. Activating an active extent or retiring an inactive one is
 *   allowed. A commit that leaves the set as it is writes nothing.
 * - Requests are checked before anything is written: an extent must be an integer
 *   `0 … 2^32 − 1` (the format stores u32) and may not be in both lists, else
 *   `ActivityLogInvalidRequest`. A failed write fails with `ActivityLogIoError` and
 *   leaves the previous durable set readable (and `active` unchanged).
 * - `recovered` is the set of the last durable commit (or, after a torn commit, the
 *   one before it), widened to the configured extent size when it was stored with
 *   another; `Option.none()` when the log exists but no copy of it can be read: then
 *   any extent may be dirty. `active` starts as `recovered` (empty after `none`: the
 *   next commit writes a fresh set, so the caller must have dealt with `none`
 *   — e.g. scheduled a full resync it tracks elsewhere — before it commits).
 * - `extentBytes` must be a positive multiple of 512 (at most 0xffff_fe00): anything
 *   else is a programming error and the layer dies with a message saying so.
 *
 * Format (both layers; the memory layer keeps the same bytes): two slots, `activity.0`
 * and `activity.1`, each, little-endian,
 * `[8 bytes "CDPSAL01"][u32 CRC32C of every byte after this field][u32 extentBytes]
 *  [f64 seq, a positive safe integer][u32 count][count × u32 extent, strictly ascending]`.
 * Each commit rewrites the whole set, seq one higher, into the slot the previous
 * commit did not use (a damaged or absent slot first), so a torn write can only damage
 * the slot being written while the other holds the previous durable set. The file
 * layer writes a slot with pwrite at 0, ftruncate when the file was longer, and
 * fdatasync, and fsyncs the directory when it creates a slot file.
 *
 * Opening reads both slots. A slot is valid when its magic, length, CRC, order, seq and
 * extentBytes check out; the valid slot with the highest seq wins. Neither slot
 * present is a fresh log (`some([])`); slots present but none valid is `none`, logged
 * as a warning naming each slot and why it was refused; one valid and one damaged
 * uses the valid one (logged at info). A damaged slot is never deleted or repaired at
 * open: the next commit overwrites it. A stored extent `s` of size `S` covers bytes
 * `[s·S, (s+1)·S)`; reopened with another size, the set is every extent of the new size
 * overlapping those bytes. A set that cannot be represented at the new size (an extent
 * beyond 2^32 − 1, or more than 2^24 extents) recovers as `none`.
 *
 * One process owns a log directory at a time.
 *
 * @since 0.1.0
 */
import { Context, type Effect, Layer, type Option, type Scope } from "effect"
import type { ActivityLogError, ActivityLogIoError } from "./internal/activityLog.js"
import * as activityLogFile from "./internal/activityLogFile.js"
import * as activityLogMemory from "./internal/activityLogMemory.js"

export {
  ActivityLogInvalidRequest,
  ActivityLogIoError,
  type ActivityLogError,
  DEFAULT_EXTENT_BYTES,
  HEADER_BYTES,
  MAX_EXTENT,
  MAX_EXTENT_BYTES
} from "./internal/activityLog.js"
export { SLOT_FILES } from "./internal/activityLogFile.js"

export class ActivityLog extends Context.Tag("cdp-sync/ActivityLog")<ActivityLog, ActivityLog.Service>() {}

export declare namespace ActivityLog {
  interface Service {
    /** Bytes per extent, fixed when the layer is made (a positive multiple of 512). */
    readonly extentBytes: number
    /**
     * The extents recorded active when the log was opened, ascending, in units of
     * `extentBytes` (a set stored with another extent size is widened to cover the same
     * bytes). `Option.none()` when the log exists but no copy of it can be read (both
     * slots damaged): the caller must then assume any extent may be dirty.
     */
    readonly recovered: Option.Option<ReadonlyArray<number>>
    /** The extents recorded active now (after the last successful commit), ascending. */
    readonly active: Effect.Effect<ReadonlyArray<number>>
    /**
     * Records `activate` as active and `retire` as inactive in one transaction; durable
     * when it returns. Commits are serialized. Fails with ActivityLogInvalidRequest for a
     * negative/non-integer extent or one in both lists (checked before anything is written),
     * and with ActivityLogIoError when the OS fails a call (the previous durable set stays
     * readable on disk).
     */
    readonly commit: (
      activate: ReadonlyArray<number>,
      retire: ReadonlyArray<number>
    ) => Effect.Effect<void, ActivityLogError>
  }
}

export type MemoryStore = activityLogMemory.MemoryStore
export type MemoryOptions = activityLogMemory.MemoryOptions

/** Storage for `layerMemory` that outlives a layer, so the same log can be reopened. */
export const makeMemoryStore: () => MemoryStore = activityLogMemory.makeStore

/** An in-memory log over `store` (a fresh one when absent). */
export const makeMemory: (options?: MemoryOptions) => Effect.Effect<ActivityLog.Service> =
  activityLogMemory.make

export const layerMemory = (options?: MemoryOptions): Layer.Layer<ActivityLog> =>
  Layer.effect(ActivityLog, activityLogMemory.make(options))

export type FileOptions = activityLogFile.FileOptions

/** A scoped file log: the slot files close with the scope (after a commit in flight). */
export const makeFile: (
  options: FileOptions
) => Effect.Effect<ActivityLog.Service, ActivityLogIoError, Scope.Scope> = activityLogFile.make

export const layerFile = (options: FileOptions): Layer.Layer<ActivityLog, ActivityLogIoError> =>
  Layer.scoped(ActivityLog, activityLogFile.make(options))

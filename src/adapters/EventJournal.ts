/**
 * EventJournal: the durable source of truth of the filter. The state is always
 * the fold of the journal's events (design §3); a snapshot only shortens replay.
 *
 * Positions count events: the journal's position is the number of events it holds,
 * an entry's `position` is its index, and a snapshot saved at position `p` is the
 * state after folding the first `p` events.
 *
 * Guarantees of every layer:
 * - `append` is durable when it returns (one fsync per batch; concurrent appends
 *   share an fsync) and returns the position after its batch. Batches are never
 *   interleaved: the journal is one total order of whole batches.
 * - Events are checked with the trace codec before they are written, so the
 *   journal never holds a record it cannot read back (`JournalInvalidRequest`).
 * - `read(from)` streams the events durable when the stream starts, in order.
 *
 * File layer (`layerFile({ directory })`), two files:
 * - `events.log`: records `[u32 LE payload length][u32 LE CRC32C of payload][payload]`,
 *   the payload being the event's trace line (`Trace.encodeEvent`, UTF-8, no newline).
 *   Appends only ever write at the end; a failed write or fsync is cut off again
 *   (ftruncate to the last durable end) and fails the append with `JournalIoError`.
 * - `snapshot.json`: `{"position":p,"log":anchor,"snapshot":State.Snapshot}`, replaced
 *   atomically (write `snapshot.json.tmp`, fsync, rename, fsync the directory). `log`
 *   (for p > 0) is where record `p` starts in the log, with the record before it and a
 *   check: opening scans from there once it checks against the log, else from byte 0.
 * - `journal.json` (the run file): the geometry and initial state the events fold from,
 *   and whether the last run closed cleanly (`run: "open"`, or `"closed"` with the
 *   position it closed at), one line of JSON with its CRC32C, replaced atomically.
 *
 * Runs: the journal's writer (the replicator) calls `beginRun(header)` before it admits
 * any guest write and `endRun` once everything it wrote to the disk is journaled. So
 * the journal itself knows whether its last run ended cleanly: a start after a kill, a
 * crash or a power loss finds the run still open (`LastRun.Unclean`), whoever embeds
 * the writer. A journal written before run files were kept reads as unclean once.
 *
 * Recovery on open (of what the scan covers: all of the log, or what follows the
 * snapshot's checked anchor; docs/adapters.md): a torn last record — a short header, a short payload, a CRC
 * mismatch on the record that ends exactly at the end of the file, or a zero-filled
 * tail — is cut off and reported in `recovery` (and logged as a warning), but only
 * when no whole valid record follows it. Anything else — a bad CRC, an implausible
 * length or an undecodable event followed by more data — fails with `JournalCorrupt`
 * naming the byte offset of the damaged record. Nothing is skipped silently.
 *
 * One process owns a journal directory at a time.
 *
 * @since 0.1.0
 */
import { Context, type Effect, Layer, type Option, type Stream } from "effect"
import type * as Event from "../domain/Event.js"
import type * as State from "../domain/State.js"
import type { Entry, JournalError, Recovery, SavedSnapshot } from "./internal/journal.js"
import type { Header, JournalGeometryMismatch, LastRun } from "./internal/journalRun.js"
import * as journalFile from "./internal/journalFile.js"
import * as journalMemory from "./internal/journalMemory.js"

export {
  type Entry,
  HEADER_BYTES,
  JournalCorrupt,
  type JournalError,
  JournalInvalidRequest,
  JournalIoError,
  MAX_PAYLOAD,
  type Recovery,
  type SavedSnapshot
} from "./internal/journal.js"
export { LOG_FILE, recordedHeader, SNAPSHOT_FILE } from "./internal/journalFile.js"
export { type Header, JournalGeometryMismatch, type LastRun, RUN_FILE } from "./internal/journalRun.js"

export class EventJournal extends Context.Tag("cdp-sync/EventJournal")<
  EventJournal,
  EventJournal.Service
>() {}

export declare namespace EventJournal {
  interface Service {
    /** Appends a batch; durable on return. The position after the batch. */
    readonly append: (events: ReadonlyArray<Event.Event>) => Effect.Effect<number, JournalError>
    /** The durable events from `from` (0 … position), in order. */
    readonly read: (from: number) => Stream.Stream<Entry, JournalError>
    /** The number of durable events. */
    readonly position: Effect.Effect<number>
    /** Saves the state after the first `position` events (at most the current position). */
    readonly saveSnapshot: (snapshot: State.Snapshot, position: number) => Effect.Effect<void, JournalError>
    readonly loadSnapshot: Effect.Effect<Option.Option<SavedSnapshot>, JournalError>
    /** What opening repaired: a torn last record cut off, or `undefined`. */
    readonly recovery: Recovery | undefined
    /**
     * Begins a run of the journal's writer: checks `header` against the journal's (its
     * run file's, or its snapshot's for a journal older than run files; fails with
     * `JournalGeometryMismatch` and writes nothing), records the run as open, durably,
     * and tells how the previous run ended. Call it before any guest write reaches the
     * disk: a run that never reaches `endRun` reads as unclean at the next `beginRun`.
     */
    readonly beginRun: (header: Header) => Effect.Effect<LastRun, JournalError | JournalGeometryMismatch>
    /**
     * Records that the run closed cleanly: every guest write it let reach the disk is
     * journaled. Recorded at the position after every append queued before it; an
     * append after it makes the next start unclean again. Fails if no run was begun.
     */
    readonly endRun: Effect.Effect<void, JournalError>
  }
}

export type MemoryStore = journalMemory.MemoryStore

/** Storage for `layerMemory` that outlives a layer, so the same journal can be reopened. */
export const makeMemoryStore: () => MemoryStore = journalMemory.makeStore

export const makeMemory: (store?: MemoryStore) => EventJournal.Service = (store) =>
  journalMemory.make(store ?? journalMemory.makeStore())

export const layerMemory = (options?: { readonly store?: MemoryStore }): Layer.Layer<EventJournal> =>
  Layer.sync(EventJournal, () => journalMemory.make(options?.store ?? journalMemory.makeStore()))

export type FileOptions = journalFile.FileOptions

/** A scoped file journal: closing the scope commits queued batches, then closes the log. */
export const makeFile = (options: FileOptions) => journalFile.make(options)

export const layerFile = (options: FileOptions): Layer.Layer<EventJournal, JournalError> =>
  Layer.scoped(EventJournal, journalFile.make(options))

/**
 * Start-up, before any fiber runs: the state rebuilt from the journal, and the events
 * a (re)start owes it — the link of the last run is gone, and after an unclean stop
 * whatever the journal may lack must be resynced.
 */
import { Clock, Effect, Either, Option, Stream } from "effect"
import type { ActivityLog } from "../../adapters/ActivityLog.js"
import type { EventJournal, JournalError, LastRun } from "../../adapters/EventJournal.js"
import type { Config } from "../../domain/Config.js"
import * as Decider from "../../domain/Decider.js"
import type * as Event from "../../domain/Event.js"
import * as Geometry from "../../domain/Geometry.js"
import * as Input from "../../domain/Input.js"
import * as State from "../../domain/State.js"
import { publish, type Shared } from "./shared.js"
import { noteBatch } from "./status.js"
import { mib } from "../../internal/units.js"

/** Rebuilds the state: the latest snapshot, then the journal after it. */
export const recover = (
  journal: EventJournal.Service,
  config: Config
): Effect.Effect<State.State, JournalError> =>
  Effect.gen(function* () {
    const saved = yield* journal.loadSnapshot
    let state = Option.match(saved, {
      onNone: () => State.initial(config),
      onSome: (s) => State.fromSnapshot(s.snapshot)
    })
    const from = Option.match(saved, { onNone: () => 0, onSome: (s) => s.position })
    yield* journal.read(from).pipe(
      Stream.runForEach((entry) =>
        Effect.sync(() => {
          state = Decider.evolve(state, entry.event)
        })
      )
    )
    return state
  })

/** The disk's byte ranges under `extents` (ascending), adjacent ones merged, clipped to the disk. */
export const extentRanges = (
  extents: ReadonlyArray<number>,
  extentBytes: number,
  diskBytes: number
): Array<{ readonly offset: number; readonly length: number }> => {
  const ranges: Array<{ offset: number; length: number }> = []
  for (const e of extents) {
    const offset = e * extentBytes
    if (offset >= diskBytes) break
    const length = Math.min(extentBytes, diskBytes - offset)
    const last = ranges.at(-1)
    if (last !== undefined && last.offset + last.length === offset) last.length += length
    else ranges.push({ offset, length })
  }
  return ranges
}

/**
 * Journals what a start owes before the fibers run, and folds it into `shared.state`:
 * a (re)started filter has no connection, so whatever was in flight is assumed lost;
 * after an unclean stop (the journal says so) the extents in the activity log, else
 * the whole disk, are resynced. Even a journal with no events may be behind the disk:
 * the first run's writes reach the disk before its first append.
 */
export const startUp = (
  shared: Shared,
  deps: {
    readonly journal: EventJournal.Service
    readonly config: Config
    readonly lastRun: LastRun
    readonly activityLog: ActivityLog.Service | undefined
    readonly onEvents: ((events: ReadonlyArray<Event.Event>) => Effect.Effect<void>) | undefined
    /** The mutant that trusts the caller (internal/mutants.ts). */
    readonly assumeCleanStart: boolean
  }
): Effect.Effect<void, JournalError> =>
  Effect.gen(function* () {
    const { config, activityLog, lastRun } = deps
    const startup: Array<Event.Event> = []
    let after = shared.state
    if (after.link === "up") {
      const lost = Decider.decideFolded(after, Input.linkFailed("filter-restart"))
      if (Either.isRight(lost)) {
        startup.push(...lost.right.events)
        after = lost.right.state
      }
    }
    if (lastRun._tag === "Unclean") yield* Effect.logWarning(`unclean start: ${lastRun.reason}`)
    if (lastRun._tag === "Unclean" && !deps.assumeCleanStart) {
      // What the journal may lack: the extents in the activity log, else the whole disk.
      const diskBytes = Geometry.diskBytes(config)
      const recovered = activityLog === undefined ? Option.none() : activityLog.recovered
      const owed = Option.match(recovered, {
        onNone: () => [{ offset: 0, length: diskBytes }],
        onSome: (extents) => extentRanges(extents, activityLog!.extentBytes, diskBytes)
      })
      let owedBytes = 0
      for (const range of owed) owedBytes += range.length
      const why = Option.match(recovered, {
        onNone: () => (activityLog === undefined ? "no activity log" : "the activity log is unreadable"),
        onSome: (extents) => `the activity log holds ${extents.length} extents`
      })
      yield* Effect.logWarning(`unclean start: resyncing ${mib(owedBytes)} of ${mib(diskBytes)} (${why})`)
      const resync: Array<Event.Event> = []
      if (after.mode === "sync" && owed.length > 0)
        resync.push({ type: "ResyncActivated", epoch: after.epoch + 1, reason: "interruption" })
      for (const range of owed) resync.push({ type: "WriteTracked", ...range })
      startup.push(...resync)
      after = Decider.evolveAll(after, resync)
    }
    if (startup.length === 0) return
    shared.position = yield* deps.journal.append(startup)
    shared.state = after
    noteBatch(shared.book, startup, after, yield* Clock.currentTimeMillis)
    if (deps.onEvents !== undefined) yield* deps.onEvents(startup)
    yield* publish(shared)
  })

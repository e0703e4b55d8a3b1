/**
 * The in-memory EventJournal. Its store can outlive a layer, so a test can "reopen"
 * the same journal. Events and snapshots go through the same checked codecs as the
 * file layer, so both refuse and return the same things.
 */
import { Effect, Either, Option, Stream } from "effect"
import type * as Event from "../../domain/Event.js"
import type * as State from "../../domain/State.js"
import type { EventJournal } from "../EventJournal.js"
import {
  checkEvents,
  type JournalCorrupt,
  checkFrom,
  checkSnapshotPosition,
  decodeSnapshotFile,
  encodeSnapshotFile,
  type Entry,
  JournalInvalidRequest,
  type SavedSnapshot
} from "./journal.js"
import {
  checkClosedAt,
  checkHeader,
  decodeRunMark,
  encodeRunMark,
  type Header,
  lastRunOf,
  type RunMark
} from "./journalRun.js"

export interface MemoryStore {
  readonly events: Array<Event.Event>
  /** The snapshot file's text, as the file layer would write it. */
  snapshot: string | undefined
  /** The run file's text, as the file layer would write it. */
  run: string | undefined
}

export const makeStore = (): MemoryStore => ({ events: [], snapshot: undefined, run: undefined })

const RUN = "memory:journal.json"
const SNAPSHOT = "memory:snapshot"
const LOG = "memory:events"

const loadSnapshot = (store: MemoryStore): Either.Either<SavedSnapshot | undefined, JournalCorrupt> =>
  store.snapshot === undefined ? Either.right(undefined) : decodeSnapshotFile(store.snapshot, SNAPSHOT)

const loadRun = (store: MemoryStore): Either.Either<RunMark | undefined, JournalCorrupt> =>
  store.run === undefined ? Either.right(undefined) : decodeRunMark(Buffer.from(store.run, "utf8"), RUN)

export const make = (store: MemoryStore): EventJournal.Service => {
  const { events } = store
  return {
    append: Effect.fn("EventJournal.append")(function* (batch: ReadonlyArray<Event.Event>) {
      const checked = checkEvents(batch, events.length)
      if (Either.isLeft(checked)) return yield* checked.left
      for (const event of checked.right.events) events.push(event)
      return events.length
    }),
    read: (from: number) =>
      Stream.suspend((): Stream.Stream<Entry, JournalInvalidRequest> => {
        const invalid = checkFrom(from, events.length)
        if (invalid !== undefined) return Stream.fail(invalid)
        const slice = events.slice(from)
        return Stream.fromIterable(slice.map((event, i): Entry => ({ position: from + i, event })))
      }),
    position: Effect.sync(() => events.length),
    saveSnapshot: Effect.fn("EventJournal.saveSnapshot")(function* (
      snapshot: State.Snapshot,
      position: number
    ) {
      const invalid = checkSnapshotPosition(position, events.length)
      if (invalid !== undefined) return yield* invalid
      const text = encodeSnapshotFile({ position, snapshot })
      if (Either.isLeft(text)) return yield* text.left
      store.snapshot = text.right
    }),
    loadSnapshot: Effect.suspend(() =>
      Either.match(loadSnapshot(store), {
        onLeft: Effect.fail,
        onRight: (saved) => Effect.succeed(Option.fromNullable(saved))
      })
    ),
    recovery: undefined,
    beginRun: Effect.fn("EventJournal.beginRun")(function* (header: Header) {
      const mark = yield* loadRun(store)
      const saved = yield* loadSnapshot(store)
      const lost = checkClosedAt(mark, events.length, { run: RUN, log: LOG }, events.length)
      if (lost !== undefined) return yield* lost
      const mismatch = checkHeader(header, mark, saved, { run: RUN, snapshot: SNAPSHOT })
      if (mismatch !== undefined) return yield* mismatch
      const last = lastRunOf(mark, events.length, saved !== undefined, undefined)
      store.run = encodeRunMark({ header: mark?.header ?? header, run: "open", closedAt: null })
      return last
    }),
    endRun: Effect.suspend((): Effect.Effect<void, JournalCorrupt | JournalInvalidRequest> => {
      const mark = loadRun(store)
      if (Either.isLeft(mark)) return Effect.fail(mark.left)
      if (mark.right === undefined)
        return Effect.fail(new JournalInvalidRequest({ reason: "no run was begun" }))
      store.run = encodeRunMark({ header: mark.right.header, run: "closed", closedAt: events.length })
      return Effect.void
    })
  }
}

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
  checkFrom,
  checkSnapshotPosition,
  decodeSnapshotFile,
  encodeSnapshotFile,
  type Entry,
  type JournalInvalidRequest
} from "./journal.js"

export interface MemoryStore {
  readonly events: Array<Event.Event>
  /** The snapshot file's text, as the file layer would write it. */
  snapshot: string | undefined
}

export const makeStore = (): MemoryStore => ({ events: [], snapshot: undefined })

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
      store.snapshot === undefined
        ? Effect.succeed(Option.none())
        : Either.match(decodeSnapshotFile(store.snapshot, "memory:snapshot"), {
            onLeft: Effect.fail,
            onRight: (saved) => Effect.succeed(Option.some(saved))
          })
    ),
    recovery: undefined
  }
}

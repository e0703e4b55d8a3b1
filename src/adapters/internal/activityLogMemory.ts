/**
 * The in-memory ActivityLog. Its store holds the two slots' encoded bytes, as the
 * file layer would write them, and outlives a layer, so a test can reopen (or
 * damage) the same log. Recovery and commits are the shared ones in `activityLog.ts`.
 */
import { Effect, Option } from "effect"
import type { ActivityLog } from "../ActivityLog.js"
import { checkExtentBytes, DEFAULT_EXTENT_BYTES, makeService, recover } from "./activityLog.js"

export interface MemoryStore {
  /** Each slot's bytes, `undefined` when it was never written. */
  readonly slots: [Uint8Array | undefined, Uint8Array | undefined]
}

export const makeStore = (): MemoryStore => ({ slots: [undefined, undefined] })

export const SLOT_NAMES = ["memory:activity.0", "memory:activity.1"] as const

export interface MemoryOptions {
  readonly store?: MemoryStore | undefined
  readonly extentBytes?: number | undefined
}

export const make = (options?: MemoryOptions): Effect.Effect<ActivityLog.Service> =>
  Effect.gen(function* () {
    const extentBytes = options?.extentBytes ?? DEFAULT_EXTENT_BYTES
    yield* checkExtentBytes(extentBytes)
    const store = options?.store ?? makeStore()
    const opened = yield* recover(
      SLOT_NAMES,
      [Option.fromNullable(store.slots[0]), Option.fromNullable(store.slots[1])],
      extentBytes
    )
    return yield* makeService(extentBytes, opened, (slot, bytes) =>
      Effect.sync(() => {
        store.slots[slot] = bytes
      })
    )
  })

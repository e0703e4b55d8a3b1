/**
 * The file-backed ActivityLog: two slot files, `activity.0` and `activity.1`, in one
 * directory. Each is opened once and kept open; a commit rewrites one whole slot in
 * place (pwrite at 0, ftruncate when the file was longer, fdatasync). A slot file is
 * created by the first commit that writes it, and the directory is fsynced then, so
 * the file itself survives a crash. Recovery and commits are the shared ones in
 * `activityLog.ts`; see `ActivityLog.ts` for the format and the guarantees.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect, Option, type Scope } from "effect"
import type { ActivityLog } from "../ActivityLog.js"
import { isEnoent, pwriteFully, syncDirectory } from "../../internal/fileIo.js"
import {
  ActivityLogIoError,
  type ActivityLogOp,
  checkExtentBytes,
  DEFAULT_EXTENT_BYTES,
  type DecodeOptions,
  makeService,
  recover
} from "./activityLog.js"

export const SLOT_FILES = ["activity.0", "activity.1"] as const

export interface FileOptions {
  readonly directory: string
  readonly extentBytes?: number | undefined
}

/** The calls a commit makes on a slot file; replaceable in tests to inject faults. */
export interface SlotIo {
  readonly write: (handle: fs.FileHandle, bytes: Uint8Array, position: number) => Promise<void>
  readonly truncate: (handle: fs.FileHandle, length: number) => Promise<void>
  readonly datasync: (handle: fs.FileHandle) => Promise<void>
}

export const nodeIo: SlotIo = {
  write: pwriteFully,
  truncate: (handle, length) => handle.truncate(length),
  datasync: (handle) => handle.datasync()
}

/** Internal knobs for tests: fault injection, and a deliberately broken decoder for mutants. */
export interface FileTestOptions extends FileOptions, DecodeOptions {
  readonly io?: SlotIo | undefined
}

export const make = (
  options: FileTestOptions
): Effect.Effect<ActivityLog.Service, ActivityLogIoError, Scope.Scope> =>
  Effect.gen(function* () {
    const extentBytes = options.extentBytes ?? DEFAULT_EXTENT_BYTES
    yield* checkExtentBytes(extentBytes)
    const io = options.io ?? nodeIo
    const { directory } = options
    const paths = [path.join(directory, SLOT_FILES[0]), path.join(directory, SLOT_FILES[1])] as const
    const attempt = <A>(op: ActivityLogOp, f: () => Promise<A>) =>
      Effect.tryPromise({ try: f, catch: (cause) => new ActivityLogIoError({ op, cause }) })

    // Open handles, by slot; a slot file is created by the first commit that writes it.
    const handles: [fs.FileHandle | undefined, fs.FileHandle | undefined] = [undefined, undefined]
    // Each file's length as far as this process knows; `Infinity` after a failed write.
    const lengths: [number, number] = [0, 0]
    // A file created here whose directory entry is not yet known durable.
    const unsyncedEntry: [boolean, boolean] = [false, false]
    let closed = false
    // The commit writing now (commits are serialized): closing waits for it.
    let inflight: Promise<unknown> = Promise.resolve()

    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        closed = true
        await inflight.catch(() => undefined)
        for (const h of handles) await h?.close().catch(() => undefined)
      })
    )

    yield* attempt("open", () => fs.mkdir(directory, { recursive: true }))
    const found: Array<Option.Option<Uint8Array>> = []
    for (const slot of [0, 1] as const) {
      const handle = yield* attempt("open", () =>
        fs.open(paths[slot], "r+").catch((e) => (isEnoent(e) ? undefined : Promise.reject(e)))
      )
      handles[slot] = handle
      if (handle === undefined) {
        found.push(Option.none())
        continue
      }
      const bytes = yield* attempt("open", () => handle.readFile())
      lengths[slot] = bytes.length
      found.push(Option.some(bytes))
    }
    const opened = yield* recover(paths, [found[0]!, found[1]!], extentBytes, options)

    const write = (slot: 0 | 1, bytes: Uint8Array) =>
      attempt("commit", () => (inflight = writeSlot(slot, bytes)))
    const writeSlot = async (slot: 0 | 1, bytes: Uint8Array): Promise<void> => {
      if (closed) throw new Error("the activity log is closed")
      let handle = handles[slot]
      if (handle === undefined) {
        handle = await fs.open(paths[slot], fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644)
        handles[slot] = handle
        unsyncedEntry[slot] = true
      }
      if (unsyncedEntry[slot]) {
        await syncDirectory(directory)
        unsyncedEntry[slot] = false
      }
      const before = lengths[slot]
      lengths[slot] = Number.POSITIVE_INFINITY
      await io.write(handle, bytes, 0)
      // A longer old tail would fail the length check; cut it so the slot reads back.
      if (before > bytes.length) await io.truncate(handle, bytes.length)
      await io.datasync(handle)
      lengths[slot] = bytes.length
    }

    return yield* makeService(extentBytes, opened, write)
  })

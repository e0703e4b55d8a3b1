/**
 * A recovery point as a block device (`cdp-sync mount`, docs/receiver.md "Mounting a
 * recovery point"): the disk at one point of a receiver directory, read through the block
 * index without materialising the image (`openLazyPointReader`: each segment's `.bix` checked
 * when a read first needs it, not all of them merged before the first byte), and served
 * read-only over NBD by the same server as `cdp-sync serve` (`Nbd.serveMount`, in the NBD
 * front end: this module knows nothing of NBD).
 *
 * The chain is opened read-only, as `restore` opens it, so a mount may run beside a
 * receiver that ingests. The reader holds the base image and the segments it reads open
 * from the start: a retention fold that renames a new base over the old one or unlinks
 * segments later changes nothing it serves; a fold that raced the opening is seen (a file
 * gone, another base) and the chain read again. Every byte served is checked first (a
 * record's CRC and its index entry, a base unit's CRC): a read that meets damage fails
 * that request (EIO) with a warning naming the file and the byte, and the mount goes on.
 *
 * With an overlay (`--overlay FILE`, `internal/overlay.ts`) the export is writable: writes
 * go to FILE (sparse, outside the receiver directory, tied to this disk and point), reads
 * see them over the point, and the receiver's files are never written.
 */
import * as path from "node:path"
import { Effect, Runtime } from "effect"
import type { Note } from "./internal/chain.js"
import { type At, attempt, openPointWith, type Point } from "./internal/chainPoints.js"
import { LogCorrupt, LogIoError } from "./internal/errors.js"
import { realPathOutside } from "./internal/files.js"
import { type LazyPointReader, openLazyPointReader } from "./internal/lazyPoint.js"
import { type Overlay, type OverlayIdentity, openOverlay, OverlayRefused } from "./internal/overlay.js"

export type { At, Point }
export { OverlayRefused }

export interface MountOptions {
  /** The receiver directory. */
  readonly dir: string
  /** The disk id (may be left out when the directory holds one disk). */
  readonly diskId?: string | undefined
  /** Which recovery point, as `restore` takes it: a seq, `latest`, a time or a relative one. */
  readonly at: At
  /** The clock relative times (`-15m`) count back from (default `Date.now`). */
  readonly now?: (() => number) | undefined
  /**
   * Makes the export writable: writes go to this sparse file (created when missing, reopened
   * with its earlier writes when it was made for this disk and point, refused otherwise, and
   * never inside the receiver directory); the receiver's files are never written.
   */
  readonly overlay?: string | undefined
}

/** A failed read of a mounted point: damage (`LogCorrupt`) or the operating system's `LogIoError`. */
export type MountReadError = LogCorrupt | LogIoError

/** A recovery point opened as a block device. */
export interface Mounted {
  readonly diskId: string
  /** The point: its seq, receive time and kind. */
  readonly point: Point
  /** The disk's size in bytes. */
  readonly bytes: number
  /**
   * Block indexes rebuilt so far (missing, damaged or at odds with their segment), each also
   * logged at `INFO` as it is: a segment's `.bix` is checked when a read first needs it, and
   * the rest behind the reads (from a second after the point is opened).
   */
  readonly rebuilt: ReadonlyArray<Note>
  /** The overlay file when there is one (the device is then writable). */
  readonly overlay: string | undefined
  /** The point: read-only, or writable through the overlay. */
  readonly device: PointDevice
}

/**
 * A block device of the disk's size (what `Nbd.serveDevice` serves): reads of the point, and
 * with an overlay writes and flushes into it. Ranges are checked by the caller (inside the
 * disk, multiples of 512).
 */
export interface PointDevice {
  readonly size: number
  readonly readOnly: boolean
  readonly read: (offset: number, length: number) => Effect.Effect<Uint8Array, MountReadError>
  /** Applied in order; durable after `flush`. Read-only devices die (the server never calls it). */
  readonly writeAll: (
    writes: ReadonlyArray<{ readonly offset: number; readonly bytes: Uint8Array }>
  ) => Effect.Effect<void, MountReadError>
  readonly flush: Effect.Effect<void, MountReadError>
}

/** Reads bytes of the point, every one checked, and says which read failed and where. */
export type Under = (offset: number, length: number) => Effect.Effect<Uint8Array, MountReadError>

/** Says which read failed and where (the file and byte of the damage). */
const warnOfFailure =
  (offset: number, length: number) =>
  (e: MountReadError): Effect.Effect<void> =>
    Effect.logWarning(`mount: a read of bytes ${offset}..${offset + length - 1} failed: ${e.message}`).pipe(
      Effect.annotateLogs(
        e instanceof LogCorrupt ? { file: e.file, offset: e.offset } : { file: e.path, op: e.op }
      )
    )

const readOf =
  (reader: LazyPointReader, file: string): Under =>
  (offset, length) =>
    attempt(file, "read", () => reader.read(offset, length)).pipe(
      Effect.tapError(warnOfFailure(offset, length))
    )

/** The point served read-only. */
const readOnlyDevice = (bytes: number, under: Under): PointDevice => ({
  size: bytes,
  readOnly: true,
  read: under,
  // Never called: the server answers every change to a read-only export EPERM.
  writeAll: () => Effect.die(new Error("a mounted recovery point is read-only")),
  flush: Effect.void
})

/**
 * The point with `overlay` over it: reads fall through to the point where the overlay holds
 * nothing, writes and flushes go to the overlay file only.
 */
const overlayDevice = (bytes: number, overlay: Overlay, reader: LazyPointReader): PointDevice => {
  const below = (offset: number, length: number) => reader.read(offset, length)
  return {
    size: bytes,
    readOnly: false,
    read: (offset, length) =>
      attempt(overlay.file, "read", () => overlay.read(offset, length, below)).pipe(
        Effect.tapError(warnOfFailure(offset, length))
      ),
    // A write into a cluster the overlay does not hold reads the rest of it from the point.
    writeAll: (writes) =>
      attempt(overlay.file, "write", () => overlay.write(writes, below)).pipe(
        Effect.tapError((e) =>
          Effect.logWarning(`mount: a write to the overlay failed: ${e.message}`).pipe(
            Effect.annotateLogs({ overlay: overlay.file })
          )
        )
      ),
    flush: attempt(overlay.file, "write", () => overlay.flush())
  }
}

/** The overlay `file` for this point, closed with the scope; never inside the receiver directory `dir`. */
const acquireOverlay = (dir: string, file: string, identity: OverlayIdentity) =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const { target } = await realPathOutside(
          dir,
          file,
          "the log is never written",
          (reason) =>
            new OverlayRefused({ file: path.resolve(file), offset: 0, reason: "bad-path", detail: reason })
        )
        return openOverlay(target, identity)
      },
      catch: (cause) =>
        cause instanceof OverlayRefused
          ? cause
          : new LogIoError({ op: "open", path: path.resolve(file), cause })
    }),
    (o) =>
      Effect.promise(() => o.close()).pipe(
        Effect.catchAllDefect((e) =>
          Effect.logWarning(`mount: the overlay ${o.file} did not close cleanly`, e)
        )
      )
  )

/** How long after the point is opened the maps no read has needed yet are checked (the first reads go first). */
const CHECK_BEHIND_DELAY = "1 second"

/**
 * The point `at` names, opened for reading until the scope closes (`openLazyPointReader`:
 * nothing of the block index is read before the first read needs it); a fold that raced the
 * opening is retried. Each `.bix` rebuilt is added to `rebuilt` and logged.
 */
const openLazyPointAt = (options: MountOptions, rebuilt: Array<Note>) =>
  Effect.gen(function* () {
    const runtime = yield* Effect.runtime<never>()
    const onNote = (note: Note) => {
      rebuilt.push(note)
      Runtime.runFork(runtime)(Effect.logInfo(note.message).pipe(Effect.annotateLogs(note.annotations)))
    }
    const { opened, ...rest } = yield* openPointWith(
      options,
      (chain, seq) => openLazyPointReader(chain, seq, true, onNote),
      (reader) => reader.close()
    )
    return { ...rest, reader: opened }
  })

/**
 * Opens the point `at` names as a block device until the scope closes (which closes its
 * files): read-only, or writable through `overlay`. A seq that is no recovery point, or a
 * time before every point, is refused as `restore` refuses it (the nearest points named).
 */
export const open = Effect.fn("Receiver.mount")(function* (options: MountOptions) {
  const rebuilt: Array<Note> = []
  const opened = yield* openLazyPointAt(options, rebuilt)
  const { diskDir, meta, reader } = opened
  const bytes = reader.diskBytes
  // Behind the first reads: every map checked (damage in a `.bix` noted and rebuilt), so a
  // mount left serving has read its whole index once.
  yield* Effect.forkScoped(
    Effect.sleep(CHECK_BEHIND_DELAY).pipe(
      Effect.zipRight(attempt(diskDir, "read", () => reader.checkAll())),
      Effect.catchAll((e) =>
        Effect.logWarning(`mount: checking the block index behind the reads failed: ${e.message}`)
      )
    )
  )
  const overlay =
    options.overlay === undefined
      ? undefined
      : yield* acquireOverlay(options.dir, options.overlay, {
          diskId: meta.diskId,
          diskBytes: bytes,
          seq: opened.point.seq,
          pointTime: opened.point.time
        })
  const mounted: Mounted = {
    diskId: meta.diskId,
    point: opened.point,
    bytes,
    rebuilt,
    overlay: overlay?.file,
    device:
      overlay === undefined
        ? readOnlyDevice(bytes, readOf(reader, diskDir))
        : overlayDevice(bytes, overlay, reader)
  }
  return mounted
})

/**
 * The file-backed VirtualDisk: a raw image file, created sparse at the geometry's
 * size when absent. Every request is positional I/O (pread/pwrite) on one handle,
 * so concurrent fibers never share a seek cursor.
 */
import * as fsSync from "node:fs"
import * as fs from "node:fs/promises"
import { Effect, type Scope } from "effect"
import * as Geometry from "../../domain/Geometry.js"
import type { VirtualDisk } from "../VirtualDisk.js"
import { preadFully, pwriteFully } from "../../internal/fileIo.js"
import {
  checkBlock,
  checkRange,
  DiskGeometryMismatch,
  DiskIoError,
  type DiskOp,
  type DiskRangeError
} from "./disk.js"

export interface FileOptions {
  readonly path: string
  readonly geometry: Geometry.Geometry
  /** Create the image (sparse, zero-filled) when the file does not exist. */
  readonly create: boolean
  /**
   * Writes as a blocking `pwrite` on the calling thread (the default) rather than
   * through libuv's thread pool. Into the page cache a write takes microseconds, and
   * the thread hand-off cost several times that: measured end to end, the replicator
   * streamed about twice the bytes at 4 KiB writes (10 % more at 64 KiB). The price: a
   * disk that stalls writers (dirty-page throttling) stalls the whole event loop with
   * it, network included; guest writes wait on such a disk either way. `false` sends
   * writes through the thread pool. Reads stay asynchronous.
   */
  readonly blockingWrites?: boolean | undefined
}

const errnoOf = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : undefined

/** Reads exactly `out.length` bytes at `position`; pread may return short counts. */
const pwriteFullySync = (fd: number, bytes: Uint8Array, position: number): void => {
  let done = 0
  while (done < bytes.length) done += fsSync.writeSync(fd, bytes, done, bytes.length - done, position + done)
}

/** Opens an existing image, or creates a sparse one; `EEXIST` races fall back to opening. */
const openImage = async (path: string, bytes: number, create: boolean): Promise<fs.FileHandle> => {
  try {
    return await fs.open(path, "r+")
  } catch (cause) {
    if (!create || errnoOf(cause) !== "ENOENT") throw cause
  }
  let handle: fs.FileHandle
  try {
    handle = await fs.open(path, "wx+")
  } catch (cause) {
    if (errnoOf(cause) === "EEXIST") return fs.open(path, "r+")
    throw cause
  }
  try {
    await handle.truncate(bytes)
    await handle.sync()
    return handle
  } catch (cause) {
    // Leave no half-made image behind: the next open would see a geometry mismatch.
    await handle.close().catch(() => undefined)
    await fs.unlink(path).catch(() => undefined)
    throw cause
  }
}

export const make = (
  options: FileOptions
): Effect.Effect<VirtualDisk.Service, DiskIoError | DiskGeometryMismatch, Scope.Scope> =>
  Effect.gen(function* () {
    const { path, geometry } = options
    const diskBytes = Geometry.diskBytes(geometry)
    const io = <A>(op: DiskOp, f: () => Promise<A>) =>
      Effect.tryPromise({ try: f, catch: (cause) => new DiskIoError({ op, path, cause }) })

    const handle = yield* Effect.acquireRelease(
      io("open", () => openImage(path, diskBytes, options.create)),
      (h) => Effect.promise(() => h.close().catch(() => undefined))
    )
    const stat = yield* io("stat", () => handle.stat())
    if (stat.size !== diskBytes)
      return yield* new DiskGeometryMismatch({ path, expectedBytes: diskBytes, actualBytes: stat.size })

    const blocking = options.blockingWrites !== false
    /** The blocking write: a `pwrite` on this thread, no step of the runtime. */
    const writeSync = (offset: number, bytes: Uint8Array): DiskRangeError | DiskIoError | undefined => {
      const invalid = checkRange(geometry, offset, bytes.length)
      if (invalid !== undefined) return invalid
      try {
        pwriteFullySync(handle.fd, bytes, offset)
        return undefined
      } catch (cause) {
        return new DiskIoError({ op: "write", path, cause })
      }
    }

    // Untraced: these run per guest write and per drained block, and a span each
    // (`Effect.fn`) costs several times an in-memory write.
    const service: VirtualDisk.Service = {
      geometry,
      read: Effect.fnUntraced(function* (offset: number, length: number) {
        const invalid = checkRange(geometry, offset, length)
        if (invalid !== undefined) return yield* invalid
        // Not zero-filled: preadFully fills every byte or fails.
        const out = Buffer.allocUnsafeSlow(length)
        yield* io("read", () => preadFully(handle, out, offset))
        return out
      }),
      readInto: (offset: number, into: Uint8Array) =>
        Effect.suspend((): Effect.Effect<void, DiskRangeError | DiskIoError> => {
          const invalid = checkRange(geometry, offset, into.length)
          if (invalid !== undefined) return Effect.fail(invalid)
          return io("read", () => preadFully(handle, into, offset))
        }),
      // Plain combinators: a generator per write cost as much as the rest of the call.
      write: (offset: number, bytes: Uint8Array) =>
        Effect.suspend((): Effect.Effect<void, DiskRangeError | DiskIoError> => {
          if (blocking) {
            const error = writeSync(offset, bytes)
            return error === undefined ? Effect.void : Effect.fail(error)
          }
          const invalid = checkRange(geometry, offset, bytes.length)
          if (invalid !== undefined) return Effect.fail(invalid)
          return io("write", () => pwriteFully(handle, bytes, offset))
        }),
      writeSync: blocking ? writeSync : undefined,
      readBlock: Effect.fnUntraced(function* (block: number) {
        const invalid = checkBlock(geometry, block)
        if (invalid !== undefined) return yield* invalid
        const out = Buffer.allocUnsafeSlow(geometry.blockSize)
        yield* io("read", () => preadFully(handle, out, Geometry.blockOffset(geometry, block)))
        return out
      }),
      flush: Effect.withSpan(
        io("flush", () => handle.sync()),
        "VirtualDisk.flush"
      )
    }
    return service
  })

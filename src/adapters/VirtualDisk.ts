/**
 * VirtualDisk: the protected disk as the filter sees it — sector-aligned reads and
 * writes of byte ranges, whole tracking blocks for the drain, and a flush.
 *
 * Every request is checked before any I/O: offset and length must be multiples of
 * 512 and lie inside the disk, a block must be a tracking block of the geometry;
 * otherwise the request fails with `DiskRangeError` and touches nothing.
 *
 * Layers:
 * - `layerMemory(geometry)`: sparse in-memory disk; untouched blocks read as zeros.
 * - `layerFile({ path, geometry, create, blockingWrites? })`: a raw image file,
 *   positional I/O, `flush` is fsync; the file handle closes with the layer's scope.
 *   Writes block the calling thread by default (cheap into the page cache), and
 *   `writeSync` is there; `blockingWrites: false` sends them through the thread pool
 *   and leaves `writeSync` undefined (see `FileOptions`).
 *
 * @since 0.1.0
 */
import { Context, type Effect, Layer } from "effect"
import type * as Geometry from "../domain/Geometry.js"
import type { DiskError, DiskGeometryMismatch, DiskIoError } from "./internal/disk.js"
import * as diskFile from "./internal/diskFile.js"
import * as diskMemory from "./internal/diskMemory.js"

export {
  DiskGeometryMismatch,
  DiskIoError,
  DiskRangeError,
  type DiskError,
  type DiskRangeReason,
  SECTOR_SIZE
} from "./internal/disk.js"

export class VirtualDisk extends Context.Tag("cdp-sync/VirtualDisk")<VirtualDisk, VirtualDisk.Service>() {}

export declare namespace VirtualDisk {
  interface Service {
    readonly geometry: Geometry.Geometry
    /** Reads `length` bytes at `offset` (both sector aligned); a fresh buffer. */
    readonly read: (offset: number, length: number) => Effect.Effect<Uint8Array, DiskError>
    /**
     * Reads `into.length` bytes at `offset` (both sector aligned) into `into`, for a reader
     * that reuses its buffer: a fresh buffer per read costs the kernel's page faults and the
     * collector's passes over external memory (docs/performance.md, "The checksum group").
     * `into` must stay untouched until the effect completes.
     */
    readonly readInto: (offset: number, into: Uint8Array) => Effect.Effect<void, DiskError>
    /**
     * Writes `bytes` at `offset` (sector aligned). Not durable until `flush`.
     * The buffer must stay unchanged until the effect completes.
     */
    readonly write: (offset: number, bytes: Uint8Array) => Effect.Effect<void, DiskError>
    /**
     * `write` on the calling thread, done when it returns: `undefined` once the disk has
     * the bytes, or the error `write` would fail with. For a caller that must not take a
     * step of the runtime per write (the filter's 4 KiB guest writes, docs/performance.md,
     * "Session 11"). `undefined` in a layer that can only write asynchronously (then
     * callers use `write`). A wrapper that changes what `write` does must change this too,
     * or set it to `undefined`: callers prefer it to `write`.
     */
    readonly writeSync?: ((offset: number, bytes: Uint8Array) => DiskError | undefined) | undefined
    /** Reads one whole tracking block; a fresh buffer. */
    readonly readBlock: (block: number) => Effect.Effect<Uint8Array, DiskError>
    /** Makes every completed write durable. */
    readonly flush: Effect.Effect<void, DiskError>
  }
}

export type MemoryDisk = diskMemory.MemoryDisk

/** An in-memory disk; `allocatedBlocks` shows that untouched blocks cost nothing. */
export const makeMemory: (geometry: Geometry.Geometry) => MemoryDisk = diskMemory.make

export const layerMemory = (geometry: Geometry.Geometry): Layer.Layer<VirtualDisk> =>
  Layer.sync(VirtualDisk, () => diskMemory.make(geometry))

export type FileOptions = diskFile.FileOptions

/** A scoped file-backed disk (the handle closes when the scope ends). */
export const makeFile = diskFile.make

export const layerFile = (
  options: FileOptions
): Layer.Layer<VirtualDisk, DiskIoError | DiskGeometryMismatch> =>
  Layer.scoped(VirtualDisk, diskFile.make(options))

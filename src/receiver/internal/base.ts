/**
 * The base image, `base.img` (docs/receiver.md): the disk at one seq, in one file that is
 * replaced by one atomic rename, so a reader holding it open sees a consistent image and seq.
 *
 * Format 2: the raw image (`blockSize × blockCount` bytes, sparse), a checksum table (one
 * CRC32C per unit of `unitBytes` of the image, 64 KiB by default) and a 64-byte trailer that
 * ends the file (seq, time, geometry, unit, the table's CRC32C, the anchor: see `format.ts`).
 * Format 1 (written before): the image and a 32-byte trailer (seq, time). It is still read,
 * but its data cannot be verified; the next fold writes format 2.
 *
 * Every full read of the base — restore's copy, a fold's copy, `verifyBaseImage` — checks
 * the table against the trailer and each unit against the table. Holes are not hashed: an
 * all-zero chunk is compared, and a zero unit's CRC32C is a constant of its length. A fold
 * hashes what it writes: the units it copies (checked on the way) and, read back, the units
 * its records touched.
 * Over 400 lines on purpose: the layout, the writer (fold) and the readers (restore, verify,
 * inspect) must agree on every offset and check of the format, and are read together. It
 * splits next into the writer and the readers.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Either } from "effect"
import { crc32c } from "../../internal/crc32c.js"
import * as Geometry from "../../domain/Geometry.js"
import type { DiskMeta } from "./chain.js"
import { LogCorrupt } from "./errors.js"
import { isEnoent, preadFully, pwriteFully } from "./files.js"
import {
  BASE_TRAILER_BYTES,
  BASE_TRAILER_V2_BYTES,
  type BaseTrailer,
  type BaseTrailerV2,
  type IndexEntry,
  decodeBaseTrailer,
  decodeBaseTrailerV2,
  encodeBaseTrailerV2,
  hasBaseMagic,
  hasBaseMagicV2,
  indexName,
  isRecoveryPoint,
  parseSegmentName,
  recordAnchor
} from "./format.js"
import { describeDamage, readIndex, scanSegment } from "./segment.js"
import { ReceiverMutants } from "./mutants.js"

export const BASE_FILE = "base.img"

/**
 * Sizes of the layout and of the reads (internal: tests shrink them to reach every window
 * edge with small files). `unitBytes` applies to bases written from now on; a base's own
 * unit is in its trailer.
 */
export const tuning = { unitBytes: 64 * 1024, tableWindowBytes: 64 * 1024, chunkBytes: 1 << 20 }

/** What the trailer says, and where it is. */
export type Base =
  | (BaseTrailer & { readonly format: 1; readonly trailerOffset: number })
  | (BaseTrailerV2 & { readonly format: 2; readonly trailerOffset: number })

export interface BaseLayout {
  readonly diskBytes: number
  readonly unitBytes: number
  readonly units: number
  readonly tableOffset: number
  readonly tableBytes: number
  readonly trailerOffset: number
  readonly fileBytes: number
}

export const baseLayout = (diskBytes: number, unitBytes: number): BaseLayout => {
  const units = Math.ceil(diskBytes / unitBytes)
  return {
    diskBytes,
    unitBytes,
    units,
    tableOffset: diskBytes,
    tableBytes: units * 4,
    trailerOffset: diskBytes + units * 4,
    fileBytes: diskBytes + units * 4 + BASE_TRAILER_V2_BYTES
  }
}

const corrupt = (file: string, offset: number, reason: string) => new LogCorrupt({ file, offset, reason })
const describeGeometry = (g: Geometry.Geometry) => `${g.blockCount} blocks of ${g.blockSize} bytes`

/**
 * Reads and checks the trailer of an open base image: its CRC, its size, and (given the
 * geometry `disk.json` holds, or only its byte count) that both agree. Format 2 is tried
 * first, then format 1.
 */
export const readBase = async (
  handle: fs.FileHandle,
  file: string,
  expected: Geometry.Geometry | number | undefined
): Promise<Base> => {
  const geometry = typeof expected === "number" ? undefined : expected
  const diskBytes = typeof expected === "number" ? expected : geometry && Geometry.diskBytes(geometry)
  const { size } = await handle.stat()
  const tail = Buffer.alloc(Math.min(size, BASE_TRAILER_V2_BYTES))
  if (tail.length > 0) await preadFully(handle, tail, size - tail.length)
  const at2 = size - BASE_TRAILER_V2_BYTES
  const at1 = size - BASE_TRAILER_BYTES
  let v2Error: string | undefined
  if (tail.length === BASE_TRAILER_V2_BYTES && hasBaseMagicV2(tail)) {
    const t = decodeBaseTrailerV2(tail)
    if (typeof t !== "string") {
      const g = Geometry.make(t.blockSize, t.blockCount)
      if (Either.isLeft(g))
        throw corrupt(file, at2 + 24, `the trailer's geometry is invalid: ${g.left.reason}`)
      if (
        geometry !== undefined &&
        (geometry.blockSize !== t.blockSize || geometry.blockCount !== t.blockCount)
      )
        throw corrupt(
          file,
          at2 + 24,
          `the trailer says ${describeGeometry(t)}, disk.json says ${describeGeometry(geometry)}: one of them was changed`
        )
      if (diskBytes !== undefined && diskBytes !== Geometry.diskBytes(g.right))
        throw corrupt(
          file,
          at2 + 24,
          `the trailer says ${describeGeometry(t)}, not ${diskBytes} bytes as disk.json says`
        )
      const layout = baseLayout(Geometry.diskBytes(g.right), t.unitBytes)
      if (size !== layout.fileBytes)
        throw corrupt(
          file,
          Math.min(size, layout.trailerOffset),
          `${size} bytes, expected ${layout.fileBytes} (the image, its checksum table and the trailer)`
        )
      return { format: 2, ...t, trailerOffset: at2 }
    }
    v2Error = t
  }
  if (tail.length >= BASE_TRAILER_BYTES && hasBaseMagic(tail.subarray(tail.length - BASE_TRAILER_BYTES))) {
    const t = decodeBaseTrailer(tail.subarray(tail.length - BASE_TRAILER_BYTES))
    if (typeof t === "string") throw corrupt(file, v2Error === undefined ? at1 : at2, v2Error ?? t)
    if (diskBytes !== undefined && size !== diskBytes + BASE_TRAILER_BYTES)
      throw corrupt(
        file,
        Math.min(size, diskBytes),
        `${size} bytes, expected ${diskBytes + BASE_TRAILER_BYTES} (a format-1 image of ${geometry === undefined ? `${diskBytes} bytes` : describeGeometry(geometry)} and its trailer)`
      )
    return { format: 1, ...t, trailerOffset: at1 }
  }
  throw corrupt(
    file,
    Math.max(0, at2),
    v2Error ??
      `no base trailer at the end of the file (${size} bytes): it was truncated, extended or overwritten`
  )
}

/** Opens `base.img` and reads its trailer; a missing file is damage, not an I/O error. */
export const openBase = async (
  diskDir: string,
  geometry: Geometry.Geometry | undefined
): Promise<{ readonly handle: fs.FileHandle; readonly file: string; readonly base: Base }> => {
  const file = path.join(diskDir, BASE_FILE)
  let handle: fs.FileHandle
  try {
    handle = await fs.open(file, "r")
  } catch (e) {
    if (isEnoent(e)) throw corrupt(file, 0, "missing")
    throw e
  }
  try {
    return { handle, file, base: await readBase(handle, file, geometry) }
  } catch (e) {
    await handle.close()
    throw e
  }
}

// ---------------------------------------------------------------------------------------------
// Reading the image through its checksums

const zeroCrcs = new Map<number, number>()
/** CRC32C of `length` zero bytes (the checksum of every hole). */
export const zeroCrc = (length: number): number => {
  let crc = zeroCrcs.get(length)
  if (crc === undefined) zeroCrcs.set(length, (crc = crc32c(Buffer.alloc(length))))
  return crc
}

/** The checksum table, read through a window. */
class TableReader {
  private readonly buf: Buffer
  private first = 0
  private count = 0
  constructor(
    private readonly handle: fs.FileHandle,
    private readonly layout: BaseLayout
  ) {
    const entries = Math.max(1, Math.floor(tuning.tableWindowBytes / 4))
    this.buf = Buffer.allocUnsafe(Math.min(entries, layout.units) * 4)
  }
  has(unit: number): boolean {
    return unit >= this.first && unit < this.first + this.count
  }
  at(unit: number): number {
    return this.buf.readUInt32LE((unit - this.first) * 4)
  }
  async load(unit: number): Promise<number> {
    const count = Math.min(this.buf.length / 4, this.layout.units - unit)
    await preadFully(this.handle, this.buf.subarray(0, count * 4), this.layout.tableOffset + unit * 4)
    this.first = unit
    this.count = count
    return this.at(unit)
  }
}

/** CRC32C of `length` bytes of a file from `from`, read through a window. */
const crcOfRange = async (handle: fs.FileHandle, from: number, length: number): Promise<number> => {
  const buf = Buffer.allocUnsafe(Math.max(1, Math.min(length, tuning.tableWindowBytes)))
  let crc = 0
  for (let at = 0; at < length; at += buf.length) {
    const part = buf.subarray(0, Math.min(buf.length, length - at))
    await preadFully(handle, part, from + at)
    crc = crc32c(part, crc)
  }
  return crc
}

let zeroChunk = Buffer.alloc(0)
const zerosOf = (length: number): Buffer => {
  if (zeroChunk.length < length) zeroChunk = Buffer.alloc(length)
  return zeroChunk.subarray(0, length)
}

export interface WalkOptions {
  /** Collect every damage found (a scrub) instead of throwing the first (a copy). */
  readonly collect?: boolean | undefined
  /** Each chunk of the image in order, once checked; `zero` when it is all zeros. */
  readonly onChunk?: ((at: number, data: Buffer, zero: boolean) => Promise<void> | undefined) | undefined
  /** Each unit's CRC32C in order (the table a fold writes). */
  readonly onUnit?: ((unit: number, crc: number) => Promise<void> | undefined) | undefined
}

/**
 * Reads the whole image of an open base, checking it (format 2) against its table and the
 * table against the trailer. The damage found (only with `collect`: else the first is thrown).
 */
export const walkBase = async (
  handle: fs.FileHandle,
  file: string,
  base: Base,
  geometry: Geometry.Geometry,
  options: WalkOptions
): Promise<Array<LogCorrupt>> => {
  const diskBytes = Geometry.diskBytes(geometry)
  const unitBytes = base.format === 2 ? base.unitBytes : tuning.unitBytes
  const layout = baseLayout(diskBytes, unitBytes)
  const damage: Array<LogCorrupt> = []
  const report = (error: LogCorrupt) => {
    if (options.collect !== true) throw error
    damage.push(error)
  }
  let table: TableReader | undefined
  if (base.format === 2) {
    // The table first: damage in it is then named as such, not as damage in the image.
    if ((await crcOfRange(handle, layout.tableOffset, layout.tableBytes)) !== base.tableCrc)
      report(
        corrupt(
          file,
          layout.tableOffset,
          `the checksum table (${layout.units} entries) does not match its CRC32C in the trailer`
        )
      )
    table = new TableReader(handle, layout)
  }
  const hash = table !== undefined || options.onUnit !== undefined
  const buf = Buffer.allocUnsafe(Math.max(1, Math.min(Math.max(tuning.chunkBytes, unitBytes), diskBytes)))
  for (let at = 0; at < diskBytes; at += buf.length) {
    const part = buf.subarray(0, Math.min(buf.length, diskBytes - at))
    await preadFully(handle, part, at)
    const zero = part.equals(zerosOf(part.length))
    if (hash)
      for (let from = 0; from < part.length; from += unitBytes) {
        const unit = (at + from) / unitBytes
        const bytes = part.subarray(from, Math.min(part.length, from + unitBytes))
        const crc = zero ? zeroCrc(bytes.length) : crc32c(bytes)
        if (table !== undefined) {
          const expected = table.has(unit) ? table.at(unit) : await table.load(unit)
          if (crc !== expected)
            report(
              corrupt(
                file,
                at + from,
                `image bytes ${at + from}..${at + from + bytes.length - 1} do not match their CRC32C (checksum table entry at byte ${layout.tableOffset + unit * 4})`
              )
            )
        }
        const pending = options.onUnit?.(unit, crc)
        if (pending !== undefined) await pending
      }
    const pending = options.onChunk?.(at, part, zero)
    if (pending !== undefined) await pending
  }
  return damage
}

// ---------------------------------------------------------------------------------------------
// Writing a base (format 2)

/**
 * Writes a format-2 base into `out` (already `layout.fileBytes` long): the table's entries
 * in order (`put`), the units records changed afterwards (`touch`), then `finish`.
 */
export class BaseWriter {
  readonly layout: BaseLayout
  private readonly dirty: Uint8Array
  private readonly window: Buffer
  private windowFirst = 0
  private filled = 0

  constructor(
    private readonly out: fs.FileHandle,
    readonly geometry: Geometry.Geometry,
    unitBytes: number
  ) {
    this.layout = baseLayout(Geometry.diskBytes(geometry), unitBytes)
    this.dirty = new Uint8Array(Math.ceil(this.layout.units / 8))
    const entries = Math.max(1, Math.floor(tuning.tableWindowBytes / 4))
    this.window = Buffer.allocUnsafe(Math.min(entries, this.layout.units) * 4)
  }

  /** The next unit's CRC32C (units in order from 0). */
  readonly put = (unit: number, crc: number): Promise<void> | undefined => {
    if (unit !== this.windowFirst + this.filled) throw new Error(`table entry ${unit} out of order`)
    this.window.writeUInt32LE(crc >>> 0, this.filled * 4)
    this.filled++
    return this.filled * 4 === this.window.length || unit === this.layout.units - 1 ? this.flush() : undefined
  }

  private async flush(): Promise<void> {
    const bytes = this.window.subarray(0, this.filled * 4)
    await pwriteFully(this.out, bytes, this.layout.tableOffset + this.windowFirst * 4)
    this.windowFirst += this.filled
    this.filled = 0
  }

  /** Bytes `[offset, offset + length)` of the image changed after their unit was put. */
  touch(offset: number, length: number): void {
    if (length <= 0) return
    const last = Math.floor((offset + length - 1) / this.layout.unitBytes)
    for (let u = Math.floor(offset / this.layout.unitBytes); u <= last; u++)
      this.dirty[u >> 3]! |= 1 << (u & 7)
  }

  /** Hashes the touched units again, then writes the trailer (not fsynced). */
  async finish(t: { readonly seq: number; readonly time: number; readonly anchor: number }): Promise<Base> {
    const { layout } = this
    if (this.windowFirst !== layout.units) throw new Error("the checksum table is incomplete")
    if (!ReceiverMutants.foldSkipsRehash) await this.rehash()
    const trailer: BaseTrailerV2 = {
      ...t,
      blockSize: this.geometry.blockSize,
      blockCount: this.geometry.blockCount,
      unitBytes: layout.unitBytes,
      tableCrc: await crcOfRange(this.out, layout.tableOffset, layout.tableBytes)
    }
    await pwriteFully(this.out, encodeBaseTrailerV2(trailer), layout.trailerOffset)
    return { format: 2, ...trailer, trailerOffset: layout.trailerOffset }
  }

  private async rehash(): Promise<void> {
    const { layout } = this
    const entries = this.window.length / 4
    const unit = Buffer.allocUnsafe(layout.unitBytes)
    for (let first = 0; first < layout.units; first += entries) {
      const count = Math.min(entries, layout.units - first)
      let any = false
      for (let u = first; u < first + count && !any; u++) any = (this.dirty[u >> 3]! & (1 << (u & 7))) !== 0
      if (!any) continue
      const window = this.window.subarray(0, count * 4)
      await preadFully(this.out, window, layout.tableOffset + first * 4)
      for (let u = first; u < first + count; u++) {
        if ((this.dirty[u >> 3]! & (1 << (u & 7))) === 0) continue
        const bytes = unit.subarray(0, Math.min(layout.unitBytes, layout.diskBytes - u * layout.unitBytes))
        await preadFully(this.out, bytes, u * layout.unitBytes)
        window.writeUInt32LE(crc32c(bytes), (u - first) * 4)
      }
      await pwriteFully(this.out, window, layout.tableOffset + first * 4)
    }
  }
}

/** Writes the base of a new disk to `file` (all zeros, sparse; seq 0), fsynced. */
export const writeEmptyBase = async (file: string, geometry: Geometry.Geometry): Promise<void> => {
  // Read too: the table's CRC is taken from what was written.
  const handle = await fs.open(file, "w+", 0o644)
  try {
    const writer = new BaseWriter(handle, geometry, tuning.unitBytes)
    await handle.truncate(writer.layout.fileBytes)
    const { diskBytes, unitBytes, units } = writer.layout
    for (let u = 0; u < units; u++) {
      const pending = writer.put(u, zeroCrc(Math.min(unitBytes, diskBytes - u * unitBytes)))
      if (pending !== undefined) await pending
    }
    await writer.finish({ seq: 0, time: 0, anchor: 0 })
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Writes `temp`: the current base of `diskDir` (checked as it is copied), with `apply` run
 * over it (it reports the bytes it changes with `touch`) — fsynced, not renamed. `expectSeq`:
 * the seq the caller believes the base is at.
 */
export const rewriteBase = async (
  diskDir: string,
  temp: string,
  geometry: Geometry.Geometry,
  expectSeq: number,
  apply: (
    out: fs.FileHandle,
    touch: (offset: number, length: number) => void
  ) => Promise<{ readonly seq: number; readonly time: number; readonly anchor: number }>
): Promise<Base> => {
  const out = await fs.open(temp, "w+", 0o644)
  try {
    const old = await openBase(diskDir, geometry)
    let writer: BaseWriter
    try {
      if (old.base.seq !== expectSeq)
        throw corrupt(old.file, old.base.trailerOffset + 8, `at seq ${old.base.seq}, expected ${expectSeq}`)
      // A format-1 base keeps no unit: the new one gets today's.
      writer = new BaseWriter(out, geometry, old.base.format === 2 ? old.base.unitBytes : tuning.unitBytes)
      await out.truncate(writer.layout.fileBytes)
      await walkBase(old.handle, old.file, old.base, geometry, {
        onUnit: writer.put,
        // Holes stay holes: `out` was just extended with zeros.
        onChunk: (at, data, zero) => (zero ? undefined : pwriteFully(out, data, at))
      })
    } finally {
      await old.handle.close()
    }
    const next = await writer.finish(await apply(out, (offset, length) => writer.touch(offset, length)))
    await out.sync()
    return next
  } finally {
    await out.close()
  }
}

// ---------------------------------------------------------------------------------------------
// Cross-checks with the segments

/**
 * Whether the base's seq agrees with the segments: when a segment still holds record `seq`
 * (a fold leaves the segment that holds its point when it is not wholly folded, and removes it
 * last otherwise), that record must be the one the base was folded to — its anchor (format 2),
 * or a recovery point with the base's time (format 1). A trailer whose seq was changed (even
 * with a valid CRC) then does not match; segments that start after the base are checked for
 * continuity by `openChain`. Read-only.
 */
export const anchorDamage = async (
  diskDir: string,
  base: Base,
  names: ReadonlyArray<string>
): Promise<LogCorrupt | undefined> => {
  if (base.seq === 0) return undefined
  const holder = names
    .map((name) => ({ name, firstSeq: parseSegmentName(name) }))
    .filter(
      (f): f is { name: string; firstSeq: number } => f.firstSeq !== undefined && f.firstSeq <= base.seq
    )
    .sort((a, b) => a.firstSeq - b.firstSeq)
    .at(-1)
  if (holder === undefined) return undefined
  const file = path.join(diskDir, holder.name)
  const baseFile = path.join(diskDir, BASE_FILE)
  const handle = await fs.open(file, "r")
  try {
    const { size } = await handle.stat()
    const indexed = await readIndex(path.join(diskDir, indexName(holder.name)), size, holder.firstSeq)
    let entries: ReadonlyArray<IndexEntry> | undefined =
      indexed._tag === "Entries" ? indexed.entries : undefined
    let damage: LogCorrupt | undefined
    if (entries === undefined || entries[0]?.seq !== holder.firstSeq) {
      const scan = await scanSegment(handle, size, { firstSeq: holder.firstSeq, prevSeq: undefined })
      entries = scan.entries
      if (scan.damage !== undefined) damage = corrupt(file, scan.damage.offset, describeDamage(scan.damage))
    }
    const record = entries.find((e) => e.seq === base.seq)
    if (record === undefined) {
      const last = entries.at(-1)?.seq
      if (damage !== undefined && (last ?? 0) < base.seq) return damage
      return corrupt(
        baseFile,
        base.trailerOffset + 8,
        `the base image says it is at seq ${base.seq}, but ${holder.name}, which would hold that record, ${last === undefined ? "holds none" : `skips it (its records run ${entries[0]!.seq}..${last})`}: the trailer or the segment was changed`
      )
    }
    const matches =
      base.format === 2
        ? recordAnchor(record) === base.anchor
        : record.time === base.time && isRecoveryPoint(record)
    if (!matches)
      return corrupt(
        baseFile,
        base.trailerOffset + 8,
        `the base image says it is at seq ${base.seq}, but record ${base.seq} (${holder.name} at byte ${record.offset}) is not the one it was folded to: the trailer or the segment was changed`
      )
    return undefined
  } finally {
    await handle.close()
  }
}

// ---------------------------------------------------------------------------------------------
// Scrub

export interface BaseReport {
  /** `undefined` when the trailer itself cannot be read. */
  readonly format: 1 | 2 | undefined
  readonly seq: number | undefined
  /** Format 1 holds no checksums: its image data cannot be verified. */
  readonly verified: boolean
  readonly damage: ReadonlyArray<LogCorrupt>
}

/**
 * Checks a disk's base image in full, read-only (safe beside a running receiver: a fold
 * renames a new base over it, and the open file stays the old one): the trailer, its geometry
 * against `disk.json`, the size, the table and every unit, and the seq against the segments.
 */
export const inspectBaseImage = async (diskDir: string, meta: DiskMeta): Promise<BaseReport> => {
  const geometry = { blockSize: meta.blockSize, blockCount: meta.blockCount }
  let opened: Awaited<ReturnType<typeof openBase>>
  try {
    opened = await openBase(diskDir, geometry)
  } catch (e) {
    if (e instanceof LogCorrupt) return { format: undefined, seq: undefined, verified: false, damage: [e] }
    throw e
  }
  const { handle, file, base } = opened
  try {
    const damage = await walkBase(handle, file, base, geometry, { collect: true })
    // A fold may remove the segment meanwhile: then this base was replaced, and the new one is
    // checked at the next look.
    const anchor = await anchorDamage(diskDir, base, await fs.readdir(diskDir)).catch((e: unknown) =>
      isEnoent(e) ? undefined : Promise.reject(e)
    )
    if (anchor !== undefined) damage.push(anchor)
    return { format: base.format, seq: base.seq, verified: base.format === 2, damage }
  } finally {
    await handle.close()
  }
}

/**
 * Every damage of a disk's base image, each naming the file and byte offset (empty: sound).
 * A format-1 base has no data checksums: only its trailer, size and seq are checked (see
 * `inspectBaseImage` for whether the data was verified).
 */
export const verifyBaseImage = async (diskDir: string, meta: DiskMeta): Promise<ReadonlyArray<LogCorrupt>> =>
  (await inspectBaseImage(diskDir, meta)).damage

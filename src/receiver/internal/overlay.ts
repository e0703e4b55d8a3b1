/**
 * The overlay of a writable mount (`cdp-sync mount --overlay FILE`): reads of the point with
 * the overlay's writes over it, writes kept in FILE (layout: `overlayFormat.ts`), never in
 * the receiver's log.
 *
 * A write into a cluster the overlay does not hold copies the rest of the cluster from the
 * point first (copy-on-write), so a cluster is always whole. Requests touching a cluster go
 * through it one at a time, in the order they came (`ClusterGate`); requests on other
 * clusters run beside them. A cluster's bit is set in memory once its data is written
 * (reads see it at once) and on disk only by a flush, after the data is fsynced: write the
 * data, fsync, write the bitmap pages, fsync. After a crash every cluster reads as the
 * point, or as its last flushed state, or as a write made to it since (a 512-byte sector of
 * an in-place overwrite may hold the old or the new bytes, as on a disk); everything a
 * completed flush covered is there.
 *
 * `openOverlay` refuses (`OverlayRefused`) a path that is not a regular file, an overlay of
 * another disk, point or size, a damaged header or bitmap, and one open elsewhere (`FILE.lock`,
 * `pidLock.ts`; also in this process). The caller checks FILE is outside the receiver's directory.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { OverlayMutants } from "./mutants.js"
import { isEnoent, preadFully, pwritevFully, syncDirectory } from "./files.js"
import {
  checkIdentity,
  CLUSTERS_PER_PAGE,
  decodeHeader,
  decodePage,
  encodeHeader,
  encodePage,
  HEADER_BYTES,
  identityMismatch,
  type OverlayIdentity,
  type OverlayLayout,
  OverlayRefused,
  overlayLayout,
  PAGE_BYTES,
  pageOffset
} from "./overlayFormat.js"
import { releaseLock, takeLock } from "./pidLock.js"

export { type OverlayIdentity, OverlayRefused }

/** What the point reads `[offset, offset + length)` as (the mount's point reader). */
export type Under = (offset: number, length: number) => Promise<Uint8Array>

export interface Overlay {
  readonly file: string
  /** Bytes `[offset, offset + length)` of the point with the overlay's writes over it. */
  read(offset: number, length: number, under: Under): Promise<Uint8Array>
  /** Applies the writes in order (ranges are 512-aligned and inside the disk: the NBD server checks). */
  write(
    writes: ReadonlyArray<{ readonly offset: number; readonly bytes: Uint8Array }>,
    under: Under
  ): Promise<void>
  /** Every write answered before is durable (NBD FLUSH and FUA). */
  flush(): Promise<void>
  /** Flushes, closes the file and releases its lock. */
  close(): Promise<void>
}

/** Cluster size of overlays created from now on (internal: tests shrink it to reach page edges). */
export const tuning = { clusterBytes: 4096 }

/** The file under an overlay: whole positional reads and writes, fsync (a seam the crash tests fill). */
export interface OverlayIo {
  size(): Promise<number>
  read(out: Uint8Array, position: number): Promise<void>
  write(buffers: ReadonlyArray<Uint8Array>, position: number): Promise<void>
  sync(): Promise<void>
  close(): Promise<void>
}

const handleIo = (handle: fs.FileHandle): OverlayIo => ({
  size: async () => (await handle.stat()).size,
  read: (out, position) => preadFully(handle, out, position),
  write: (buffers, position) => pwritevFully(handle, buffers, position),
  sync: () => handle.sync(),
  close: () => handle.close()
})

/** Requests on overlapping cluster ranges run one at a time, in arrival order; others run beside them. */
export class ClusterGate {
  private readonly active = new Set<{ first: number; last: number; done: Promise<void> }>()

  /** Waits for the earlier requests on `[first, last]`; call the result when done. */
  async enter(first: number, last: number): Promise<() => void> {
    const before: Array<Promise<void>> = []
    for (const e of this.active) if (e.first <= last && first <= e.last) before.push(e.done)
    let release!: () => void
    const entry = { first, last, done: new Promise<void>((r) => (release = r)) }
    this.active.add(entry)
    if (before.length > 0) await Promise.all(before)
    return () => {
      this.active.delete(entry)
      release()
    }
  }
}

const testBit = (bits: Uint8Array | undefined, i: number): boolean =>
  bits !== undefined && ((bits[i >> 3]! >> (i & 7)) & 1) === 1

/**
 * Which clusters the overlay holds. Fields by owner: `durable` is what the file's bitmap says
 * (changed only by a flush, once the data is fsynced); `pending` holds clusters written since
 * the last flush took them (set by a write once its data is written).
 */
class HeldClusters {
  readonly durable = new Map<number, Uint8Array>()
  pending = new Map<number, Uint8Array>()

  has(c: number): boolean {
    const page = Math.floor(c / CLUSTERS_PER_PAGE)
    const i = c - page * CLUSTERS_PER_PAGE
    return testBit(this.durable.get(page), i) || testBit(this.pending.get(page), i)
  }

  add(c: number): void {
    const page = Math.floor(c / CLUSTERS_PER_PAGE)
    const i = c - page * CLUSTERS_PER_PAGE
    let bits = this.pending.get(page)
    if (bits === undefined) this.pending.set(page, (bits = new Uint8Array(PAGE_BYTES - 8)))
    bits[i >> 3]! |= 1 << (i & 7)
  }
}

const refused = (file: string, offset: number, reason: OverlayRefused["reason"], detail: string) =>
  new OverlayRefused({ file, offset, reason, detail })

/** Reads and checks the header and bitmap of an overlay file already open as `io`. */
const readOverlay = async (io: OverlayIo, file: string, identity: OverlayIdentity) => {
  const size = await io.size()
  const head = Buffer.alloc(Math.min(size, HEADER_BYTES))
  await io.read(head, 0)
  const header = decodeHeader(head)
  if (header._tag === "Bad") throw refused(file, header.offset, header.reason, header.detail)
  const mismatch = identityMismatch(header.identity, identity)
  if (mismatch !== undefined) throw refused(file, mismatch.offset, mismatch.reason, mismatch.detail)
  const { layout } = header
  if (size !== layout.fileBytes)
    throw refused(
      file,
      Math.min(size, layout.fileBytes),
      "damaged",
      `${size} bytes, expected ${layout.fileBytes} (header, bitmap and data of ${layout.clusters} clusters)`
    )
  const held = new HeldClusters()
  const chunkPages = 2048
  const zeros = Buffer.alloc(chunkPages * PAGE_BYTES)
  for (let first = 0; first < layout.pages; first += chunkPages) {
    const count = Math.min(chunkPages, layout.pages - first)
    const chunk = Buffer.alloc(count * PAGE_BYTES)
    await io.read(chunk, pageOffset(layout, first))
    if (chunk.equals(zeros.subarray(0, chunk.length))) continue // pages never written: holes
    for (let k = 0; k < count; k++) {
      const page = first + k
      const bits = decodePage(layout, page, chunk.subarray(k * PAGE_BYTES, (k + 1) * PAGE_BYTES))
      if (bits === undefined) continue
      if ("detail" in bits) throw refused(file, pageOffset(layout, page) + bits.at, "damaged", bits.detail)
      held.durable.set(page, bits)
    }
  }
  return { layout, held }
}

/**
 * An overlay on a file already open as `io` and locked (the seam the crash tests use with
 * an in-memory file); `onClose` runs after the file is closed.
 */
export const attachOverlay = async (
  io: OverlayIo,
  file: string,
  identity: OverlayIdentity,
  onClose: () => Promise<void> = async () => undefined
): Promise<Overlay> => {
  const { layout, held } = await readOverlay(io, file, identity)
  return new OpenOverlay(io, file, identity.diskBytes, layout, held, onClose)
}

class OpenOverlay implements Overlay {
  private readonly gate = new ClusterGate()
  /** The flush in progress or last done: flushes run one after another. */
  private flushing: Promise<void> = Promise.resolve()
  /** Set when an fsync or bitmap write failed: what is durable is then unknown, so nothing goes on. */
  private failed: unknown = undefined
  private closed = false

  constructor(
    private readonly io: OverlayIo,
    readonly file: string,
    private readonly diskBytes: number,
    private readonly layout: OverlayLayout,
    private readonly held: HeldClusters,
    private readonly onClose: () => Promise<void>
  ) {}

  private check(offset: number, length: number): void {
    if (this.closed) throw new Error(`overlay ${this.file} is closed`)
    if (this.failed !== undefined) throw this.failed
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
      throw new RangeError(`bytes ${offset}..${offset + length}: not a range`)
    if (offset + length > this.diskBytes)
      throw new RangeError(
        `bytes ${offset}..${offset + length} lie outside the disk (${this.diskBytes} bytes)`
      )
  }

  private clusterEnd(c: number): number {
    return Math.min(this.diskBytes, (c + 1) * this.layout.clusterBytes)
  }

  private async enter(offset: number, length: number): Promise<() => void> {
    const c = this.layout.clusterBytes
    if (OverlayMutants.clustersUngated) return () => undefined
    return this.gate.enter(Math.floor(offset / c), Math.floor((offset + Math.max(1, length) - 1) / c))
  }

  async read(offset: number, length: number, under: Under): Promise<Uint8Array> {
    this.check(offset, length)
    const out = Buffer.alloc(length)
    if (length === 0) return out
    const leave = await this.enter(offset, length)
    try {
      const cb = this.layout.clusterBytes
      const end = offset + length
      let cursor = offset
      while (cursor < end) {
        // A run of clusters all held, or all not.
        const inOverlay = this.held.has(Math.floor(cursor / cb))
        let runEnd = Math.min(end, this.clusterEnd(Math.floor(cursor / cb)))
        while (runEnd < end && this.held.has(Math.floor(runEnd / cb)) === inOverlay)
          runEnd = Math.min(end, this.clusterEnd(Math.floor(runEnd / cb)))
        const part = out.subarray(cursor - offset, runEnd - offset)
        if (inOverlay) await this.io.read(part, this.layout.dataOffset + cursor)
        else part.set(await underExactly(under, cursor, runEnd - cursor))
        cursor = runEnd
      }
      return out
    } finally {
      leave()
    }
  }

  async write(
    writes: ReadonlyArray<{ readonly offset: number; readonly bytes: Uint8Array }>,
    under: Under
  ): Promise<void> {
    for (const w of writes) {
      this.check(w.offset, w.bytes.length)
      if (w.bytes.length > 0) await this.writeOne(w.offset, w.bytes, under)
    }
  }

  private async writeOne(offset: number, bytes: Uint8Array, under: Under): Promise<void> {
    const cb = this.layout.clusterBytes
    const end = offset + bytes.length
    const first = Math.floor(offset / cb)
    const last = Math.floor((end - 1) / cb)
    const leave = await this.enter(offset, bytes.length)
    try {
      // Copy-on-write: the rest of a partly written cluster the overlay does not hold yet.
      const cow = !OverlayMutants.partialWithoutCopy
      const head = cow && offset > first * cb && !this.held.has(first)
      const tail = cow && end < this.clusterEnd(last) && !this.held.has(last)
      const before = head ? await underExactly(under, first * cb, offset - first * cb) : undefined
      const after = tail ? await underExactly(under, end, this.clusterEnd(last) - end) : undefined
      const start = before === undefined ? offset : first * cb
      await this.io.write(
        [before, bytes, after].filter((b) => b !== undefined),
        this.layout.dataOffset + start
      )
      for (let c = first; c <= last; c++) if (!this.held.has(c)) this.held.add(c)
    } finally {
      leave()
    }
  }

  flush(): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`overlay ${this.file} is closed`))
    const next = this.flushing.then(() => this.flushNow())
    this.flushing = next.catch(() => undefined)
    return next
  }

  private async flushNow(): Promise<void> {
    if (this.failed !== undefined) throw this.failed
    const taken = this.held.pending
    this.held.pending = new Map()
    try {
      // The data of every write answered so far, then the bits of the clusters they made held.
      if (!OverlayMutants.bitBeforeData) await this.io.sync()
      if (taken.size === 0) return
      for (const [page, bits] of taken) {
        const durable = this.held.durable.get(page) ?? new Uint8Array(bits.length)
        for (let i = 0; i < bits.length; i++) durable[i]! |= bits[i]!
        this.held.durable.set(page, durable)
      }
      const pages = [...taken.keys()].sort((a, b) => a - b)
      for (const page of pages) {
        await this.io.write([encodePage(page, this.held.durable.get(page)!)], pageOffset(this.layout, page))
      }
      await this.io.sync()
    } catch (e) {
      this.failed = e
      throw e
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    try {
      if (this.failed === undefined) await this.flush()
    } finally {
      this.closed = true
      try {
        await this.io.close()
      } finally {
        await this.onClose()
      }
    }
  }
}

const underExactly = async (under: Under, offset: number, length: number): Promise<Uint8Array> => {
  const bytes = await under(offset, length)
  if (bytes.length !== length)
    throw new RangeError(`the point read ${bytes.length} bytes at ${offset}, asked for ${length}`)
  return bytes
}

/** Lock files this process holds (`takeLock` takes its own pid for a stale one). */
const heldHere = new Set<string>()

/** Writes a new overlay aside and renames it to `file`: a crash leaves no file or a whole one. */
const create = async (file: string, identity: OverlayIdentity): Promise<void> => {
  const header = encodeHeader(identity, tuning.clusterBytes)
  const layout = overlayLayout(identity.diskBytes, tuning.clusterBytes)
  const temp = `${file}.${process.pid}.tmp`
  const handle = await fs.open(temp, "w", 0o644)
  try {
    await pwritevFully(handle, [header], 0)
    await handle.truncate(layout.fileBytes)
    await handle.sync()
  } finally {
    await handle.close()
  }
  await fs.rename(temp, file)
  await syncDirectory(path.dirname(file))
}

const notAFile = (file: string, st: { isDirectory(): boolean; isBlockDevice(): boolean }) =>
  refused(
    file,
    0,
    "not-a-file",
    st.isDirectory() ? "a directory" : st.isBlockDevice() ? "a block device" : "not a regular file"
  )

/** Creates FILE when missing; reopens it (its earlier writes visible) when it belongs to this point; refuses otherwise. */
export const openOverlay = async (file: string, identity: OverlayIdentity): Promise<Overlay> => {
  checkIdentity(identity)
  file = path.resolve(file)
  const st = await fs.stat(file).catch((e: unknown) => {
    if (isEnoent(e)) return undefined
    throw e
  })
  if (st !== undefined && !st.isFile()) throw notAFile(file, st)
  const lock = `${file}.lock`
  if (!OverlayMutants.lockNotChecked) {
    if (heldHere.has(lock)) throw refused(file, 0, "locked", `open in this process (pid ${process.pid})`)
    const holder = await takeLock(lock)
    if (holder !== undefined)
      throw refused(file, 0, "locked", `in use by another process (pid ${holder}; ${lock})`)
    heldHere.add(lock)
  }
  const unlock = async () => {
    if (OverlayMutants.lockNotChecked) return
    heldHere.delete(lock)
    await releaseLock(lock)
  }
  try {
    if (st === undefined) await create(file, identity)
    const handle = await fs.open(file, "r+")
    try {
      const opened = await handle.stat()
      if (!opened.isFile()) throw notAFile(file, opened)
      return await attachOverlay(handleIo(handle), file, identity, unlock)
    } catch (e) {
      await handle.close()
      throw e
    }
  } catch (e) {
    await unlock()
    throw e
  }
}

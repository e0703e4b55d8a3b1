/**
 * File helpers for the log store: whole reads and writes at a position, durable
 * renames, a buffered forward reader and sparse copies. Plain promises; the callers
 * wrap them in Effects and map failures to `LogIoError` / `LogCorrupt`.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { isEnoent, preadFully, pwriteFully, syncDirectory } from "../../internal/fileIo.js"

export { isEnoent, preadFully, pwriteFully, syncDirectory }

/** Writes `buffers` back to back at `position` with as few `pwritev` calls as it takes (no copy). */
export const pwritevFully = async (
  handle: fs.FileHandle,
  buffers: ReadonlyArray<Uint8Array>,
  position: number
): Promise<void> => {
  let rest = buffers.filter((b) => b.byteLength > 0)
  while (rest.length > 0) {
    const { bytesWritten } = await handle.writev(rest as Array<Uint8Array>, position)
    position += bytesWritten
    // A short write (rare): drop what was written and go on from there.
    let skip = bytesWritten
    let i = 0
    while (i < rest.length && skip >= rest[i]!.byteLength) skip -= rest[i++]!.byteLength
    rest = rest.slice(i)
    if (rest.length > 0 && skip > 0) rest[0] = rest[0]!.subarray(skip)
  }
}

export const removeIfExists = async (file: string): Promise<boolean> => {
  try {
    await fs.unlink(file)
    return true
  } catch (e) {
    if (isEnoent(e)) return false
    throw e
  }
}

export const readIfExists = async (file: string): Promise<Buffer | undefined> => {
  try {
    return await fs.readFile(file)
  } catch (e) {
    if (isEnoent(e)) return undefined
    throw e
  }
}

/** A buffer read into again and again (`readIfExistsInto`). */
export interface Scratch {
  buf: Buffer
}
export const scratch = (): Scratch => ({ buf: Buffer.alloc(0) })

/**
 * `readIfExists`, into `into` (grown when too small): the bytes are valid until the next read
 * into it. For many small files read in turn (indexes): fresh memory for each is pages the
 * system must map, which cost more than reading them.
 */
export const readIfExistsInto = async (file: string, into: Scratch): Promise<Buffer | undefined> => {
  let handle: fs.FileHandle
  try {
    handle = await fs.open(file, "r")
  } catch (e) {
    if (isEnoent(e)) return undefined
    throw e
  }
  try {
    const { size } = await handle.stat()
    if (into.buf.length < size) into.buf = Buffer.allocUnsafe(Math.max(size, 2 * into.buf.length))
    let done = 0
    while (done < size) {
      const { bytesRead } = await handle.read(into.buf, done, size - done, done)
      if (bytesRead === 0) break
      done += bytesRead
    }
    return into.buf.subarray(0, done)
  } finally {
    await handle.close()
  }
}

/** Write aside, fsync, rename over `file`, fsync the directory: a crash leaves the old or the new file. */
export const writeFileAtomic = async (file: string, bytes: Uint8Array): Promise<void> => {
  const temp = `${file}.tmp`
  const handle = await fs.open(temp, "w", 0o644)
  try {
    await pwriteFully(handle, bytes, 0)
    await handle.sync()
  } finally {
    await handle.close()
  }
  await fs.rename(temp, file)
  await syncDirectory(path.dirname(file))
}

const COPY_CHUNK = 1 << 20
const ZEROS = Buffer.alloc(COPY_CHUNK)

/**
 * Copies `length` bytes from `from` to `to` (both at offset 0), skipping chunks that are all
 * zeros: `to` must already be `length` bytes long and zero there (e.g. freshly truncated), so
 * holes stay holes.
 */
export const sparseCopy = async (from: fs.FileHandle, to: fs.FileHandle, length: number): Promise<void> => {
  const buf = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(1, length)))
  for (let at = 0; at < length; at += buf.length) {
    const part = buf.subarray(0, Math.min(buf.length, length - at))
    await preadFully(from, part, at)
    if (!part.equals(ZEROS.subarray(0, part.length))) await pwriteFully(to, part, at)
  }
}

/**
 * Reads a file forward through a window: `ensure(offset, need)` makes `[offset, offset + need)`
 * (or as much of it as the file holds below `end`) available in `buf` from `buf[offset - start]`.
 * A read fetches at least `window` bytes; `need` may be larger (a record bigger than the window).
 * With `reuse`, reads go into the same memory again (a view is valid until the next `ensure`):
 * a scan that keeps nothing it read saves a fresh window per read (pages the system must map).
 */
export class ForwardReader {
  buf: Buffer = Buffer.alloc(0)
  start = 0
  /** With `reuse`: the memory `buf` is the start of. */
  private store: Buffer | undefined
  constructor(
    private readonly handle: fs.FileHandle,
    readonly end: number,
    private readonly window = 4 << 20,
    /** Called after each read with the bytes read (a background reader paces itself there). */
    private readonly onRead?: (bytes: number) => Promise<void>,
    private readonly reuse = false
  ) {}

  /** Bytes of `[offset, end)` the buffer holds now, without reading (0 when `offset` is outside it). */
  available(offset: number): number {
    return offset >= this.start && offset <= this.start + this.buf.length
      ? this.start + this.buf.length - offset
      : 0
  }

  /** Bytes available from `offset` after the call (may be fewer than `need` at the end). */
  async ensure(offset: number, need: number): Promise<number> {
    const want = Math.min(this.end, offset + need)
    if (offset >= this.start && this.start + this.buf.length >= want)
      return this.start + this.buf.length - offset
    const readTo = Math.min(this.end, Math.max(want, offset + this.window))
    const keepFrom = offset >= this.start && offset <= this.start + this.buf.length ? offset : undefined
    let next: Buffer
    let have = 0
    if (this.reuse && this.store !== undefined && this.store.length >= readTo - offset) {
      // `buf` starts `store`: the bytes kept move to its front.
      if (keepFrom !== undefined) {
        have = this.buf.length - (keepFrom - this.start)
        this.store.copyWithin(0, keepFrom - this.start, this.buf.length)
      }
      next = this.store.subarray(0, readTo - offset)
    } else {
      next = Buffer.allocUnsafe(readTo - offset)
      if (keepFrom !== undefined) {
        const kept = this.buf.subarray(keepFrom - this.start)
        kept.copy(next, 0)
        have = kept.length
      }
      if (this.reuse) this.store = next
    }
    if (readTo - offset > have) {
      await preadFully(this.handle, next.subarray(have), offset + have)
      await this.onRead?.(readTo - offset - have)
    }
    this.buf = next
    this.start = offset
    return this.buf.length
  }

  /** A view of `[offset, offset + length)`; call `ensure` first. */
  view(offset: number, length: number): Buffer {
    return this.buf.subarray(offset - this.start, offset - this.start + length)
  }
}

const errnoCode = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined

/**
 * Where `file` really is — symbolic links followed, a new file's directory resolved — checked
 * not to lie inside the receiver directory `dir` (so no link leads a write there): restore's
 * `--out` and mount's `--overlay`. `home`: `dir` resolved (`undefined` when it does not exist).
 * `refuse` makes the caller's error from a reason; `why` ends the inside-the-directory one.
 */
export const realPathOutside = async <E>(
  dir: string,
  file: string,
  why: string,
  refuse: (reason: string) => E
): Promise<{ readonly target: string; readonly home: string | undefined }> => {
  const absolute = path.resolve(file)
  let target: string
  try {
    await fs.lstat(absolute)
    target = await fs.realpath(absolute).catch((e: unknown) => {
      throw isEnoent(e) ? refuse("a symbolic link to nothing") : e
    })
  } catch (e) {
    if (isEnoent(e)) {
      const parent = await fs.realpath(path.dirname(absolute)).catch((e: unknown) => {
        throw isEnoent(e) || errnoCode(e) === "ENOTDIR" ? refuse("its directory does not exist") : e
      })
      target = path.join(parent, path.basename(absolute))
    } else if (errnoCode(e) === "ENOTDIR") throw refuse("a part of its path is not a directory")
    else throw e
  }
  const home = await fs.realpath(dir).catch((e: unknown) => (isEnoent(e) ? undefined : Promise.reject(e)))
  if (home !== undefined && (target === home || target.startsWith(`${home}${path.sep}`)))
    throw refuse(`${target} is inside the receiver directory ${home}: ${why}`)
  return { target, home }
}

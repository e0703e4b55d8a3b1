/**
 * Reads that bypass the page cache (`O_DIRECT`), for `restore`: it reads gigabytes once, and
 * on the development VM a buffered read cost as much CPU as the I/O took (the kernel
 * allocating, zeroing and copying page-cache pages: 1.1–1.8 s of system time for 2 GiB of
 * records, 0.4 s direct), CPU the checks and the writes share two cores with. A direct read
 * needs its file offset, length and memory aligned: offsets and lengths are rounded out to
 * `ALIGN`, and the buffers are WebAssembly memories, whose bytes start on a page boundary
 * (Node's own buffers come from malloc, 16-byte aligned). Where the file system refuses
 * `O_DIRECT` (at open or at the first read: `EINVAL`), or the platform has none, the file is
 * read through the page cache as before, and so is a read larger than a pooled buffer.
 */
import * as fsSync from "node:fs"
import * as fs from "node:fs/promises"

/** Offsets and lengths of direct reads are multiples of this (a page: more than any sector). */
export const ALIGN = 4096
const WASM_PAGE = 64 * 1024
/**
 * WebAssembly's memory (its global is not in this project's type libraries; it is absent
 * under `--jitless`, and then no read is direct).
 */
const WasmMemory = (
  globalThis as unknown as {
    readonly WebAssembly?: {
      readonly Memory: new (d: {
        initial: number
        maximum: number
        shared: boolean
      }) => { readonly buffer: SharedArrayBuffer }
    }
  }
).WebAssembly?.Memory
const O_DIRECT: number | undefined = (fsSync.constants as { O_DIRECT?: number }).O_DIRECT

const isEinval = (e: unknown): boolean =>
  typeof e === "object" && e !== null && "code" in e && e.code === "EINVAL"

/**
 * A fixed number of buffers of one size for reads, carved from one allocation of shared
 * memory (a worker thread writes from them), handed back once nothing refers to their bytes
 * any more: a restore reads gigabytes, and fresh buffers for each read would keep the
 * garbage collector busy; a `take` waits while all are out. Aligned for direct reads
 * (`aligned`: a WebAssembly memory) or not.
 */
export class BufferPool {
  private readonly free: Array<Buffer> = []
  private readonly waiting: Array<(buf: Buffer) => void> = []
  /** Bytes of each buffer (a multiple of `ALIGN`). */
  readonly size: number
  /** Whether the buffers start on a page boundary (direct reads may go into them). */
  readonly aligned: boolean
  constructor(size: number, count: number, aligned: boolean) {
    this.size = Math.ceil(size / ALIGN) * ALIGN
    const bytes = this.size * count
    const pages = Math.ceil(bytes / WASM_PAGE)
    let memory: SharedArrayBuffer | undefined
    if (aligned && WasmMemory !== undefined)
      try {
        memory = new WasmMemory({ initial: pages, maximum: pages, shared: true }).buffer
      } catch {
        // No address space for it (a WebAssembly memory reserves more than it holds).
      }
    this.aligned = memory !== undefined
    const buf = Buffer.from(memory ?? new SharedArrayBuffer(bytes), 0, bytes)
    for (let i = count - 1; i >= 0; i--) this.free.push(buf.subarray(i * this.size, (i + 1) * this.size))
  }

  /** Whether a `take` now would wait. */
  get empty(): boolean {
    return this.free.length === 0
  }

  /** A buffer of `size` bytes (its bytes are garbage), once one is free. */
  take(): Promise<Buffer> {
    const buf = this.free.pop()
    if (buf !== undefined) return Promise.resolve(buf)
    return new Promise((resolve) => this.waiting.push(resolve))
  }

  /** Shared memory for `bytes` bytes, outside the pool (a record larger than its buffers). */
  static outside(bytes: number): Buffer {
    return Buffer.from(new SharedArrayBuffer(bytes))
  }

  /** Hands back a buffer `take` gave. */
  give(buf: Buffer): void {
    const next = this.waiting.shift()
    if (next !== undefined) next(buf)
    else this.free.push(buf)
  }
}

/** A file open for reading, directly when it can be. */
export class ReadFile {
  private constructor(
    /** Through the page cache; also what a direct read falls back to. */
    readonly handle: fs.FileHandle,
    private direct: fs.FileHandle | undefined
  ) {}

  /** The descriptor of the handle without the page cache, -1 when there is none (threads read it). */
  get directFd(): number {
    return this.direct?.fd ?? -1
  }

  /** Whether reads (into aligned buffers) bypass the page cache. */
  get isDirect(): boolean {
    return this.direct !== undefined
  }

  /**
   * Opens `file`, and (if `direct`) a second handle on it without the page cache. `undefined`
   * when the two are not the same file (replaced between the opens: a fold).
   */
  static async open(file: string, direct: boolean): Promise<ReadFile | undefined> {
    const handle = await fs.open(file, "r")
    try {
      const opened = await ReadFile.beside(handle, file, direct)
      if (opened === undefined) await handle.close()
      return opened
    } catch (e) {
      await handle.close()
      throw e
    }
  }

  /**
   * `handle` (open on `file`), and a direct handle on `file` beside it when it can be;
   * `undefined` when `file` is no longer the file `handle` holds.
   */
  static async beside(handle: fs.FileHandle, file: string, direct: boolean): Promise<ReadFile | undefined> {
    const d = await ReadFile.openDirect(file, direct)
    if (d !== undefined) {
      const [a, b] = await Promise.all([handle.stat({ bigint: true }), d.stat({ bigint: true })])
      if (a.ino !== b.ino || a.dev !== b.dev) {
        await d.close()
        return undefined
      }
    }
    return new ReadFile(handle, d)
  }

  private static async openDirect(file: string, direct: boolean): Promise<fs.FileHandle | undefined> {
    if (!direct || O_DIRECT === undefined) return undefined
    try {
      return await fs.open(file, fsSync.constants.O_RDONLY | O_DIRECT)
    } catch {
      // Refused (EINVAL where the file system has no O_DIRECT), or gone since the first open
      // (which holds it): read through the page cache.
      return undefined
    }
  }

  /**
   * Bytes `[start, end)` of the file, read into `buf` (which holds them: rounded out to
   * `ALIGN` when `aligned`, as the pool's buffers are): a view of them, shorter when the file
   * ends first. Direct when the file and `buf` allow it.
   */
  async read(start: number, end: number, buf: Buffer, aligned: boolean): Promise<Buffer> {
    const from = Math.floor(start / ALIGN) * ALIGN
    const to = Math.ceil(end / ALIGN) * ALIGN
    if (this.direct !== undefined && aligned && to - from <= buf.length) {
      try {
        const got = await readUntil(this.direct, buf.subarray(0, to - from), from, true)
        return buf.subarray(start - from, Math.max(start - from, Math.min(end - from, got)))
      } catch (e) {
        if (!isEinval(e)) throw e
        // The file system takes O_DIRECT at open but not these reads: the page cache from now on.
        const d = this.direct
        this.direct = undefined
        await d.close()
      }
    }
    const into = buf.subarray(0, end - start)
    return into.subarray(0, await readUntil(this.handle, into, start, false))
  }

  async close(): Promise<void> {
    await this.direct?.close()
    await this.handle.close()
  }
}

/** Reads `out.length` bytes at `position`, or up to the end of the file: how many. */
const readUntil = async (
  handle: fs.FileHandle,
  out: Buffer,
  position: number,
  direct: boolean
): Promise<number> => {
  let done = 0
  while (done < out.length) {
    const { bytesRead } = await handle.read(out, done, out.length - done, position + done)
    if (bytesRead === 0) break
    done += bytesRead
    // A direct read stops short only at the end of the file (and may not go on unaligned).
    if (direct && done % ALIGN !== 0) break
  }
  return done
}

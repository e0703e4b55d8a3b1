/**
 * Writes a restored image, in batches (one per read placed): by a worker thread making plain
 * synchronous `pwrite` calls, or, where no worker can be started, through the file handle
 * (each write a round trip through libuv's thread pool). A restore of a dense image from a
 * long log makes tens of thousands of small writes; on the development VM each round trip
 * cost about as much CPU as the write itself (1.4 s of CPU for the 51 k writes of the 1 GiB
 * bench image, 0.7 s written in one thread, 1.0 s through the worker, batches of 5), and the
 * main thread is left to read, check and plan, never blocked by a write the page cache
 * throttles. The worker writes from the bytes in place: every buffer handed to it is shared
 * memory (`SharedArrayBuffer`), not copied.
 */
import type * as fs from "node:fs/promises"
import { Worker } from "node:worker_threads"
import { pwriteFully } from "./files.js"

/** Where the bytes a batch writes are seen as (tests count them; the image is what is written). */
export const imageWrites: { observe: ((at: number, length: number) => void) | undefined } = {
  observe: undefined
}

/**
 * Writes in batches. The bytes `put` refers to must stay as they are until the `after`
 * callbacks of their batch have run.
 */
export interface ImageWriter {
  /** Adds a write of `bytes` at byte `at` of the image to the batch. */
  put(bytes: Buffer, at: number): void
  /** Runs `done` once the batch (every write put so far) is over, written or failed. */
  after(done: () => void): void
  /** Bytes in the batch, not sent yet. */
  readonly batched: number
  /**
   * Sends the batch (if it holds anything). Waits first while `inFlight` batches are out;
   * throws the first failure of an earlier batch (the batch is then dropped, its callbacks run).
   */
  send(inFlight: number): Promise<void>
  /** Sends the batch and waits until every batch is over; throws the first failure. */
  drain(): Promise<void>
  /** Stops the writer (after `drain`, or to give up). */
  close(): Promise<void>
}

/** Batches out, each with what runs when it is over (they end in the order they were sent). */
class Outstanding {
  private readonly pending: Array<ReadonlyArray<() => void>> = []
  private wake: Array<() => void> = []
  failed: { readonly cause: unknown } | undefined

  get size(): number {
    return this.pending.length
  }

  add(dones: ReadonlyArray<() => void>): void {
    this.pending.push(dones)
  }

  /** The oldest batch is over, written or failed. */
  settle(cause?: unknown): void {
    if (cause !== undefined) this.failed ??= { cause }
    for (const done of this.pending.shift() ?? []) done()
    this.woken()
  }

  /** Every batch out is over: the writer stopped. */
  failAll(cause: unknown): void {
    this.failed ??= { cause }
    for (const dones of this.pending.splice(0)) for (const done of dones) done()
    this.woken()
  }

  private woken(): void {
    const wake = this.wake
    this.wake = []
    for (const w of wake) w()
  }

  /** Once no batch is out (failed or not). */
  async settled(): Promise<void> {
    while (this.pending.length > 0) await new Promise<void>((resolve) => this.wake.push(resolve))
  }

  async until(ready: () => boolean): Promise<void> {
    while (!ready() && this.failed === undefined)
      await new Promise<void>((resolve) => this.wake.push(resolve))
    if (this.failed !== undefined) throw this.failed.cause
  }
}

/** The batch being filled: the writes, and what runs once they are over. */
abstract class Batching<W> implements ImageWriter {
  protected writes: Array<W> = []
  private dones: Array<() => void> = []
  batched = 0
  protected readonly out = new Outstanding()

  protected abstract write(bytes: Buffer, at: number): W
  /** Starts writing `writes`; `out.settle` once they are over. */
  protected abstract start(writes: Array<W>): void

  put(bytes: Buffer, at: number): void {
    imageWrites.observe?.(at, bytes.length)
    this.writes.push(this.write(bytes, at))
    this.batched += bytes.length
  }

  after(done: () => void): void {
    this.dones.push(done)
  }

  async send(inFlight: number): Promise<void> {
    try {
      await this.out.until(() => this.out.size < Math.max(1, inFlight))
    } catch (e) {
      // An earlier batch failed: this one is never sent, and is over too.
      const dones = this.dones
      this.writes = []
      this.dones = []
      this.batched = 0
      for (const done of dones) done()
      throw e
    }
    if (this.writes.length === 0 && this.dones.length === 0) return
    const writes = this.writes
    this.out.add(this.dones)
    this.writes = []
    this.dones = []
    this.batched = 0
    if (writes.length === 0) this.out.settle()
    else this.start(writes)
  }

  async drain(): Promise<void> {
    await this.send(Number.POSITIVE_INFINITY).catch(() => undefined)
    await this.out.settled()
    if (this.out.failed !== undefined) throw this.out.failed.cause
  }

  abstract close(): Promise<void>
}

/** Through the file handle: the writes of a batch started at once. */
export class HandleWriter extends Batching<readonly [Buffer, number]> {
  /** The last batch sent, settled. */
  private last: Promise<void> = Promise.resolve()
  constructor(private readonly image: fs.FileHandle) {
    super()
  }

  protected write(bytes: Buffer, at: number): readonly [Buffer, number] {
    return [bytes, at]
  }

  protected start(writes: Array<readonly [Buffer, number]>): void {
    // Batches end in order: one settles only after the one before.
    const previous = this.last
    this.last = Promise.allSettled(writes.map(([bytes, at]) => pwriteFully(this.image, bytes, at))).then(
      async (results) => {
        await previous
        this.out.settle(results.find((r) => r.status === "rejected")?.reason)
      }
    )
  }

  async close(): Promise<void> {
    await this.last
  }
}

/**
 * The worker's code: each message a batch of writes (memory, from, length, at) from the
 * shared memories it names; one reply each, in order.
 */
const WORKER = `
const { parentPort, workerData } = require("node:worker_threads")
const { writeSync } = require("node:fs")
parentPort.on("message", ({ memories, writes }) => {
  const views = memories.map((m) => new Uint8Array(m))
  try {
    for (let i = 0; i < writes.length; i += 4) {
      const bytes = views[writes[i]]
      let from = writes[i + 1], length = writes[i + 2], at = writes[i + 3]
      while (length > 0) {
        const n = writeSync(workerData.fd, bytes, from, length, at)
        from += n; length -= n; at += n
      }
    }
    parentPort.postMessage(null)
  } catch (e) {
    parentPort.postMessage({ message: String(e && e.message), code: e && e.code, errno: e && e.errno, syscall: e && e.syscall })
  }
})
`

/** An error the worker reported, as `fs` would have thrown it. */
const errorOf = (m: { message: string; code?: string; errno?: number; syscall?: string }): Error =>
  Object.assign(new Error(m.message), { code: m.code, errno: m.errno, syscall: m.syscall })

/** A write the worker makes: bytes of a shared memory, and where in the image. */
interface SharedWrite {
  readonly memory: SharedArrayBuffer
  readonly from: number
  readonly length: number
  readonly at: number
}

/** By a worker thread, on the image's file descriptor, from shared memory (never copied). */
export class WorkerWriter extends Batching<SharedWrite> {
  private exited = false

  private constructor(private readonly worker: Worker) {
    super()
    worker.on("message", (m: null | { message: string }) =>
      this.out.settle(m === null ? undefined : errorOf(m))
    )
    worker.on("error", (cause) => this.out.failAll(cause))
    worker.on("exit", () => {
      this.exited = true
      this.out.failAll(new Error("the image writer's thread stopped"))
    })
  }

  /** `undefined` when no worker thread can be started here. */
  static start(image: fs.FileHandle): WorkerWriter | undefined {
    try {
      return new WorkerWriter(new Worker(WORKER, { eval: true, workerData: { fd: image.fd } }))
    } catch {
      return undefined
    }
  }

  protected write(bytes: Buffer, at: number): SharedWrite {
    if (!(bytes.buffer instanceof SharedArrayBuffer))
      throw new Error("the image writer writes from shared memory only")
    return { memory: bytes.buffer, from: bytes.byteOffset, length: bytes.length, at }
  }

  protected start(writes: Array<SharedWrite>): void {
    const memories: Array<SharedArrayBuffer> = []
    const flat: Array<number> = []
    for (const w of writes) {
      let m = memories.indexOf(w.memory)
      if (m < 0) m = memories.push(w.memory) - 1
      flat.push(m, w.from, w.length, w.at)
    }
    this.worker.postMessage({ memories, writes: flat })
  }

  async close(): Promise<void> {
    if (!this.exited) await this.worker.terminate()
  }
}

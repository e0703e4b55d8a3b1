/**
 * Helpers for the overlay tests (src/receiver/internal/overlay.ts): the bytes of a point
 * (deterministic, pseudo-random, never a run of zeros), a reader of them that yields between
 * calls (so concurrent requests interleave), and an in-memory file that can crash: it keeps
 * what was fsynced apart from what was only written, and a crash keeps a random subset of the
 * unsynced writes, each torn at 512-byte sectors (a sector is written whole or not at all).
 */
import type { OverlayIdentity, OverlayIo, Under } from "../../src/receiver/internal/overlay.js"

/** Bytes of a point, shared by every disk size (a prefix of one buffer). */
let pointBytes = Buffer.alloc(0)
export const pointOf = (diskBytes: number): Buffer => {
  if (pointBytes.length < diskBytes) {
    const b = Buffer.alloc(Math.max(diskBytes, 16 << 20))
    const words = new Uint32Array(b.buffer, b.byteOffset, b.length / 4)
    let x = 0x9e3779b9
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13
      x ^= x >>> 17
      x ^= x << 5
      words[i] = (x | 0x01010101) >>> 0 // no zero byte: a hole never passes for the point
    }
    pointBytes = b
  }
  return pointBytes.subarray(0, diskBytes)
}

/** The point as the mount reads it; a macrotask turn first, so requests really interleave. */
export const underOf =
  (point: Buffer): Under =>
  async (offset, length) => {
    await new Promise((r) => setImmediate(r))
    return Buffer.from(point.subarray(offset, offset + length))
  }

export const identity = (diskBytes: number, over: Partial<OverlayIdentity> = {}): OverlayIdentity => ({
  diskId: "vm-1",
  diskBytes,
  seq: 42,
  pointTime: 1_700_000_000_123,
  ...over
})

/** A write's bytes: never zero, and different for every (tag, byte). */
export const pattern = (tag: number, length: number): Buffer => {
  const b = Buffer.alloc(length)
  for (let i = 0; i < length; i++) b[i] = ((tag * 131 + i * 7 + (i >> 9) * 13) % 255) + 1
  return b
}

const SECTOR = 512

/**
 * An in-memory overlay file. `crashAfter`: the number of writes and fsyncs it does before it
 * crashes (`Infinity`: never); from then on every call fails and `crashImage` holds what a
 * machine would find after a power loss at that moment.
 */
export class CrashFile implements OverlayIo {
  /** What survives a crash for sure (as of the last fsync). */
  readonly durable: Buffer
  /** What reads see. */
  readonly current: Buffer
  private unsynced: Array<{ readonly position: number; readonly bytes: Buffer }> = []
  crashImage: Buffer | undefined
  ios = 0

  constructor(
    image: Buffer,
    private crashAfter: number,
    private readonly random: () => number
  ) {
    this.durable = Buffer.from(image)
    this.current = Buffer.from(image)
  }

  private step(): void {
    if (this.crashImage !== undefined) throw new Error("crashed")
    if (this.ios++ < this.crashAfter) return
    const image = Buffer.from(this.durable)
    for (const w of this.unsynced)
      for (let at = 0; at < w.bytes.length; at += SECTOR)
        if (this.random() < 0.5)
          w.bytes.copy(image, w.position + at, at, Math.min(w.bytes.length, at + SECTOR))
    this.crashImage = image
    throw new Error("crashed")
  }

  /** Crashes now (as if the power went before the next call). */
  crash(): Buffer {
    this.crashAfter = this.ios
    try {
      this.step()
    } catch {}
    return this.crashImage!
  }

  async size(): Promise<number> {
    return this.current.length
  }
  async read(out: Uint8Array, position: number): Promise<void> {
    if (this.crashImage !== undefined) throw new Error("crashed")
    await new Promise((r) => setImmediate(r))
    if (position + out.length > this.current.length) throw new Error(`unexpected end of file at ${position}`)
    out.set(this.current.subarray(position, position + out.length))
  }
  async write(buffers: ReadonlyArray<Uint8Array>, position: number): Promise<void> {
    await new Promise((r) => setImmediate(r))
    this.step()
    const bytes = Buffer.concat(buffers)
    if (position % SECTOR !== 0 || bytes.length % SECTOR !== 0)
      throw new Error(`write of ${bytes.length} bytes at ${position}: not whole sectors`)
    bytes.copy(this.current, position)
    this.unsynced.push({ position, bytes })
  }
  async sync(): Promise<void> {
    await new Promise((r) => setImmediate(r))
    this.step()
    for (const w of this.unsynced) w.bytes.copy(this.durable, w.position)
    this.unsynced = []
  }
  async close(): Promise<void> {}
}

/** The identity the overlay-header corpus (test/fixtures/overlay-corpus) is opened with: 16 clusters of 4 KiB. */
export const CORPUS_IDENTITY: OverlayIdentity = identity(64 * 1024)

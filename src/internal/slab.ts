/**
 * Room for short-lived byte copies carved from shared slabs, as Node's Buffer pool does:
 * one allocation per slab instead of one small ArrayBuffer (with its own external-memory
 * accounting) per copy. A slab lives while any view into it is referenced. Requests over
 * `largest` bytes get a buffer of their own. Views are 8-byte aligned. No zero fill:
 * every byte is overwritten by the caller.
 */
export const makeSlabAllocator = (options: { readonly slabBytes: number; readonly largest: number }) => {
  let slab: Uint8Array | undefined
  let used = 0
  return (n: number): Uint8Array => {
    if (n > options.largest) return Buffer.allocUnsafeSlow(n)
    if (slab === undefined || slab.byteLength - used < n) {
      slab = Buffer.allocUnsafeSlow(options.slabBytes)
      used = 0
    }
    const view = slab.subarray(used, used + n)
    used = (used + n + 7) & ~7
    return view
  }
}

/** A copy carved from a pooled slab, and the call that hands its room back. */
export interface Lease {
  readonly bytes: Uint8Array
  /** Idempotent. After it the bytes may be overwritten by another copy at any time. */
  readonly release: () => void
}

const noRelease = () => {}

/**
 * Copies carved from slabs that are recycled, not left to the garbage collector: a slab
 * goes back to the pool once it is full and every copy carved from it is released. A
 * copy never released only keeps its slab out of the pool (the collector takes it then),
 * so a missed release costs an allocation, never a wrong byte; a release while the copy
 * is still read is the bug this design must not have. Requests over `largest` bytes get
 * a buffer of their own. At most `keep` free slabs are held.
 */
export const makeSlabPool = (options: {
  readonly slabBytes: number
  readonly largest: number
  readonly keep: number
}) => {
  interface Slab {
    readonly memory: Buffer
    used: number
    live: number
    full: boolean
  }
  const free: Array<Slab> = []
  let current: Slab | undefined
  const recycle = (slab: Slab) => {
    if (free.length >= options.keep) return
    slab.used = 0
    slab.full = false
    free.push(slab)
  }
  /** Room for `n` bytes, not filled: the caller overwrites every byte before reading any. */
  const room = (n: number): Lease => {
    if (n > options.largest) return { bytes: Buffer.allocUnsafeSlow(n), release: noRelease }
    if (current === undefined || current.memory.byteLength - current.used < n) {
      if (current !== undefined) {
        current.full = true
        if (current.live === 0) recycle(current)
      }
      current = free.pop() ?? {
        memory: Buffer.allocUnsafeSlow(options.slabBytes),
        used: 0,
        live: 0,
        full: false
      }
    }
    const slab = current
    // A `Buffer` view (as the slab is): native calls over it (CRC32C) need no other view.
    const view = slab.memory.subarray(slab.used, slab.used + n)
    slab.used = (slab.used + n + 7) & ~7
    slab.live++
    let released = false
    return {
      bytes: view,
      release: () => {
        if (released) return
        released = true
        slab.live--
        if (slab.live === 0 && slab.full) recycle(slab)
      }
    }
  }
  return {
    room,
    copy: (bytes: Uint8Array): Lease => {
      const lease = room(bytes.byteLength)
      lease.bytes.set(bytes)
      return lease
    },
    /** Free slabs held (for tests). */
    freeSlabs: () => free.length
  }
}

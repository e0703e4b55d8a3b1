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

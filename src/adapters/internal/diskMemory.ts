/**
 * The in-memory VirtualDisk: sparse, one buffer per tracking block, allocated on
 * its first write. Untouched blocks read as zeros and cost nothing.
 */
import { Effect } from "effect"
import type * as Geometry from "../../domain/Geometry.js"
import type { VirtualDisk } from "../VirtualDisk.js"
import { checkBlock, checkRange } from "./disk.js"

/** The in-memory disk also says how many blocks it holds, so sparseness is observable. */
export interface MemoryDisk extends VirtualDisk.Service {
  readonly allocatedBlocks: () => number
}

export const make = (geometry: Geometry.Geometry): MemoryDisk => {
  const blocks = new Map<number, Uint8Array>()
  const bs = geometry.blockSize

  // Every call runs synchronously, so a request is atomic with respect to other fibers.
  const copyOut = (offset: number, out: Uint8Array) => {
    let done = 0
    while (done < out.length) {
      const at = offset + done
      const block = Math.floor(at / bs)
      const within = at - block * bs
      const n = Math.min(bs - within, out.length - done)
      const data = blocks.get(block)
      if (data !== undefined) out.set(data.subarray(within, within + n), done)
      done += n
    }
    return out
  }

  const copyIn = (offset: number, bytes: Uint8Array) => {
    let done = 0
    while (done < bytes.length) {
      const at = offset + done
      const block = Math.floor(at / bs)
      const within = at - block * bs
      const n = Math.min(bs - within, bytes.length - done)
      let data = blocks.get(block)
      if (data === undefined) {
        data = new Uint8Array(bs)
        blocks.set(block, data)
      }
      data.set(bytes.subarray(done, done + n), within)
      done += n
    }
  }

  // Untraced: per guest write and per drained block (see diskFile.ts).
  return {
    geometry,
    read: Effect.fnUntraced(function* (offset: number, length: number) {
      const invalid = checkRange(geometry, offset, length)
      if (invalid !== undefined) return yield* invalid
      return copyOut(offset, new Uint8Array(length))
    }),
    readInto: Effect.fnUntraced(function* (offset: number, into: Uint8Array) {
      const invalid = checkRange(geometry, offset, into.length)
      if (invalid !== undefined) return yield* invalid
      into.fill(0)
      copyOut(offset, into)
    }),
    write: Effect.fnUntraced(function* (offset: number, bytes: Uint8Array) {
      const invalid = checkRange(geometry, offset, bytes.length)
      if (invalid !== undefined) return yield* invalid
      copyIn(offset, bytes)
    }),
    writeSync: (offset: number, bytes: Uint8Array) => {
      const invalid = checkRange(geometry, offset, bytes.length)
      if (invalid !== undefined) return invalid
      copyIn(offset, bytes)
      return undefined
    },
    readBlock: Effect.fnUntraced(function* (block: number) {
      const invalid = checkBlock(geometry, block)
      if (invalid !== undefined) return yield* invalid
      const data = blocks.get(block)
      return data === undefined ? new Uint8Array(bs) : data.slice()
    }),
    flush: Effect.void,
    allocatedBlocks: () => blocks.size
  }
}

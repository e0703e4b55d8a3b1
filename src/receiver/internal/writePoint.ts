/**
 * Writes a recovery point's image through its block index (`restore`): each byte once, from
 * where the point's newest version of it lives. First the base image in disk order (read
 * whole and checked against its checksums, as before), skipping what the log overrides and,
 * into a new file, what is zero (holes stay holes); then the log's surviving extents in file
 * order, segment by segment (sequential reads; a record no later write left a byte of is not
 * read at all), each record checked against its CRC and its index entry.
 */
import type * as fs from "node:fs/promises"
import { openBase, walkBase } from "./base.js"
import { entryOf } from "./blockIndex.js"
import { ForwardReader, pwriteFully } from "./files.js"
import { RECORD_HEADER_BYTES } from "./format.js"
import { ReceiverMutants } from "./mutants.js"
import { checkedPayload, openSegments, type PointExtent, type PointMap, payloadIndex } from "./point.js"

/**
 * How far a restore is, `bytes` of `total` in each phase: `indexing`, the sealed segments'
 * block indexes read and checked, or rebuilt (their segments' bytes; `openPointMap`); then
 * `writing`, the image's bytes, then the log's bytes placed over them.
 */
export interface Progress {
  readonly phase: "indexing" | "writing"
  readonly bytes: number
  readonly total: number
}

const PROGRESS_STEP = 1 << 20

/**
 * Writes the point `map` describes into `image` (a new file of the disk's size, all holes, or
 * a device written in full). `false` when a fold removed a file first (read the chain again).
 */
export const writePoint = async (
  map: PointMap,
  image: fs.FileHandle,
  device: boolean,
  onProgress?: (progress: Progress) => void
): Promise<boolean> => {
  const { chain, extents } = map
  const geometry = { blockSize: chain.meta.blockSize, blockCount: chain.meta.blockCount }
  const diskBytes = geometry.blockSize * geometry.blockCount
  let logBytes = 0
  for (const x of extents) logBytes += x.end - x.start
  const total = diskBytes + logBytes
  let done = 0
  let reported = 0
  const report = (force: boolean) => {
    if (onProgress !== undefined && (force || done - reported >= PROGRESS_STEP)) {
      reported = done
      onProgress({ phase: "writing", bytes: done, total })
    }
  }
  report(true)
  // The open handles keep this base and these segments even if a fold replaces them now.
  const base = await openBase(chain.diskDir, geometry)
  const handles = await (async () => {
    try {
      return base.base.seq === chain.base.seq ? await openSegments(map) : undefined
    } catch (e) {
      await base.handle.close()
      throw e
    }
  })()
  if (handles === undefined) {
    await base.handle.close()
    return false
  }
  try {
    let i = 0
    await walkBase(base.handle, base.file, base.base, geometry, {
      onChunk: async (at, data, zero) => {
        const end = at + data.length
        const write = device || !zero || ReceiverMutants.restoreFillsHoles
        let cursor = at
        while (cursor < end) {
          while (i < extents.length && extents[i]!.end <= cursor) i++
          const x = extents[i]
          if (x !== undefined && x.start <= cursor && !ReceiverMutants.restoreWritesOverriddenBase) {
            cursor = Math.min(end, x.end)
            continue
          }
          const gapEnd =
            x === undefined ? end : ReceiverMutants.restoreWritesOverriddenBase ? end : Math.min(end, x.start)
          if (write) await pwriteFully(image, data.subarray(cursor - at, gapEnd - at), cursor)
          cursor = gapEnd
        }
        done += data.length
        report(false)
      }
    })
    const bySegment = new Map<number, Array<PointExtent>>()
    for (const x of extents) {
      const list = bySegment.get(x.segment)
      if (list === undefined) bySegment.set(x.segment, [x])
      else list.push(x)
    }
    for (const [s, list] of [...bySegment].sort((a, b) => a[0] - b[0])) {
      const segment = chain.segments[s]!
      const entries = segment.entries ?? []
      list.sort((a, b) => a.fileOffset - b.fileOffset)
      const reader = new ForwardReader(handles.get(s)!, segment.bytes)
      let loaded: { seq: number; payload: Buffer } | undefined
      for (const x of list) {
        if (loaded?.seq !== x.seq) {
          const k = entryOf(entries, x.seq)
          const entry = entries[k]!
          const size = RECORD_HEADER_BYTES + entry.length
          const have = await reader.ensure(entry.offset, size)
          loaded = {
            seq: x.seq,
            payload: checkedPayload(chain, segment, k, reader.view(entry.offset, Math.min(have, size)))
          }
        }
        const from = payloadIndex(segment, x)
        await pwriteFully(image, loaded.payload.subarray(from, from + (x.end - x.start)), x.start)
        done += x.end - x.start
        report(false)
      }
    }
    report(true)
    return true
  } finally {
    for (const h of handles.values()) await h.close()
    await base.handle.close()
  }
}

/**
 * The record-by-record restore (before the block index): the base image, then every record
 * after it through the point applied in log order. Kept as the oracle the index-based restore
 * is tested against, and for the bench that compares the two.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { applyRecord } from "../LogStore.js"
import { openBase, walkBase } from "./base.js"
import { type Chain, diskBytesOf } from "./chain.js"
import { isEnoent, pwriteFully, syncDirectory } from "./files.js"
import type { IndexEntry } from "./format.js"
import { defaultTuning, readRange } from "./segment.js"

/** Where a restore writes: a regular file (new or replaced, atomically) or a block device (in place). */
export type Target =
  | { readonly _tag: "File"; readonly path: string }
  | { readonly _tag: "Device"; readonly path: string; readonly bytes: number }

/**
 * Writes an image to `out` with `fill`: a regular file through a temporary one (made the
 * disk's size, all holes; fsynced, renamed over `out`, the directory fsynced), a device in
 * place. `fill`'s result, or `undefined` (and nothing renamed) when it returns `undefined`.
 */
export const writeTarget = async <A>(
  out: Target,
  diskBytes: number,
  fill: (image: fs.FileHandle, device: boolean) => Promise<A | undefined>
): Promise<A | undefined> => {
  const device = out._tag === "Device"
  const temp = `${out.path}.tmp-${process.pid}`
  // A device is written in place (never renamed over), every byte of the image.
  const image = device ? await fs.open(out.path, "r+") : await fs.open(temp, "w", 0o644)
  let result: A | undefined
  try {
    if (!device) await image.truncate(diskBytes)
    result = await fill(image, device)
    if (result !== undefined) await image.sync()
  } finally {
    await image.close()
    if (result === undefined && !device) await fs.unlink(temp).catch(() => undefined)
  }
  if (result === undefined || device) return result
  await fs.rename(temp, out.path)
  await syncDirectory(path.dirname(out.path))
  return result
}

/** Writes the image at `seq` to `out`; the number of records applied, or `undefined` when a fold raced it. */
export const replayPoint = (chain: Chain, seq: number, out: Target): Promise<number | undefined> =>
  writeTarget(out, diskBytesOf(chain.meta), (image, device) => replayInto(chain, seq, image, device))

const replayInto = async (
  chain: Chain,
  seq: number,
  image: fs.FileHandle,
  device: boolean
): Promise<number | undefined> => {
  const geometry = { blockSize: chain.meta.blockSize, blockCount: chain.meta.blockCount }
  let applied = 0
  // The open handle keeps this base even if a fold renames a new one over it.
  const base = await openBase(chain.diskDir, geometry)
  try {
    if (base.base.seq !== chain.base.seq) return undefined
    await walkBase(base.handle, base.file, base.base, geometry, {
      // A new file is all holes: its zero chunks need no write.
      onChunk: (at, data, zero) => (zero && !device ? undefined : pwriteFully(image, data, at))
    })
  } finally {
    await base.handle.close()
  }
  for (const segment of chain.segments) {
    const entries: ReadonlyArray<IndexEntry> = segment.entries ?? []
    const first = entries.find((e) => e.seq > chain.base.seq)
    if (first === undefined) continue
    if (first.seq > seq) break
    const file = path.join(chain.diskDir, segment.name)
    let handle: fs.FileHandle
    try {
      handle = await fs.open(file, "r")
    } catch (e) {
      if (isEnoent(e)) return undefined
      throw e
    }
    let done = false
    try {
      // Every record applied is checked against the entry it was listed by (index or scan).
      const expected = { entries, indexFile: segment.indexFile }
      await readRange(
        handle,
        file,
        first.offset,
        segment.bytes,
        undefined,
        async (h, payload) => {
          if (h.seq > seq) return (done = true)
          await applyRecord(image, geometry, h, payload)
          applied++
          return h.seq === seq ? (done = true) : false
        },
        defaultTuning,
        expected
      )
    } finally {
      await handle.close()
    }
    if (done) break
  }
  return applied
}

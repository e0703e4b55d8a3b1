/**
 * A small real receiver log for the damage tests: written by the real store (one commit per
 * record, small segments so several are sealed), with a resync in the middle, and the image
 * the disk had after each seq. Helpers to find a record's bytes and to forge a file with a
 * valid checksum.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import type * as Wire from "../../src/protocol/Wire.js"
import { crc32c } from "../../src/internal/crc32c.js"
import { type DiskMeta, META_FILE } from "../../src/receiver/internal/chain.js"
import {
  encodeRecordHeader,
  INDEX_ENTRY_BYTES,
  INDEX_HEADER_BYTES,
  parseRecord,
  RECORD_HEADER_BYTES,
  SEGMENT_HEADER_BYTES
} from "../../src/receiver/internal/format.js"
import * as LogStore from "../../src/receiver/LogStore.js"

export const geometry = { blockSize: 4096, blockCount: 16 }
export const diskId = "vm-damage"
export const hello = { diskId, ...geometry, watermark: 0 }

export interface Step {
  readonly record: Wire.Record
  /** Whether the receiver is told it is a recovery point (an acked write in sync, a resync-end). */
  readonly point: boolean
}

const write = (seq: number): Step => ({
  record: {
    _tag: "Write",
    seq,
    epoch: 1,
    offset: (seq * 1000) % 60_000,
    data: new Uint8Array(700).map((_, i) => (seq * 7 + i) & 0xff)
  },
  point: true
})

/**
 * Writes 1..8 in sync; a resync 9..14 (begin, two writes, a block, a write, end); writes
 * 15..24 in sync. With `SEGMENT_BYTES` the segments hold 1..9, 10..12, 13..21 (sealed, with
 * indexes) and 22..24 (active): the resync's writes 10, 11 and 13 lie first, in the middle
 * and first of sealed segments.
 */
export const steps: ReadonlyArray<Step> = [
  ...Array.from({ length: 8 }, (_, i) => write(i + 1)),
  { record: { _tag: "ResyncBegin", seq: 9, epoch: 2, base: 8 }, point: false },
  { ...write(10), point: false },
  { ...write(11), point: false },
  {
    record: { _tag: "Block", seq: 12, epoch: 2, block: 12, data: new Uint8Array(4096).fill(12) },
    point: false
  },
  { ...write(13), point: false },
  { record: { _tag: "ResyncEnd", seq: 14, epoch: 2 }, point: true },
  ...Array.from({ length: 10 }, (_, i) => write(i + 15))
]
export const lastSeq = steps.length
/** Recovery points: the empty base, then every step marked so. */
export const points = [0, ...steps.filter((s) => s.point).map((s) => s.record.seq)]

/** Segments of about eight writes: three sealed ones and an active one (see `steps`). */
export const SEGMENT_BYTES = 6000

/** Writes `steps` through the real store, one commit per record; returns the disk directory. */
export const writeLog = (dir: string, upTo = lastSeq) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const store = yield* LogStore.open({ dir, segmentBytes: SEGMENT_BYTES })
        const disk = yield* store.disk(hello)
        for (const step of steps.slice(0, upTo)) {
          disk.append(step.record, step.point)
          yield* disk.flushed
        }
        return disk.diskDir
      })
    )
  )

/** The disk image after `seq` (the empty disk for 0). */
export const imageAt = (seq: number): Buffer => {
  const image = Buffer.alloc(geometry.blockSize * geometry.blockCount)
  for (const { record } of steps) {
    if (record.seq > seq) break
    if (record._tag === "Write") image.set(record.data, record.offset)
    else if (record._tag === "Block") image.set(record.data, record.block * geometry.blockSize)
  }
  return image
}

export const meta = (diskDir: string): DiskMeta =>
  JSON.parse(fs.readFileSync(path.join(diskDir, META_FILE), "utf8"))

export const segmentFiles = (diskDir: string): Array<string> =>
  fs
    .readdirSync(diskDir)
    .filter((n) => n.endsWith(".seg"))
    .sort()
    .map((n) => path.join(diskDir, n))

export interface Located {
  readonly file: string
  readonly offset: number
  readonly size: number
  /** Index of the record among its segment's records. */
  readonly position: number
}

/** Where the record `seq` lies: its segment file, byte offset and size. */
export const locate = (diskDir: string, seq: number): Located => {
  for (const file of segmentFiles(diskDir)) {
    const bytes = fs.readFileSync(file)
    let at = SEGMENT_HEADER_BYTES
    let position = 0
    while (at < bytes.length) {
      const parsed = parseRecord(bytes, at)
      if (parsed._tag !== "Record") break
      if (parsed.header.seq === seq) return { file, offset: at, size: parsed.size, position }
      at += parsed.size
      position++
    }
  }
  throw new Error(`no record ${seq}`)
}

/** Changes a record's payload byte and recomputes its CRC: a forgery no checksum can see. */
export const forgeRecord = (located: Located, at = 0): void => {
  const bytes = fs.readFileSync(located.file)
  const header = bytes.subarray(located.offset, located.offset + RECORD_HEADER_BYTES)
  const payload = bytes.subarray(located.offset + RECORD_HEADER_BYTES, located.offset + located.size)
  const parsed = parseRecord(bytes, located.offset)
  if (parsed._tag !== "Record") throw new Error("not a record")
  if (payload.length > 0) payload[at]! ^= 0x5a
  encodeRecordHeader(parsed.header, payload).copy(header)
  fs.writeFileSync(located.file, bytes)
}

/** Applies `change` to entry `position` of an index and recomputes the index's CRC. */
export const forgeIndexEntry = (
  indexFile: string,
  position: number,
  change: (entry: Buffer) => void
): number => {
  const bytes = fs.readFileSync(indexFile)
  const at = INDEX_HEADER_BYTES + position * INDEX_ENTRY_BYTES
  change(bytes.subarray(at, at + INDEX_ENTRY_BYTES))
  const end = bytes.length - 4
  bytes.writeUInt32LE(crc32c(bytes.subarray(0, end)), end)
  fs.writeFileSync(indexFile, bytes)
  return at
}

/** Flips one byte of a file. */
export const flip = (file: string, offset: number, mask = 0x10): void => {
  const bytes = fs.readFileSync(file)
  bytes[offset]! ^= mask
  fs.writeFileSync(file, bytes)
}

/** Every file of a disk directory with its bytes, to prove that nothing was changed or deleted. */
export const snapshot = (diskDir: string): Map<string, Buffer> =>
  new Map(
    fs
      .readdirSync(diskDir)
      .sort()
      .map((n) => [n, fs.readFileSync(path.join(diskDir, n))])
  )

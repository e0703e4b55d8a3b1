/**
 * The overlay file of `cdp-sync mount --overlay FILE` (docs/receiver.md): the writes made to
 * a mounted recovery point, kept beside it so the receiver's log is never touched.
 *
 * | bytes                          | what                                                   |
 * |--------------------------------|--------------------------------------------------------|
 * | header `[0, 4096)`             | written once, when the file is created (aside, then renamed) |
 * |   0, 8                         | magic `CDPOVRLY`                                       |
 * |   8, 4                         | version, 1                                             |
 * |  12, 4                         | header bytes, 4096                                     |
 * |  16, 4                         | cluster bytes (a power of two, 512 … 1 MiB; 4096)      |
 * |  20, 4                         | bitmap page bytes, 512                                 |
 * |  24, 8                         | disk bytes (a multiple of 512)                         |
 * |  32, 8                         | seq of the recovery point                              |
 * |  40, 8                         | its receive time, ms (float64)                         |
 * |  48, 8                         | bitmap offset, 4096                                    |
 * |  56, 8                         | data offset                                            |
 * |  64, 2                         | disk id length n, UTF-8 bytes (1 … 3072)               |
 * |  66, n                         | disk id; zeros after it                                |
 * | 4092, 4                        | CRC32C of bytes `[0, 4092)`                            |
 * | bitmap `[4096, data offset)`   | ⌈clusters / 4032⌉ pages of 512 bytes, page p at 4096 + 512p |
 * |   +0, 4                        | CRC32C of the page's bytes `[4, 512)`                  |
 * |   +4, 4                        | page number p                                          |
 * |   +8, 504                      | bit i (byte 8 + ⌊i/8⌋, bit i mod 8): cluster 4032p + i is held |
 * | data `[data offset, end)`      | cluster c at data offset + c × cluster bytes, sparse   |
 *
 * The data offset is the end of the bitmap rounded up to max(4096, cluster bytes); the file is
 * data offset + clusters × cluster bytes long from its creation (a hole: a fresh overlay of a
 * 1 TiB disk holds 4 KiB). A page of 512 zeros holds no cluster (never written, a hole); any
 * other page must match its CRC and number, and no bit past the last cluster may be set.
 *
 * Why 512-byte pages, each with its CRC, updated in place: a page is one sector, and a sector
 * write is atomic on power loss (the assumption PostgreSQL makes of pg_control), so a crash
 * leaves each page old or new, never torn, and a page that fails its CRC is damage, refused.
 * A bit is only ever set, and only once its cluster's data is durable (`overlay.ts`). Data
 * carries no checksum: a cluster is overwritten in place, so a checksum updated beside it could
 * not be kept in step across a crash without copying every write elsewhere first; like a raw
 * image (and qcow2's data clusters) the overlay trusts the disk under it for data.
 */
import { Schema } from "effect"
import { crc32c } from "../../internal/crc32c.js"

export const OVERLAY_MAGIC = Buffer.from("CDPOVRLY", "latin1")
export const OVERLAY_VERSION = 1
export const HEADER_BYTES = 4096
export const PAGE_BYTES = 512
const PAGE_HEAD = 8
export const CLUSTERS_PER_PAGE = (PAGE_BYTES - PAGE_HEAD) * 8
export const MAX_DISK_ID_BYTES = 3072
const CRC_AT = HEADER_BYTES - 4

/** What an overlay sits on: the point of a disk its writes are made over. */
export interface OverlayIdentity {
  readonly diskId: string
  /** A multiple of 512. */
  readonly diskBytes: number
  /** The recovery point the overlay sits on. */
  readonly seq: number
  /** Its receive time (ms): with the seq, it names the point (a seq reused after a rollback is another point). */
  readonly pointTime: number
}

export interface OverlayLayout {
  readonly clusterBytes: number
  readonly clusters: number
  readonly pages: number
  readonly bitmapOffset: number
  readonly dataOffset: number
  readonly fileBytes: number
}

export const isClusterSize = (n: number): boolean =>
  Number.isSafeInteger(n) && n >= 512 && n <= 1 << 20 && (n & (n - 1)) === 0

export const overlayLayout = (diskBytes: number, clusterBytes: number): OverlayLayout => {
  const clusters = Math.ceil(diskBytes / clusterBytes)
  const pages = Math.ceil(clusters / CLUSTERS_PER_PAGE)
  const align = Math.max(4096, clusterBytes)
  const dataOffset = Math.ceil((HEADER_BYTES + pages * PAGE_BYTES) / align) * align
  return {
    clusterBytes,
    clusters,
    pages,
    bitmapOffset: HEADER_BYTES,
    dataOffset,
    fileBytes: dataOffset + clusters * clusterBytes
  }
}

export const OverlayRefusal = Schema.Literal(
  /** The overlay was made for another disk. */
  "other-disk",
  /** … for another recovery point of the disk (its seq or its receive time differ). */
  "other-point",
  /** … for a disk of another size. */
  "other-geometry",
  /** Its header or bitmap fails a check (CRC, field, length): refused, never repaired. */
  "damaged",
  /** A version this build does not read. */
  "unsupported",
  /** The path is a directory, a device, a FIFO, …: not a regular file. */
  "not-a-file",
  /** Another process (or this one) has it open. */
  "locked",
  /** The path cannot hold it: inside the receiver directory, in a directory that does not exist, a link to nothing. */
  "bad-path"
)
export type OverlayRefusal = typeof OverlayRefusal.Type

/** An overlay file that will not be used as asked; it names the file and the byte at fault. */
export class OverlayRefused extends Schema.TaggedError<OverlayRefused>()("OverlayRefused", {
  file: Schema.String,
  offset: Schema.Number,
  reason: OverlayRefusal,
  detail: Schema.String
}) {
  override get message() {
    return `overlay ${this.file} refused at byte ${this.offset} (${this.reason}): ${this.detail}`
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

/** Throws a `RangeError` for an identity no overlay can have (a caller's mistake, not a file's). */
export const checkIdentity = (id: OverlayIdentity): void => {
  const idBytes = Buffer.byteLength(id.diskId, "utf8")
  if (idBytes < 1 || idBytes > MAX_DISK_ID_BYTES)
    throw new RangeError(`disk id of ${idBytes} bytes: an overlay holds 1 to ${MAX_DISK_ID_BYTES}`)
  if (!Number.isSafeInteger(id.diskBytes) || id.diskBytes <= 0 || id.diskBytes % 512 !== 0)
    throw new RangeError(`disk of ${id.diskBytes} bytes: not a positive multiple of 512`)
  if (!Number.isSafeInteger(id.seq) || id.seq < 0) throw new RangeError(`seq ${id.seq}: not a seq`)
}

export const encodeHeader = (id: OverlayIdentity, clusterBytes: number): Buffer => {
  checkIdentity(id)
  const layout = overlayLayout(id.diskBytes, clusterBytes)
  const b = Buffer.alloc(HEADER_BYTES)
  OVERLAY_MAGIC.copy(b, 0)
  b.writeUInt32LE(OVERLAY_VERSION, 8)
  b.writeUInt32LE(HEADER_BYTES, 12)
  b.writeUInt32LE(clusterBytes, 16)
  b.writeUInt32LE(PAGE_BYTES, 20)
  b.writeBigUInt64LE(BigInt(id.diskBytes), 24)
  b.writeBigUInt64LE(BigInt(id.seq), 32)
  b.writeDoubleLE(id.pointTime, 40)
  b.writeBigUInt64LE(BigInt(layout.bitmapOffset), 48)
  b.writeBigUInt64LE(BigInt(layout.dataOffset), 56)
  const n = b.write(id.diskId, 66, "utf8")
  b.writeUInt16LE(n, 64)
  b.writeUInt32LE(crc32c(b.subarray(0, CRC_AT)), CRC_AT)
  return b
}

/** A header's fields once checked, or why not and at which byte. */
export type DecodedHeader =
  | { readonly _tag: "Header"; readonly identity: OverlayIdentity; readonly layout: OverlayLayout }
  | {
      readonly _tag: "Bad"
      readonly offset: number
      readonly reason: OverlayRefusal
      readonly detail: string
    }

const bad = (offset: number, detail: string, reason: OverlayRefusal = "damaged"): DecodedHeader => ({
  _tag: "Bad",
  offset,
  reason,
  detail
})

const u64 = (b: Buffer, at: number): number => {
  const v = b.readBigUInt64LE(at)
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(v)
}

/** Decodes and checks a header (`bytes` is what the file holds from byte 0, at most 4096 bytes of it). */
export const decodeHeader = (bytes: Uint8Array): DecodedHeader => {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (b.length < OVERLAY_MAGIC.length || !b.subarray(0, OVERLAY_MAGIC.length).equals(OVERLAY_MAGIC))
    return bad(0, "not an overlay file (no CDPOVRLY magic)")
  if (b.length < HEADER_BYTES) return bad(b.length, `the file ends inside the header (${b.length} bytes)`)
  const crc = crc32c(b.subarray(0, CRC_AT))
  if (crc !== b.readUInt32LE(CRC_AT)) return bad(CRC_AT, "the header does not match its CRC32C")
  const version = b.readUInt32LE(8)
  if (version !== OVERLAY_VERSION) return bad(8, `version ${version}; this build reads 1`, "unsupported")
  if (b.readUInt32LE(12) !== HEADER_BYTES) return bad(12, `header of ${b.readUInt32LE(12)} bytes, not 4096`)
  const clusterBytes = b.readUInt32LE(16)
  if (!isClusterSize(clusterBytes)) return bad(16, `cluster of ${clusterBytes} bytes`)
  if (b.readUInt32LE(20) !== PAGE_BYTES)
    return bad(20, `bitmap pages of ${b.readUInt32LE(20)} bytes, not 512`)
  const diskBytes = u64(b, 24)
  if (diskBytes <= 0 || diskBytes % 512 !== 0) return bad(24, `disk of ${diskBytes} bytes`)
  const seq = u64(b, 32)
  if (seq < 0) return bad(32, "seq beyond 2^53")
  const layout = overlayLayout(diskBytes, clusterBytes)
  if (u64(b, 48) !== layout.bitmapOffset) return bad(48, `bitmap at byte ${u64(b, 48)}, not 4096`)
  if (u64(b, 56) !== layout.dataOffset)
    return bad(56, `data at byte ${u64(b, 56)}, not ${layout.dataOffset} as the geometry says`)
  const n = b.readUInt16LE(64)
  if (n < 1 || n > MAX_DISK_ID_BYTES) return bad(64, `disk id of ${n} bytes`)
  let diskId: string
  try {
    diskId = utf8.decode(b.subarray(66, 66 + n))
  } catch {
    return bad(66, "the disk id is not UTF-8")
  }
  const junk = b.subarray(66 + n, CRC_AT).findIndex((x) => x !== 0)
  if (junk >= 0) return bad(66 + n + junk, "a byte after the disk id is not zero")
  return { _tag: "Header", identity: { diskId, diskBytes, seq, pointTime: b.readDoubleLE(40) }, layout }
}

/** Why `found` (a header's identity) is not `wanted`; `undefined` when they name the same point. */
export const identityMismatch = (
  found: OverlayIdentity,
  wanted: OverlayIdentity
): { readonly offset: number; readonly reason: OverlayRefusal; readonly detail: string } | undefined => {
  if (found.diskId !== wanted.diskId)
    return {
      offset: 66,
      reason: "other-disk",
      detail: `made for disk ${JSON.stringify(found.diskId)}, not ${JSON.stringify(wanted.diskId)}`
    }
  if (found.diskBytes !== wanted.diskBytes)
    return {
      offset: 24,
      reason: "other-geometry",
      detail: `made for a disk of ${found.diskBytes} bytes, not ${wanted.diskBytes}`
    }
  if (found.seq !== wanted.seq)
    return { offset: 32, reason: "other-point", detail: `made on seq ${found.seq}, not ${wanted.seq}` }
  if (!Object.is(found.pointTime, wanted.pointTime))
    return {
      offset: 40,
      reason: "other-point",
      detail: `made on seq ${found.seq} received at ${found.pointTime}, not the point received at ${wanted.pointTime}`
    }
  return undefined
}

const ZERO_PAGE = Buffer.alloc(PAGE_BYTES)

export const pageOffset = (layout: OverlayLayout, page: number): number =>
  layout.bitmapOffset + page * PAGE_BYTES

/** A bitmap page holding `bits` (504 bytes) with its number and CRC. */
export const encodePage = (page: number, bits: Uint8Array): Buffer => {
  const b = Buffer.alloc(PAGE_BYTES)
  b.writeUInt32LE(page, 4)
  b.set(bits, PAGE_HEAD)
  b.writeUInt32LE(crc32c(b.subarray(4)), 0)
  return b
}

/**
 * The bits of page `page` as read (`bytes`: 512 of them), `undefined` for a page of zeros, or
 * the defect and its offset within the page.
 */
export const decodePage = (
  layout: OverlayLayout,
  page: number,
  bytes: Uint8Array
): Uint8Array | undefined | { readonly at: number; readonly detail: string } => {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (b.equals(ZERO_PAGE)) return undefined
  if (crc32c(b.subarray(4)) !== b.readUInt32LE(0))
    return { at: 0, detail: `bitmap page ${page} does not match its CRC32C` }
  if (b.readUInt32LE(4) !== page)
    return { at: 4, detail: `bitmap page ${page} says it is page ${b.readUInt32LE(4)}` }
  const bits = new Uint8Array(b.subarray(PAGE_HEAD))
  const valid = layout.clusters - page * CLUSTERS_PER_PAGE
  for (let i = Math.max(0, valid); i < CLUSTERS_PER_PAGE; i++)
    if ((bits[i >> 3]! >> (i & 7)) & 1)
      return {
        at: PAGE_HEAD + (i >> 3),
        detail: `bitmap page ${page} holds cluster ${page * CLUSTERS_PER_PAGE + i}, past the disk's last`
      }
  return bits
}

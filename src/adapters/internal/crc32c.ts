/**
 * CRC32C (Castagnoli), from a maintained SIMD implementation (@node-rs/crc32).
 * Shared by the journal's record format and the wire frames.
 */
import { crc32c as native } from "@node-rs/crc32"

/** CRC32C of `bytes`, continuing from `initial` (0 to start). Returns an unsigned 32-bit integer. */
export const crc32c = (bytes: Uint8Array, initial = 0): number =>
  native(
    Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    initial
  ) >>> 0

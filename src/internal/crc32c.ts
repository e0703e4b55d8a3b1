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

// ---------------------------------------------------------------------------
// Combining: the CRC of `a ++ b` from the CRCs of `a` and `b` and the length of `b`
// (zlib's crc32_combine, with Castagnoli's polynomial), so a receiver that verified
// a payload's CRC on the wire need not pass over the payload again.

const POLY = 0x82f63b78

/** `mat` (32 columns over GF(2)) times the vector `vec`. */
const times = (mat: Uint32Array, vec: number): number => {
  let sum = 0
  for (let i = 0; vec !== 0; i++, vec >>>= 1) if (vec & 1) sum ^= mat[i]!
  return sum >>> 0
}
/** The operator `a` then `b`. */
const compose = (a: Uint32Array, b: Uint32Array): Uint32Array => {
  const out = new Uint32Array(32)
  for (let n = 0; n < 32; n++) out[n] = times(b, a[n]!)
  return out
}

/** `zeroBytes[k]`: the operator that feeds 2^k zero bytes through the CRC register. */
const zeroBytes: Array<Uint32Array> = (() => {
  let op: Uint32Array = new Uint32Array(32)
  op[0] = POLY
  for (let n = 1; n < 32; n++) op[n] = 1 << (n - 1)
  for (let bit = 0; bit < 3; bit++) op = compose(op, op) // one zero bit, doubled to eight
  const ops = [op]
  for (let k = 1; k < 53; k++) ops.push(compose(ops[k - 1]!, ops[k - 1]!))
  return ops
})()

/** Operators for whole lengths, kept for the lengths a stream repeats (block and write sizes). */
const byLength = new Map<number, Uint32Array>()
const operatorFor = (length: number): Uint32Array => {
  let op = byLength.get(length)
  if (op !== undefined) return op
  // `length` > 0 (see `crc32cCombine`), so some bit is set and `op` is assigned.
  let rest = length
  for (let k = 0; rest > 0; k++, rest = Math.floor(rest / 2))
    if (rest % 2 === 1) op = op === undefined ? zeroBytes[k]! : compose(op, zeroBytes[k]!)
  if (byLength.size >= 64) byLength.clear()
  byLength.set(length, op!)
  return op!
}

/** CRC32C of `a ++ b`, given CRC32C of `a`, of `b`, and `b`'s length in bytes. */
export const crc32cCombine = (crcA: number, crcB: number, lengthB: number): number =>
  lengthB === 0 ? crcA >>> 0 : (times(operatorFor(lengthB), crcA >>> 0) ^ crcB) >>> 0

// ---------------------------------------------------------------------------
// Small spans (frame and record headers: 36 bytes) in JS, from a table: cheaper than a
// native call and the `Buffer` view it needs, and read in place from the caller's bytes.

const TABLE = (() => {
  const t = new Int32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1
    t[n] = c
  }
  return t
})()

/** `crc32c(bytes.subarray(start, end), initial)` without the view: for spans of tens of bytes. */
export const crc32cSpan = (bytes: Uint8Array, start: number, end: number, initial = 0): number => {
  let c = ~initial
  for (let i = start; i < end; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}

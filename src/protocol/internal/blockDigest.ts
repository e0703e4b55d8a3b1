/**
 * The digest of a tracking block, for checksum-based resync and verify (docs/wire.md,
 * "Checksums"): SHA-256 of the block's bytes, the same function at both ends. Chosen over a
 * faster non-cryptographic hash because a guest controls the bytes: it must not be able to
 * craft a block whose digest matches a stale replica block. `node:crypto`'s SHA-256 uses
 * SHA-NI where the CPU has it (about 1 GB/s for 4–64 KiB blocks), and needs no dependency.
 * One-shot `hash` rather than `createHash`: no Hash object per block, a quarter less CPU per
 * 4 KiB block (docs/wire.md, "Checksums").
 */
import { hash } from "node:crypto"
import { DIGEST_BYTES } from "./wireFrame.js"

export const DIGEST_ALGORITHM = "sha256"

/** The `DIGEST_BYTES`-byte digest of one block's bytes. */
export const blockDigest = (block: Uint8Array): Uint8Array => {
  const digest = hash(DIGEST_ALGORITHM, block, "buffer")
  if (digest.byteLength !== DIGEST_BYTES)
    throw new Error(`${DIGEST_ALGORITHM} gave ${digest.byteLength} bytes`)
  return digest
}

/**
 * Writes the digest of each of the `count` whole blocks of `bytes` (`blockSize` each) into
 * `into` at `DIGEST_BYTES * (at + k)` for block `k`. On the calling thread: WebCrypto's digest
 * in libuv's pool was tried and cost 1.6–1.8× the CPU (a job, a copy and a promise per block;
 * 256 MiB in 64 KiB blocks: 285–327 ms against 172–184 ms here), with no second core to gain
 * on this shared machine; the callers overlap their next read with it instead.
 */
export const blockDigestsInto = (
  bytes: Uint8Array,
  blockSize: number,
  count: number,
  into: Uint8Array,
  at = 0
): void => {
  if (count * blockSize > bytes.byteLength || DIGEST_BYTES * (at + count) > into.byteLength)
    throw new RangeError(`${count} blocks of ${blockSize} bytes do not fit the bytes or the digests given`)
  for (let k = 0; k < count; k++)
    into.set(blockDigest(bytes.subarray(k * blockSize, (k + 1) * blockSize)), DIGEST_BYTES * (at + k))
}

/** The digests of the `count` whole blocks of `bytes`, concatenated in block order. */
export const blockDigests = (bytes: Uint8Array, blockSize: number, count: number): Uint8Array => {
  const into = new Uint8Array(count * DIGEST_BYTES)
  blockDigestsInto(bytes, blockSize, count, into)
  return into
}

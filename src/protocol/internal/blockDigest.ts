/**
 * The digest of a tracking block, for checksum-based resync and verify (docs/wire.md,
 * "Checksums"): SHA-256 of the block's bytes, the same function at both ends. Chosen over a
 * faster non-cryptographic hash because a guest controls the bytes: it must not be able to
 * craft a block whose digest matches a stale replica block. `node:crypto`'s SHA-256 uses
 * SHA-NI where the CPU has it (about 1 GB/s for 4–64 KiB blocks), and needs no dependency.
 *
 * `blockDigestsInto` hashes many blocks off the main thread: WebCrypto's digest runs in
 * libuv's thread pool, so a process keeps reading (and checking) the next bytes while the
 * pool hashes these, and the hashing of one answer or request can use both cores.
 */
import { createHash, webcrypto } from "node:crypto"
import { DIGEST_BYTES } from "./wireFrame.js"

export const DIGEST_ALGORITHM = "sha256"

/** The `DIGEST_BYTES`-byte digest of one block's bytes. */
export const blockDigest = (block: Uint8Array): Uint8Array => {
  const digest = createHash(DIGEST_ALGORITHM).update(block).digest()
  if (digest.byteLength !== DIGEST_BYTES)
    throw new Error(`${DIGEST_ALGORITHM} gave ${digest.byteLength} bytes`)
  return digest
}

/**
 * Blocks hashed at once per call, at most: libuv's pool has 4 threads (UV_THREADPOOL_SIZE),
 * shared with file reads, so a call keeps it busy without queueing every block of a 16 MiB
 * batch (each queued digest holds a copy of its block) ahead of the reads.
 */
export const DIGEST_LANES = 4

/** Deliberately broken variants for the tests' mutants only (never set outside tests). */
export const digestMutants = {
  /** Each lane takes its slot after its digest is done, not before: digests land at other blocks. */
  slotAfterDigest: false
}

/**
 * Writes the digest of each of the `count` whole blocks of `bytes` (`blockSize` each) into
 * `into` at `DIGEST_BYTES * (at + k)` for block `k`: each digest at its own block's place,
 * whatever order the pool finishes them in. `bytes` must not change until it resolves.
 * Views on shared memory (which WebCrypto refuses) are hashed here, on the main thread.
 */
export const blockDigestsInto = async (
  bytes: Uint8Array,
  blockSize: number,
  count: number,
  into: Uint8Array,
  at = 0
): Promise<void> => {
  if (count * blockSize > bytes.byteLength || DIGEST_BYTES * (at + count) > into.byteLength)
    throw new RangeError(`${count} blocks of ${blockSize} bytes do not fit the bytes or the digests given`)
  const blockAt = (k: number) => bytes.subarray(k * blockSize, (k + 1) * blockSize)
  if (bytes.buffer instanceof SharedArrayBuffer) {
    for (let k = 0; k < count; k++) into.set(blockDigest(blockAt(k)), DIGEST_BYTES * (at + k))
    return
  }
  let next = 0
  const lane = async () => {
    while (next < count) {
      const k = next++
      const digest = new Uint8Array(await webcrypto.subtle.digest("SHA-256", blockAt(k)))
      into.set(digest, DIGEST_BYTES * (at + (digestMutants.slotAfterDigest ? next - 1 : k)))
    }
  }
  await Promise.all(Array.from({ length: Math.min(DIGEST_LANES, count) }, lane))
}

/** The digests of the `count` whole blocks of `bytes`, concatenated in block order. */
export const blockDigests = async (
  bytes: Uint8Array,
  blockSize: number,
  count: number
): Promise<Uint8Array> => {
  const into = new Uint8Array(count * DIGEST_BYTES)
  await blockDigestsInto(bytes, blockSize, count, into)
  return into
}

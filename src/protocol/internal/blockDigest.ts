/**
 * The digest of a tracking block, for checksum-based resync and verify (docs/wire.md,
 * "Checksums"): a 32-byte cryptographic hash of the block's bytes, the same function at
 * both ends, named in each request by its wire code (`DigestCode`). Cryptographic, not a
 * faster non-cryptographic hash, because a guest controls the bytes: it must not be able to
 * craft a block whose digest matches a stale replica block.
 *
 * - `blake3` (code 1): the default where its native module loads (`blake3.ts`): about 3x
 *   less CPU than SHA-256 at the 64 KiB tracking block, as fast at 4 KiB.
 * - `sha256` (code 0): always available (`node:crypto`, SHA-NI where the CPU has it), what
 *   FIPS shops need, and what every peer before the code existed asks and answers.
 *
 * SHA-256 one-shot with `hash` rather than `createHash`: no Hash object per block, a
 * quarter less CPU per 4 KiB block.
 */
import { createHash, hash } from "node:crypto"
import { blake3Module } from "./blake3.js"
import { DIGEST_BYTES } from "./wireFrame.js"

/** A block digest's algorithm. */
export type DigestAlgorithm = "sha256" | "blake3"
export const DIGEST_ALGORITHMS: ReadonlyArray<DigestAlgorithm> = ["sha256", "blake3"]

/** The algorithms' codes on the wire (a checksum request's and reply's epoch field). */
export const DigestCode = { sha256: 0, blake3: 1 } as const satisfies {
  readonly [A in DigestAlgorithm]: number
}

/** The algorithm of a wire code, or `undefined` for a code no algorithm has. */
export const digestAlgorithmOf = (code: number): DigestAlgorithm | undefined =>
  code === DigestCode.sha256 ? "sha256" : code === DigestCode.blake3 ? "blake3" : undefined

/** The algorithm `blockDigest` uses when given none: the one every peer speaks. */
export const DIGEST_ALGORITHM: DigestAlgorithm = "sha256"

/** Whether this process can compute `algorithm` (BLAKE3: its native module loads). */
export const digestAvailable = (algorithm: DigestAlgorithm): boolean =>
  algorithm === "sha256" || blake3Module() !== undefined

/** The default for checksum resync and verify: BLAKE3 where it loads, else SHA-256. */
export const defaultDigestAlgorithm = (): DigestAlgorithm => (digestAvailable("blake3") ? "blake3" : "sha256")

const blake3 = () => {
  const module = blake3Module()
  if (module === undefined) throw new Error("BLAKE3 is not available here (@napi-rs/blake-hash did not load)")
  return module
}

const checked = (algorithm: DigestAlgorithm, digest: Uint8Array): Uint8Array => {
  if (digest.byteLength !== DIGEST_BYTES) throw new Error(`${algorithm} gave ${digest.byteLength} bytes`)
  return digest
}

/**
 * The `DIGEST_BYTES`-byte digest of one block's bytes by `algorithm` (default SHA-256).
 * Throws for BLAKE3 where it is not available (`digestAvailable`).
 */
export const blockDigest = (block: Uint8Array, algorithm: DigestAlgorithm = DIGEST_ALGORITHM): Uint8Array =>
  checked(algorithm, algorithm === "blake3" ? blake3().blake3(block) : hash("sha256", block, "buffer"))

/** A digest fed in pieces: for a block whose bytes are in more than one buffer. */
export interface DigestHasher {
  update(bytes: Uint8Array): void
  digest(): Uint8Array
}

/** An incremental hasher of `algorithm`: its `digest` equals `blockDigest` of the bytes fed, in order. */
export const digestHasher = (algorithm: DigestAlgorithm): DigestHasher => {
  if (algorithm === "blake3") {
    const hasher = new (blake3().Blake3Hasher)()
    return {
      update: (bytes) => {
        hasher.update(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
      },
      digest: () => checked(algorithm, hasher.digestBuffer())
    }
  }
  const hasher = createHash("sha256")
  return {
    update: (bytes) => {
      hasher.update(bytes)
    },
    digest: () => checked(algorithm, hasher.digest())
  }
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
  at = 0,
  algorithm: DigestAlgorithm = DIGEST_ALGORITHM
): void => {
  if (count * blockSize > bytes.byteLength || DIGEST_BYTES * (at + count) > into.byteLength)
    throw new RangeError(`${count} blocks of ${blockSize} bytes do not fit the bytes or the digests given`)
  for (let k = 0; k < count; k++)
    into.set(
      blockDigest(bytes.subarray(k * blockSize, (k + 1) * blockSize), algorithm),
      DIGEST_BYTES * (at + k)
    )
}

/** The digests of the `count` whole blocks of `bytes`, concatenated in block order. */
export const blockDigests = (
  bytes: Uint8Array,
  blockSize: number,
  count: number,
  algorithm: DigestAlgorithm = DIGEST_ALGORITHM
): Uint8Array => {
  const into = new Uint8Array(count * DIGEST_BYTES)
  blockDigestsInto(bytes, blockSize, count, into, 0, algorithm)
  return into
}

/**
 * BLAKE3 from `@napi-rs/blake-hash` (a prebuilt native module per platform, like
 * `@node-rs/crc32`), loaded on first use and guarded: where its binary is missing the
 * load fails once, BLAKE3 is unavailable and SHA-256 serves (docs/wire.md, "Checksums").
 * `createRequire` rather than an import: a static import would fail the whole module
 * graph on such a platform, and the CLI bundle keeps the package external.
 */
import { createRequire } from "node:module"

interface Blake3Hasher {
  update(input: Buffer): unknown
  digestBuffer(): Buffer
}
export interface Blake3Module {
  readonly blake3: (input: Uint8Array) => Buffer
  readonly Blake3Hasher: new () => Blake3Hasher
}

/** The module once loaded (`null`: its load failed; it is not tried again). */
let loaded: Blake3Module | null | undefined

/**
 * Tests only (nothing in the library sets it): `refuse` makes this process act as one on a
 * platform without the binary. Set before the first use; `reset` forgets the last load.
 */
export const blake3Loading = {
  refuse: false,
  reset(): void {
    loaded = undefined
  }
}

/** The module, or `undefined` where it does not load. */
export const blake3Module = (): Blake3Module | undefined => {
  if (loaded === undefined) {
    try {
      if (blake3Loading.refuse) throw new Error("BLAKE3 refused for a test")
      const module = createRequire(import.meta.url)("@napi-rs/blake-hash") as Blake3Module
      // A binary that loads but does not hash is no BLAKE3.
      loaded = module.blake3(new Uint8Array(0)).byteLength === 32 ? module : null
    } catch {
      loaded = null
    }
  }
  return loaded ?? undefined
}

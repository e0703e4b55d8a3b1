/**
 * The command line's bundle (`dist/cli/main.cjs`: scripts/bundle-cli.mjs) loaded with V8's
 * code cache, made once when the package is built (`main.cjs.cache`), so a start
 * deserializes compiled code instead of parsing and compiling 3 MB of JavaScript again.
 * Node 20 has no compile cache for ES modules (`module.enableCompileCache` came in 22); a
 * script compiled through `vm.Script` takes one. The bundle is CommonJS, written already
 * wrapped as Node's loader wraps a module (`WRAPPER`): one function expression, called here.
 *
 * The cache file: the SHA-256 of the bundle it was made from (32 bytes), the SHA-256 of V8's
 * data (32), then that data. V8 checks its own version and flags, but of the source only its
 * length and of its data no checksum at all: a flipped byte there is taken, and runs as
 * damaged code. So the cache is used only when both digests match; otherwise (damaged,
 * truncated, another bundle's, missing) or when V8 rejects it (another Node, other V8 flags)
 * the bundle is compiled as usual — slower, never different. Node builtins only: this runs
 * before anything else is loaded.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import * as vm from "node:vm"

export const cacheFileOf = (bundle: string): string => `${bundle}.cache`

/** What the bundle's code is written between (esbuild's banner and footer). */
export const WRAPPER = {
  head: "(function (exports, require, module, __filename, __dirname) {",
  tail: "})"
} as const

const DIGEST_BYTES = 32
/** The cache file's header: the bundle's digest, then the data's. */
export const CACHE_HEADER_BYTES = 2 * DIGEST_BYTES

/** Deliberately broken variants, for test/cli/code-cache.test.ts. */
export const CodeCacheMutants = {
  /** V8's data used without checking its digest (a flipped byte in it runs). */
  dataUnchecked: false
}

const sha256 = (bytes: Uint8Array): Buffer => createHash("sha256").update(bytes).digest()

/** What the bundle exports (`src/cli/run.ts`). */
export interface Bundle {
  readonly main: (argv: ReadonlyArray<string>) => void
}

export interface Loaded {
  readonly exports: Bundle
  readonly script: vm.Script
  /** Whether V8 took the cache (false: none, damaged, another bundle's, or rejected). */
  readonly cached: boolean
  /** SHA-256 of the bundle's bytes (what a cache of it starts with). */
  readonly digest: Buffer
}

/** V8's data in `cache` when it is a whole cache of the bundle whose digest is `digest`. */
const dataOf = (cache: Buffer | undefined, digest: Buffer): Buffer | undefined => {
  if (cache === undefined || cache.length <= CACHE_HEADER_BYTES) return undefined
  if (!cache.subarray(0, DIGEST_BYTES).equals(digest)) return undefined
  const data = cache.subarray(CACHE_HEADER_BYTES)
  if (
    !CodeCacheMutants.dataUnchecked &&
    !sha256(data).equals(cache.subarray(DIGEST_BYTES, CACHE_HEADER_BYTES))
  )
    return undefined
  return data
}

/** Compiles and runs the bundle's module code (its `main` is not called), with `cache` when it is a whole cache of this bundle. */
export const loadBundle = (bundle: string, cache?: Buffer): Loaded => {
  const bytes = fs.readFileSync(bundle)
  const digest = sha256(bytes)
  const data = dataOf(cache, digest)
  // esbuild writes ASCII (non-ASCII characters escaped): one byte a character.
  const script = new vm.Script(bytes.toString("latin1"), { filename: bundle, cachedData: data })
  const module = { exports: {} as Bundle }
  script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, path.dirname(bundle))
  return { exports: module.exports, script, cached: data !== undefined && !script.cachedDataRejected, digest }
}

/** Loads the bundle, reading its cache when there is one. */
export const loadCached = (bundle: string): Loaded => {
  let cache: Buffer | undefined
  try {
    cache = fs.readFileSync(cacheFileOf(bundle))
  } catch {
    cache = undefined
  }
  return loadBundle(bundle, cache)
}

/**
 * The cache of `bundle`: compiled and its module code run (what every start runs before a
 * command does), then V8's code for every function compiled so far, after the two digests.
 */
export const makeCache = (bundle: string): Buffer => {
  const { script, digest } = loadBundle(bundle)
  const data = script.createCachedData()
  return Buffer.concat([digest, sha256(data), data])
}

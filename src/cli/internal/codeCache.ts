/**
 * The command line's bundle (`dist/cli/main.cjs`: scripts/bundle-cli.mjs) loaded with V8's
 * code cache, made once when the package is built (`main.cjs.cache`), so a start
 * deserializes compiled code instead of parsing and compiling 3 MB of JavaScript again.
 * Node 20 has no compile cache for ES modules (`module.enableCompileCache` came in 22); a
 * script compiled through `vm.Script` takes one. The bundle is CommonJS, written already
 * wrapped as Node's loader wraps a module (`WRAPPER`): one function expression, called here.
 *
 * The cache file is the SHA-256 of the bundle it was made from, then V8's data. V8 checks its
 * own version and flags but of the source only its length, so the digest is what ties the
 * cache to these bytes: a cache of another bundle, or one V8 rejects (another Node version,
 * other V8 flags), is ignored and the bundle compiled as usual — slower, never different.
 * Node builtins only: this runs before anything else is loaded.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import * as vm from "node:vm"

export const BUNDLE = "main.cjs"
export const cacheFileOf = (bundle: string): string => `${bundle}.cache`

/** What the bundle's code is written between (esbuild's banner and footer). */
export const WRAPPER = {
  head: "(function (exports, require, module, __filename, __dirname) {",
  tail: "})"
} as const

const DIGEST_BYTES = 32

/** What the bundle exports (`src/cli/run.ts`). */
export interface Bundle {
  readonly main: (argv: ReadonlyArray<string>) => void
}

export interface Loaded {
  readonly exports: Bundle
  readonly script: vm.Script
  /** Whether V8 took the cache (false: none, another bundle's, or rejected). */
  readonly cached: boolean
  /** SHA-256 of the bundle's bytes (what a cache of it starts with). */
  readonly digest: Buffer
}

/** Compiles and runs the bundle's module code (its `main` is not called), with `cache` when it is this bundle's. */
export const loadBundle = (bundle: string, cache?: Buffer): Loaded => {
  const bytes = fs.readFileSync(bundle)
  const digest = createHash("sha256").update(bytes).digest()
  const usable =
    cache !== undefined && cache.length > DIGEST_BYTES && cache.subarray(0, DIGEST_BYTES).equals(digest)
  // esbuild writes ASCII (non-ASCII characters escaped): one byte a character.
  const script = new vm.Script(bytes.toString("latin1"), {
    filename: bundle,
    cachedData: usable ? cache.subarray(DIGEST_BYTES) : undefined
  })
  const module = { exports: {} as Bundle }
  script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, path.dirname(bundle))
  return { exports: module.exports, script, cached: usable && script.cachedDataRejected === false, digest }
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
 * command does), then V8's code for every function compiled so far, after the bundle's digest.
 */
export const makeCache = (bundle: string): Buffer => {
  const { script, digest } = loadBundle(bundle)
  return Buffer.concat([digest, script.createCachedData()])
}

/**
 * Entry point of the `cdp-sync` binary: the command line is built as a few bundles beside
 * this file (scripts/bundle-cli.mjs); the one that serves the command named
 * (`internal/bundles.ts`) is loaded with the code cache made when it was built
 * (`internal/codeCache.ts`: about a fifth of a second off every start).
 */
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { bundleFor } from "./internal/bundles.js"
import { loadCached } from "./internal/codeCache.js"

loadCached(path.join(path.dirname(fileURLToPath(import.meta.url)), bundleFor(process.argv))).exports.main(
  process.argv
)

/**
 * Entry point of the `cdp-sync` binary: the command line is one bundle, `main.cjs` beside
 * this file (scripts/bundle-cli.mjs), loaded with the code cache made when it was built
 * (`internal/codeCache.ts`: about a fifth of a second off every start).
 */
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { BUNDLE, loadCached } from "./internal/codeCache.js"

loadCached(path.join(path.dirname(fileURLToPath(import.meta.url)), BUNDLE)).exports.main(process.argv)

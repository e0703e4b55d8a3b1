#!/usr/bin/env node
// The package is built by `npm ci` / `npm install` (the `prepare` script): dist/cli/main.js
// loads the command line's bundle, dist/cli/main.cjs (scripts/bundle-cli.mjs).
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"

const main = new URL("../dist/cli/main.js", import.meta.url)
if (
  !existsSync(fileURLToPath(main)) ||
  !existsSync(fileURLToPath(new URL("../dist/cli/main.cjs", import.meta.url)))
) {
  console.error("cdp-sync is not built yet: run `npm run build` (npm ci does it for you).")
  process.exit(2)
}
await import(main.href)

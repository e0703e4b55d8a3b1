// The command line as one file: `tsc` emits one module per source, and loading a few
// hundred ES modules (effect's among them) cost each `cdp-sync` start about 2 s of CPU;
// bundled it is about 0.7 s. The library entries stay one module per source (embedders'
// bundlers tree-shake them); only dist/cli/main.js, which nothing imports, is replaced.
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const entry = path.join(root, "dist/cli/main.js")
await build({
  entryPoints: [entry],
  outfile: entry,
  allowOverwrite: true,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: "linked",
  // A native addon: loaded from node_modules at run time.
  external: ["@node-rs/crc32"],
  // Bundled CommonJS dependencies call require().
  banner: {
    js: 'import { createRequire as __cdpSyncRequire } from "node:module"; const require = __cdpSyncRequire(import.meta.url);'
  },
  logLevel: "warning"
})

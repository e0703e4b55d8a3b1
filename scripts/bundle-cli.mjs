// The command line as a few bundles: `tsc` emits one module per source, and loading a few
// hundred ES modules (effect's among them) cost each `cdp-sync` start about 2 s of CPU;
// bundled it is about 0.5 s, and with V8's code cache (made here, once) about 0.3 s.
// A start runs the top-level code of every module its bundle holds, so each group of
// commands has a bundle of its own (`BUNDLES`, src/cli/internal/bundles.ts: `status` and
// `verify` without the replicator, the receiver or OpenTelemetry), and the main bundle holds
// every command for the rest. To add a bundle (a worker's script, say), add an entry there.
// The library entries stay one module per source (embedders' bundlers tree-shake them).
// Each bundle is CommonJS because only a script compiled through `vm.Script` takes a code
// cache on Node 20; `dist/cli/main.js` (src/cli/main.ts) loads the one a command line needs
// with its `.cache` (src/cli/internal/codeCache.ts).
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const cliDir = path.join(root, "dist/cli")
const { cacheFileOf, makeCache, WRAPPER } = await import(path.join(cliDir, "internal/codeCache.js"))
const { BUNDLES } = await import(path.join(cliDir, "internal/bundles.js"))

/** Builds `entry` (a module of dist/cli) as `bundle`, then its code cache. */
const bundleOne = async ({ bundle: name, entry }) => {
  const bundle = path.join(cliDir, name)
  await build({
    entryPoints: [path.join(cliDir, entry)],
    outfile: bundle,
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    // The loader reads it as one byte a character.
    charset: "ascii",
    sourcemap: "linked",
    // Native addons: loaded from node_modules at run time (BLAKE3 lazily, guarded: src/protocol/internal/blake3.ts).
    external: ["@node-rs/crc32", "@napi-rs/blake-hash"],
    // `import.meta.url` (the CLI finding itself to start a receiver process) is the entry's, main.js.
    define: { "import.meta.url": "__cdpSyncMainUrl" },
    // Written wrapped, as Node's loader wraps a module: the loader compiles the file as it is
    // (strict, as the ES modules it is made of were).
    banner: {
      js: `${WRAPPER.head}"use strict";var __cdpSyncMainUrl = require("node:url").pathToFileURL(require("node:path").join(__dirname, "main.js")).href;`
    },
    footer: { js: WRAPPER.tail },
    logLevel: "warning"
  })
  // V8's code for the bundle's module code, made by this Node (another one rejects it and
  // compiles as usual). Written aside and renamed: a start beside the build reads one or none.
  const cacheFile = cacheFileOf(bundle)
  fs.writeFileSync(`${cacheFile}.tmp`, makeCache(bundle))
  fs.renameSync(`${cacheFile}.tmp`, cacheFile)
}

for (const entry of BUNDLES) await bundleOne(entry)
// main.js last: the tests rebuild when it is older than the sources (test/support/globalSetup.ts).
const now = new Date()
fs.utimesSync(path.join(cliDir, "main.js"), now, now)

/**
 * Integration tests run the built CLI (dist/) as child processes: build it once
 * before the suite when it is missing or older than the sources.
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, rmSync, statSync } from "node:fs"
import * as path from "node:path"

const newest = (dir: string): number => {
  let t = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name)
    t = Math.max(t, entry.isDirectory() ? newest(p) : statSync(p).mtimeMs)
  }
  return t
}

export default function setup(): void {
  const root = path.resolve(import.meta.dirname, "../..")
  const main = path.join(root, "dist/cli/main.js")
  if (existsSync(main) && statSync(main).mtimeMs >= newest(path.join(root, "src"))) return
  // A clean build (a module left behind by a moved source would hide a broken import),
  // as `npm run build` does it: the library modules, then the command line as one file.
  rmSync(path.join(root, "dist"), { recursive: true, force: true })
  const run = (args: ReadonlyArray<string>) =>
    execFileSync(process.execPath, args, { cwd: root, stdio: "inherit" })
  run([path.join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"])
  run([path.join(root, "scripts/bundle-cli.mjs")])
}

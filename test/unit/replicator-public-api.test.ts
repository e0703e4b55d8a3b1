/**
 * Test-only variants are not public API (issue 14): the declarations an embedder sees
 * for the replicator — dist/replicator/Replicator.d.ts and every replicator module it
 * reaches through its imports, as emitted by the build (test/support/globalSetup.ts) —
 * mention no `unsafe` option and no mutant. The mutants live in
 * src/replicator/internal/mutants.ts, which the tests provide as a context reference.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

const dist = path.resolve(import.meta.dirname, "../../dist")

/** Every declaration file reachable from `entry` through relative imports. */
const reachable = (entry: string): ReadonlyArray<string> => {
  const seen = new Set<string>()
  const stack = [entry]
  while (stack.length > 0) {
    const file = path.normalize(stack.pop()!)
    if (seen.has(file) || !fs.existsSync(file)) continue
    seen.add(file)
    const text = fs.readFileSync(file, "utf8")
    for (const m of text.matchAll(/(?:from|import\()\s*"(\.[^"]+)"/g))
      stack.push(path.join(path.dirname(file), m[1]!.replace(/\.js$/, ".d.ts")))
  }
  return [...seen]
}

describe("the replicator's public declarations", () => {
  it("mention no unsafe option and no mutant, from the replicator's module or its entry point", () => {
    const entries = [path.join(dist, "replicator/Replicator.d.ts"), path.join(dist, "replicator/index.d.ts")]
    for (const entry of entries) expect(fs.existsSync(entry), entry).toBe(true)
    const files = entries.flatMap(reachable).filter((f) => f.startsWith(path.join(dist, "replicator")))
    expect(files).toContain(path.join(dist, "replicator/Replicator.d.ts"))
    const mentions = files.flatMap((file) =>
      fs
        .readFileSync(file, "utf8")
        .split("\n")
        .flatMap((line, i) =>
          /unsafe|mutant/i.test(line) ? [`${path.relative(dist, file)}:${i + 1}: ${line.trim()}`] : []
        )
    )
    expect(mentions).toEqual([])
  })
})

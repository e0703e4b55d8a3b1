/**
 * Test-only variants are not public API (issue 14): nothing an embedder can reach from
 * any entry point of the package (package.json "exports", as the build emits them) has
 * an `unsafe…` option or a mutant. The mutants live in internal modules the tests import
 * (src/replicator/internal/mutants.ts, src/protocol/internal/mutants.ts,
 * src/receiver/internal/mutants.ts, …).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { testOnlyMentions } from "../support/publicApi.js"

const root = path.resolve(import.meta.dirname, "../..")

const packageEntries = () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as {
    exports: Record<string, string | { readonly types?: string }>
  }
  return Object.entries(pkg.exports).flatMap(([name, target]) =>
    typeof target === "object" && target.types !== undefined
      ? [{ name, file: path.join(root, target.types) }]
      : []
  )
}

describe("the public declarations", () => {
  it("of every entry point mention no unsafe option and no mutant", () => {
    const entries = packageEntries()
    expect(entries.map((e) => e.name)).toEqual(
      expect.arrayContaining([".", "./replicator", "./receiver", "./protocol"])
    )
    for (const e of entries) expect(fs.existsSync(e.file), e.file).toBe(true)
    expect(testOnlyMentions(entries)).toEqual([])
  }, 60_000)

  it("MUTANT: a package that leaks test switches, directly or through an internal type, is caught", () => {
    const file = path.join(root, "test/fixtures/public-api/index.d.ts")
    expect(testOnlyMentions([{ name: "fixture", file }])).toEqual([
      "fixture:Decoder(options).unsafeSkipCrc",
      "fixture:Service.Shape.run().nested.unsafeNested",
      "fixture:mutants"
    ])
  }, 60_000)
})

/**
 * Every TypeScript snippet in README.md and docs/ compiles as written, as a user would
 * paste it: each ```ts block becomes a module of its own, typechecked under the
 * project's strict options with `cdp-sync/*` resolved to the sources. Blocks whose info
 * string says `ts run` are also run (through the package's own exports, i.e. dist/) and
 * must exit 0; `ts continued` carries on from the document's previous block (its code is
 * prepended, as a reader reading on would have it). A snippet that does not compile fails
 * here with its file and line.
 */
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

const root = path.resolve(import.meta.dirname, "../..")
const work = path.join(root, ".snippets")

interface Snippet {
  readonly doc: string
  readonly line: number
  readonly run: boolean
  readonly code: string
  /** Lines of earlier blocks prepended (a `continued` block). */
  readonly prefixLines: number
  readonly file: string
}

const docs = [
  "README.md",
  ...fs.readdirSync(path.join(root, "docs")).map((f) => path.join("docs", f))
].filter((f) => f.endsWith(".md"))

const extract = (): ReadonlyArray<Snippet> => {
  const snippets: Array<Snippet> = []
  for (const doc of docs) {
    const lines = fs.readFileSync(path.join(root, doc), "utf8").split("\n")
    for (let i = 0; i < lines.length; i++) {
      const fence = /^```(ts|typescript)\b(.*)$/.exec(lines[i]!)
      if (fence === null) continue
      const start = i + 1
      let end = start
      while (end < lines.length && !lines[end]!.startsWith("```")) end++
      const name = `${doc.replace(/[^A-Za-z0-9]/g, "_")}_${start + 1}.ts`
      const own = lines.slice(start, end).join("\n")
      const previous = /\bcontinued\b/.test(fence[2]!) ? snippets.at(-1) : undefined
      const prefix = previous !== undefined && previous.doc === doc ? `${previous.code}\n` : ""
      snippets.push({
        doc,
        line: start + 1,
        run: /\brun\b/.test(fence[2]!),
        code: prefix + own,
        prefixLines: prefix === "" ? 0 : prefix.split("\n").length - 1,
        file: name
      })
      i = end
    }
  }
  return snippets
}

const snippets = extract()

describe("the docs' TypeScript snippets", () => {
  it("are found (README and docs/ hold some)", () => {
    expect(snippets.length).toBeGreaterThan(5)
  })

  it("each typechecks as written (strict, exactOptionalPropertyTypes)", () => {
    fs.rmSync(work, { recursive: true, force: true })
    fs.mkdirSync(work, { recursive: true })
    for (const s of snippets) fs.writeFileSync(path.join(work, s.file), `${s.code}\nexport {}\n`)
    fs.writeFileSync(
      path.join(work, "tsconfig.json"),
      JSON.stringify({
        extends: "../tsconfig.base.json",
        compilerOptions: {
          noEmit: true,
          // A snippet may name a value only to show it.
          noUnusedLocals: false,
          noUnusedParameters: false,
          types: ["node"],
          paths: { "cdp-sync": ["../src/index.ts"], "cdp-sync/*": ["../src/*/index.ts"] }
        },
        include: ["*.ts"]
      })
    )
    let output = ""
    try {
      execFileSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "-p", work], {
        cwd: root,
        encoding: "utf8"
      })
    } catch (e) {
      output = String((e as { stdout?: string }).stdout ?? e)
    }
    // Map each error back to the document and line it came from.
    const errors = output
      .split("\n")
      .filter((l) => l.startsWith(".snippets/") || l.startsWith(`${work}/`))
      .map((l) => {
        const m = /([^/]+\.ts)\((\d+),\d+\): (.*)$/.exec(l)
        const s = snippets.find((x) => x.file === m?.[1])
        return s === undefined || m === null
          ? l
          : `${s.doc}:${s.line + Number(m[2]) - 1 - s.prefixLines}: ${m[3]}`
      })
    expect(errors).toEqual([])
  })

  const runnable = snippets.filter((s) => s.run)
  it.each(runnable.map((s) => [`${s.doc}:${s.line}`, s] as const))("%s runs", (_, s) => {
    const file = path.join(work, `run-${s.file}`)
    fs.mkdirSync(work, { recursive: true })
    fs.writeFileSync(file, `${s.code}\n`)
    const result = spawnSync(process.execPath, [path.join(root, "node_modules/tsx/dist/cli.mjs"), file], {
      cwd: root,
      encoding: "utf8",
      timeout: 60_000
    })
    expect(result.stderr).toBe("")
    expect(result.status).toBe(0)
  })
})

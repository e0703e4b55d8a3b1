/**
 * The layout shows the architecture (design §2, issue 14): dependencies point inward
 * (cli → programs → adapters/protocol → domain), no module cycles through value
 * imports, nothing outside src/adapters reaches into src/adapters/internal, and the
 * domain performs no I/O (imports no `node:` module). Each rule is also checked on a
 * made-up import graph that breaks it, so the checks can fail.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

const src = path.resolve(import.meta.dirname, "../../src")

/** What each top-level folder may import besides itself. */
const allowed: Record<string, ReadonlyArray<string>> = {
  domain: [],
  internal: [],
  protocol: ["domain", "internal"],
  adapters: ["domain", "internal", "protocol"],
  replicator: ["adapters", "domain", "internal", "protocol"],
  receiver: ["domain", "internal", "protocol"],
  // The front end: serves the filter's disk (replicator) and a mounted point (receiver).
  nbd: ["replicator", "receiver", "adapters", "domain", "internal", "protocol"],
  conformance: ["domain", "internal", "protocol"],
  simulator: ["replicator", "receiver", "conformance", "adapters", "domain", "internal", "protocol"],
  cli: [
    "replicator",
    "receiver",
    "nbd",
    "conformance",
    "simulator",
    "adapters",
    "domain",
    "internal",
    "protocol"
  ],
  ".": [
    "replicator",
    "receiver",
    "nbd",
    "conformance",
    "simulator",
    "adapters",
    "domain",
    "internal",
    "protocol"
  ]
}

interface Import {
  readonly from: string
  readonly to: string
  /** `import type` only: erased, no cycle at run time. */
  readonly typeOnly: boolean
}

const sources = (dir: string): Array<string> =>
  fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) =>
      e.isDirectory()
        ? sources(path.join(dir, e.name))
        : e.name.endsWith(".ts")
          ? [path.join(dir, e.name)]
          : []
    )

const importsOf = (file: string, text: string): Array<Import> =>
  [...text.matchAll(/^(import|export)\s+(type\s+)?[^;]*?from\s+"([^"]+)"/gm)].map((m) => ({
    from: file,
    to: m[3]!.startsWith(".")
      ? path.normalize(path.join(path.dirname(file), m[3]!.replace(/\.js$/, ".ts")))
      : m[3]!,
    typeOnly: m[2] !== undefined
  }))

const folderOf = (file: string) => {
  const parts = path.relative(src, file).split(path.sep)
  return parts.length === 1 ? "." : parts[0]!
}

const outward = (imports: ReadonlyArray<Import>) =>
  imports.flatMap(({ from, to }) => {
    if (!to.startsWith(src)) return []
    const a = folderOf(from)
    const b = folderOf(to)
    return a === b || (allowed[a] ?? []).includes(b)
      ? []
      : [`${path.relative(src, from)} → ${path.relative(src, to)}`]
  })

const intoAdapterInternals = (imports: ReadonlyArray<Import>) =>
  imports.flatMap(({ from, to }) =>
    to.startsWith(path.join(src, "adapters/internal")) && !from.startsWith(path.join(src, "adapters"))
      ? [`${path.relative(src, from)} → ${path.relative(src, to)}`]
      : []
  )

const domainIo = (imports: ReadonlyArray<Import>) =>
  imports.flatMap(({ from, to }) =>
    folderOf(from) === "domain" && (to.startsWith("node:") || to.startsWith("@effect/platform"))
      ? [`${path.relative(src, from)} → ${to}`]
      : []
  )

/** Strongly connected groups of more than one module, through value imports. */
const cycles = (imports: ReadonlyArray<Import>): Array<Array<string>> => {
  const graph = new Map<string, Array<string>>()
  for (const i of imports) {
    if (!graph.has(i.from)) graph.set(i.from, [])
    if (!i.typeOnly && i.to.startsWith(src)) graph.get(i.from)!.push(i.to)
  }
  let next = 0
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: Array<string> = []
  const onStack = new Set<string>()
  const found: Array<Array<string>> = []
  const visit = (v: string) => {
    index.set(v, next)
    low.set(v, next++)
    stack.push(v)
    onStack.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!))
    }
    if (low.get(v) === index.get(v)) {
      const group: Array<string> = []
      let w: string
      do {
        w = stack.pop()!
        onStack.delete(w)
        group.push(path.relative(src, w))
      } while (w !== v)
      if (group.length > 1) found.push(group.sort())
    }
  }
  for (const v of graph.keys()) if (!index.has(v)) visit(v)
  return found
}

const all = sources(src).flatMap((f) => importsOf(f, fs.readFileSync(f, "utf8")))

describe("the layout", () => {
  it("has dependencies that point inward only", () => {
    expect(all.length).toBeGreaterThan(100)
    expect(outward(all)).toEqual([])
  })

  it("has no cycle through value imports", () => {
    expect(cycles(all)).toEqual([])
  })

  it("keeps src/adapters/internal to the adapters, and I/O out of the domain", () => {
    expect(intoAdapterInternals(all)).toEqual([])
    expect(domainIo(all)).toEqual([])
  })

  it("MUTANT: each check catches a graph that breaks its rule", () => {
    const at = (f: string) => path.join(src, f)
    const broken: Array<Import> = [
      { from: at("domain/State.ts"), to: at("replicator/Replicator.ts"), typeOnly: false },
      { from: at("replicator/internal/sender.ts"), to: at("replicator/Replicator.ts"), typeOnly: false },
      { from: at("replicator/Replicator.ts"), to: at("replicator/internal/sender.ts"), typeOnly: false },
      { from: at("receiver/LogStore.ts"), to: at("adapters/internal/diskFile.ts"), typeOnly: true },
      { from: at("domain/Bitmap.ts"), to: "node:fs", typeOnly: false }
    ]
    expect(outward(broken)).toEqual([
      "domain/State.ts → replicator/Replicator.ts",
      "receiver/LogStore.ts → adapters/internal/diskFile.ts"
    ])
    expect(cycles(broken)).toEqual([["replicator/Replicator.ts", "replicator/internal/sender.ts"]])
    expect(intoAdapterInternals(broken)).toEqual(["receiver/LogStore.ts → adapters/internal/diskFile.ts"])
    expect(domainIo(broken)).toEqual(["domain/Bitmap.ts → node:fs"])
  })
})

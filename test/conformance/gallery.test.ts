/**
 * Every deliberately broken implementation of the gallery is caught twice: by the
 * conformance kit (driving it through fast-check scenarios), and by
 * `cdp-sync check-trace` on the trace of its failing run, in-process and through
 * the real command line. The reference passes the kit, and its traces check clean.
 * A broken implementation that slips through fails these tests.
 */
import fc from "fast-check"
import { beforeAll, describe, expect, it } from "vitest"
import * as Conformance from "../../src/conformance/index.js"
import * as CheckTrace from "../../src/conformance/CheckTrace.js"
import { cdpSync, cdpSyncInProcess, ensureBuilt, tempDir } from "./cli.js"
import { type Broken, gallery } from "./gallery.js"

/** The kit must find each within this many scenarios (the slowest needs ~150 at worst over 60 seeds). */
const numRuns = 2000

async function* chunks(text: string, size = 4096): AsyncGenerator<string> {
  for (let i = 0; i < text.length; i += size) yield text.slice(i, i + size)
}

const failures = new Map<string, Conformance.Failed>()

/** The kit's report on a broken implementation (computed once, shared by the tests below). */
const failureOf = (impl: Broken): Conformance.Failed => {
  const known = failures.get(impl.name)
  if (known !== undefined) return known
  const report = Conformance.check(impl, { numRuns })
  if (report.ok) throw new Error(`${impl.name} survived ${report.runs} scenarios of the conformance kit`)
  failures.set(impl.name, report)
  return report
}

describe("the conformance kit catches every broken implementation", () => {
  it("the gallery has at least six", () => {
    expect(gallery.length).toBeGreaterThanOrEqual(6)
    expect(new Set(gallery.map((g) => g.name)).size).toBe(gallery.length)
  })

  for (const impl of gallery)
    it(`${impl.name}: ${impl.bug}`, () => {
      const report = failureOf(impl)
      expect(report.ok).toBe(false)
      expect(report.reproducible).toBe(true)
      expect(report.verdict, `${impl.name}: its trace should be illegal`).toBeDefined()
      expect(impl.rules).toContain(report.verdict?.rule)
      // Shrunk: a handful of steps, and the trace ends at the offending event.
      expect(report.counterexample.steps.length).toBeLessThanOrEqual(40)
      const lines = report.trace.trimEnd().split("\n")
      expect(report.verdict?.line).toBe(lines.length)
    })
})

describe("cdp-sync check-trace catches them on their traces", () => {
  for (const impl of gallery)
    it(`${impl.name}: in-process, rule ${impl.rules.join(" or ")}`, async () => {
      const report = failureOf(impl)
      const outcome = await CheckTrace.checkChunks(chunks(report.trace), {
        quiescent: report.verdict?.quiescent ?? false
      })
      expect(outcome.valid).toBe(false)
      if (outcome.valid) return
      expect(impl.rules).toContain(outcome.rule)
      expect(outcome.rule).toBe(report.verdict?.rule)
      expect(outcome.line).toBe(report.verdict?.line)
    })

  describe("through the command line", () => {
    beforeAll(ensureBuilt, 120_000)

    /** A few through the real binary (each run starts a process): a data loss, an early sync, a skipped resync. */
    const throughBinary = ["clear-on-read-completion", "sync-with-block-unacked", "skip-rollback-resync"]

    it(`${throughBinary.join(", ")}: exit 1, the rule and line in --json`, async () => {
      const files = tempDir()
      try {
        const runs = await Promise.all(
          gallery
            .filter((impl) => throughBinary.includes(impl.name))
            .map(async (impl) => {
              const report = failureOf(impl)
              const path = files.write(`${impl.name}.jsonl`, report.trace)
              const args = [
                "check-trace",
                path,
                "--json",
                ...(report.verdict?.quiescent ? ["--quiescent"] : [])
              ]
              return { impl, report, run: await cdpSync(args) }
            })
        )
        expect(runs.length).toBe(throughBinary.length)
        for (const { impl, report, run } of runs) {
          expect(run.code, `${impl.name}: ${run.stdout}${run.stderr}`).toBe(1)
          const json = JSON.parse(run.stdout) as { valid: boolean; line: number; rule: string }
          expect(json.valid).toBe(false)
          expect(json.rule).toBe(report.verdict?.rule)
          expect(json.line).toBe(report.verdict?.line)
        }
      } finally {
        files.remove()
      }
    })

    it("every gallery trace through the command line in-process: exit 1, the rule and line in --json", async () => {
      const files = tempDir()
      try {
        for (const impl of gallery) {
          const report = failureOf(impl)
          const path = files.write(`${impl.name}.jsonl`, report.trace)
          const args = ["check-trace", path, "--json", ...(report.verdict?.quiescent ? ["--quiescent"] : [])]
          const run = await cdpSyncInProcess(args)
          expect(run.code, `${impl.name}: ${run.stdout}${run.stderr}`).toBe(1)
          expect(JSON.parse(run.stdout)).toMatchObject({
            valid: false,
            rule: report.verdict?.rule,
            line: report.verdict?.line
          })
        }
      } finally {
        files.remove()
      }
    })

    it("a gallery trace in the human form: names the line, the rule and the model state", async () => {
      const report = failureOf(gallery[0]!)
      const files = tempDir()
      try {
        const run = await cdpSyncInProcess(["check-trace", files.write("trace.jsonl", report.trace)])
        expect(run.code).toBe(1)
        expect(run.stdout).toContain(`invalid: line ${report.verdict?.line}: ${report.verdict?.rule}`)
        expect(run.stdout).toMatch(/model: mode resync, link up/)
        expect(run.stdout).toMatch(/obligations left: [1-9]/)
      } finally {
        files.remove()
      }
    })
  })
})

describe("the kit's report", () => {
  it("assert throws a readable error: the rule, the steps, the trace, how to replay", () => {
    const impl = gallery.find((g) => g.name === "stream-during-resync")!
    let message = ""
    try {
      Conformance.assert(impl, { numRuns })
    } catch (e) {
      expect(e).toBeInstanceOf(Conformance.ConformanceFailure)
      message = (e as Error).message
    }
    expect(message).toContain("stream-during-resync does not conform")
    expect(message).toMatch(/check-trace: line \d+: mode-not-sync/)
    expect(message).toMatch(/steps \(\d+, shrunk/)
    expect(message).toContain('"type":"WriteStreamed"')
    expect(message).toMatch(/replay: check\(impl, \{ seed: -?\d+, path: "[\d:]*" \}\)/)
  })

  it("replays the same counterexample from its seed and path", () => {
    const impl = gallery.find((g) => g.name === "sync-with-block-unacked")!
    const first = failureOf(impl)
    const again = Conformance.check(impl, { seed: first.seed, path: first.path })
    expect(again.ok).toBe(false)
    if (again.ok) return
    expect(again.counterexample).toEqual(first.counterexample)
    expect(again.trace).toBe(first.trace)
  })

  it("a counterexample replays with runSteps", () => {
    const impl = gallery.find((g) => g.name === "blocks-before-marker")!
    const { counterexample, trace, invariant } = failureOf(impl)
    const run = Conformance.runSteps(impl, counterexample.config, counterexample.steps)
    expect(run.failure?.invariant).toBe(invariant)
    expect(run.trace).toBe(trace)
  })
})

describe("the reference", () => {
  it("passes the kit", () => {
    const report = Conformance.assert(Conformance.reference, { numRuns: 400 })
    expect(report.runs).toBe(400)
  })

  it("decide's traces always check clean, and end quiescent once the world healed", async () => {
    await fc.assert(
      fc.asyncProperty(Conformance.Arbitraries.scenario, async (s) => {
        const run = Conformance.runSteps(Conformance.reference, s.config, Conformance.Arbitraries.stepsOf(s))
        expect(run.failure).toBeUndefined()
        expect(Conformance.verdictOf(s.config, run.events, true)).toBeUndefined()
        const outcome = await CheckTrace.checkChunks(chunks(run.trace, 61), { quiescent: true })
        expect(outcome).toMatchObject({
          valid: true,
          summary: { events: run.events.length, finalMode: "sync" }
        })
      }),
      { numRuns: 200 }
    )
  })
})

/**
 * `cdp-sync/conformance`: checks another implementation of the filter against the
 * model. The implementer supplies a small adapter (`Implementation`: start a
 * filter, feed it an input, get back the events it recorded); the kit drives it
 * through fast-check scenarios of writes, acks, pumps and faults in a simulated
 * world (disk, wire, log receiver), checks every event against the legality rules
 * of design §5 and the data against the invariants of design §4, and shrinks a
 * failure to a minimal sequence of steps, with its trace.
 *
 * ```ts
 * import * as Conformance from "cdp-sync/conformance"
 *
 * const mine: Conformance.Implementation<MyFilter> = {
 *   name: "my-filter",
 *   start: (config) => new MyFilter(config),
 *   feed: (filter, input) => filter.handle(input) // the events it recorded, in order
 * }
 * Conformance.assert(mine, { numRuns: 500 })      // inside any test runner
 * ```
 *
 * Pure: no I/O, usable in any JavaScript runtime. See docs/conformance.md.
 */
import { Data } from "effect"
import fc from "fast-check"
import type { Config } from "../domain/Config.js"
import type { Step } from "./Simulation.js"
import * as Arbitraries from "./internal/arbitraries.js"
import {
  allInvariants,
  type FailureKind,
  type Implementation,
  type Invariant,
  type RunResult,
  runSteps,
  type TraceVerdict
} from "./internal/runner.js"

export { Arbitraries }
export * as CheckTrace from "./CheckTrace.js"
export * as Simulation from "./Simulation.js"
export { type Box, reference } from "./internal/reference.js"
export {
  allInvariants,
  type FailureKind,
  type Implementation,
  type Invariant,
  type RunFailure,
  type RunResult,
  runSteps,
  type TraceVerdict,
  traceOf,
  verdictOf
} from "./internal/runner.js"

export interface Options {
  /** Scenarios to try; default 300. */
  readonly numRuns?: number
  /** fast-check seed: the same seed gives the same scenarios. */
  readonly seed?: number
  /** With `seed`, replays one shrunk counterexample directly (from a failed report). */
  readonly path?: string
  /** The invariants to check; default all (`allInvariants`). */
  readonly invariants?: ReadonlyArray<Invariant>
  /** Longest scenario, in steps; default 160. */
  readonly maxSteps?: number
  /** The configurations to try; default small disks (1…40 blocks of 4 or 8 KiB), windows 1…6, both initial modes. */
  readonly configs?: fc.Arbitrary<Config>
  /**
   * Checksum-based resync (trace version 2): pumps carry `compareFrom`, the receiver
   * answers comparisons and the steps zero whole blocks too. Default false: the version 1
   * scenarios, exactly as before.
   */
  readonly comparisons?: boolean
  /**
   * Runs (trace version 3): as `comparisons`, and pumps carry `compareRun` (1 to 4), so the
   * implementation compares in runs and is answered with `RunCompleted`. Default false.
   */
  readonly runs?: boolean
}

export const defaultNumRuns = 300

/** Only for a report without a counterexample (fast-check itself failed). */
const fallbackConfig: Config = {
  blockSize: 4096,
  blockCount: 1,
  window: 1,
  congestionLimit: 4096,
  initial: "in-sync"
}

export interface Passed {
  readonly ok: true
  readonly implementation: string
  readonly runs: number
  readonly seed: number
}

export interface Failed {
  readonly ok: false
  readonly implementation: string
  /** The invariant broken, or `exception` / `malformed-event`. */
  readonly invariant: FailureKind
  readonly detail: string
  /** The shrunk scenario: replay it with `runSteps(impl, config, steps, allInvariants, compareFrom, compareRun)`. */
  readonly counterexample: {
    readonly config: Config
    readonly steps: ReadonlyArray<Step>
    /** With `comparisons`: when the pumps asked for comparisons. */
    readonly compareFrom?: number
    /** With `runs`: the most blocks a pump asked to compare in one run. */
    readonly compareRun?: number
  }
  /** 1-based step at which it broke (beyond `steps.length`: while the world healed afterwards). */
  readonly step: number
  /** The failing run as a design §5 trace, ending with the offending event. */
  readonly trace: string
  /** What `cdp-sync check-trace` says about `trace` (`undefined` if it checks clean: a data-only failure). */
  readonly verdict: TraceVerdict | undefined
  /** Replay with `check(impl, { seed, path })`. */
  readonly seed: number
  readonly path: string
  /** Scenarios run until the first failure, and shrink steps taken. */
  readonly runs: number
  readonly shrinks: number
  /** False when a re-run of the counterexample passed: the implementation is not deterministic. */
  readonly reproducible: boolean
}

export type Report = Passed | Failed

/** Drives the implementation through `numRuns` scenarios; never throws (what `feed` throws is a failure). */
export const check = <H>(impl: Implementation<H>, options: Options = {}): Report => {
  const invariants = options.invariants ?? allInvariants
  const shape = {
    ...(options.configs === undefined ? {} : { config: options.configs }),
    ...(options.maxSteps === undefined ? {} : { maxSteps: options.maxSteps })
  }
  // Both kinds as one shape: a version 1 scenario never compares.
  const scenarios: fc.Arbitrary<Arbitraries.Scenario | Arbitraries.ComparingScenario> =
    options.runs === true
      ? Arbitraries.runScenarioOf(shape)
      : options.comparisons === true
        ? Arbitraries.comparingScenarioOf(shape)
        : Arbitraries.scenarioOf(shape)
  const compareFromOf = (s: Arbitraries.Scenario | Arbitraries.ComparingScenario) =>
    "compareFrom" in s ? s.compareFrom : undefined
  const compareRunOf = (s: Arbitraries.Scenario | Arbitraries.ComparingScenario) =>
    "compareRun" in s ? s.compareRun : undefined
  let lastFailure:
    | {
        readonly config: Config
        readonly steps: ReadonlyArray<Step>
        readonly compareFrom: number | undefined
        readonly compareRun: number | undefined
        readonly result: RunResult
      }
    | undefined
  const property = fc.property(scenarios, (s) => {
    const steps = Arbitraries.stepsOf(s)
    const result = runSteps(impl, s.config, steps, invariants, compareFromOf(s), compareRunOf(s))
    if (result.failure === undefined) return true
    lastFailure = {
      config: s.config,
      steps,
      compareFrom: compareFromOf(s),
      compareRun: compareRunOf(s),
      result
    }
    return false
  })
  const details = fc.check(property, {
    numRuns: options.numRuns ?? defaultNumRuns,
    ...(options.seed === undefined ? {} : { seed: options.seed }),
    ...(options.path === undefined ? {} : { path: options.path })
  })
  if (!details.failed)
    return { ok: true, implementation: impl.name, runs: details.numRuns, seed: details.seed }
  const scenario = details.counterexample?.[0]
  let config = scenario?.config ?? lastFailure?.config ?? fallbackConfig
  let steps: ReadonlyArray<Step> = scenario === undefined ? [] : Arbitraries.stepsOf(scenario)
  let compareFrom = scenario === undefined ? undefined : compareFromOf(scenario)
  let compareRun = scenario === undefined ? undefined : compareRunOf(scenario)
  let result =
    scenario === undefined ? undefined : runSteps(impl, config, steps, invariants, compareFrom, compareRun)
  const reproducible = result?.failure !== undefined
  if (!reproducible && lastFailure !== undefined)
    ({ config, steps, compareFrom, compareRun, result } = lastFailure)
  const failure = result?.failure ?? {
    invariant: "exception" as const,
    detail: `the property failed without a recorded run: ${String(details.errorInstance)}`,
    step: 0,
    healing: false
  }
  return {
    ok: false,
    implementation: impl.name,
    invariant: failure.invariant,
    detail: failure.detail,
    // Steps after the failure cannot matter: the run stops there.
    counterexample: {
      config,
      steps: failure.healing ? steps : steps.slice(0, failure.step),
      ...(compareFrom === undefined ? {} : { compareFrom }),
      ...(compareRun === undefined ? {} : { compareRun })
    },
    step: failure.step,
    trace: result?.trace ?? "",
    verdict: result?.verdict,
    seed: details.seed,
    path: details.counterexamplePath ?? "",
    runs: details.numRuns,
    shrinks: details.numShrinks,
    reproducible
  }
}

/** A failed conformance check, with its report and a readable message. */
export class ConformanceFailure extends Data.TaggedError("ConformanceFailure")<{ readonly report: Failed }> {
  override get message() {
    return render(this.report)
  }
}

/** Like `check`, but throws a `ConformanceFailure` with a readable message: for use inside any test runner. */
export const assert = <H>(impl: Implementation<H>, options: Options = {}): Passed => {
  const report = check(impl, options)
  if (!report.ok) throw new ConformanceFailure({ report })
  return report
}

const showStep = (step: Step): string => {
  switch (step._tag) {
    case "Write":
      return `Write(${step.offset}+${step.length})`
    case "Zero":
      return `Zero(${step.offset}+${step.length})`
    case "Pump":
      return `Pump(${step.budget})`
    case "Cut":
      return `Cut(${step.reason})`
    case "Restart":
      return `Restart(${step.lose ? "lose unflushed" : "keep unflushed"}${step.rollback === undefined ? "" : `, rollback ${step.rollback}`})`
    default:
      return step._tag
  }
}

const traceTail = 24

/** A failed report as text: what broke, where, the minimal steps, and the end of the trace. */
export const render = (report: Failed): string => {
  const c = report.counterexample
  const lines = [
    `${report.implementation} does not conform: ${report.invariant} broken at step ${report.step}${report.step > c.steps.length ? " (while the world healed)" : ""}`,
    `  ${report.detail}`
  ]
  const v = report.verdict
  if (v !== undefined)
    lines.push(
      `  check-trace${v.quiescent ? " --quiescent" : ""}: line ${v.line}: ${v.rule}: ${v.reason}`,
      `  model: ${JSON.stringify(v.state)}`
    )
  else if (report.trace !== "")
    lines.push("  check-trace: the trace itself is legal (the failure is in the data)")
  lines.push(
    `  config: ${JSON.stringify(c.config)}${c.compareFrom === undefined ? "" : `, compareFrom ${c.compareFrom}`}${c.compareRun === undefined ? "" : `, compareRun ${c.compareRun}`}`,
    `  steps (${c.steps.length}, shrunk ${report.shrinks}× after ${report.runs} run(s)): ${c.steps.map(showStep).join(", ")}`
  )
  const trace = report.trace.trimEnd().split("\n")
  if (report.trace !== "") {
    lines.push(
      trace.length > traceTail
        ? `  trace (last ${traceTail} of ${trace.length} lines):`
        : `  trace (${trace.length} lines):`
    )
    const from = Math.max(0, trace.length - traceTail)
    for (let i = from; i < trace.length; i++) lines.push(`    ${String(i + 1).padStart(4)}  ${trace[i]}`)
  }
  if (!report.reproducible)
    lines.push("  note: re-running the counterexample passed: the implementation is not deterministic")
  lines.push(`  replay: check(impl, { seed: ${report.seed}, path: ${JSON.stringify(report.path)} })`)
  return lines.join("\n")
}

/**
 * The pure model run as a program: random writes and faults through
 * decide/evolve against the simulated receiver of `Simulation`, every invariant
 * checked as it goes, then a heal-and-settle and the verdict.
 */
import { Effect, Either } from "effect"
import * as Config from "../domain/Config.js"
import * as Simulation from "../conformance/Simulation.js"
import type * as State from "../domain/State.js"

export interface Options {
  readonly steps: number
  readonly blockCount: number
  readonly blockSize: number
  readonly window: number
  readonly congestionLimit: number
  readonly initial: Config.Initial
  readonly faults: Simulation.FaultLevel
  readonly seed: number
  /**
   * Checksum-based resync: pumps compare blocks instead of sending them while at least
   * this many are owed (1: every block), and the workload zeroes whole blocks now and
   * then, so a block's content comes back. Default: never compare.
   */
  readonly compareFrom?: number | undefined
}

export const defaults: Options = {
  steps: 100_000,
  blockCount: 4096,
  blockSize: 65536,
  window: 16,
  congestionLimit: 256 * 1024,
  initial: "in-sync",
  faults: "some",
  seed: 1
}

export interface Report {
  readonly options: Options
  /** Ticks run (`options.steps`, fewer when an invariant broke): what `--steps` counts. */
  readonly steps: number
  /** The single decide/evolve steps those ticks and the final settle took. */
  readonly modelSteps: number
  readonly writes: number
  readonly bytes: number
  readonly events: number
  readonly records: number
  readonly faults: number
  readonly recoveryPoints: number
  /** Comparisons decided, and how many matched (blocks proven without a data record). */
  readonly compared: number
  readonly matched: number
  readonly modeChanges: Readonly<Record<string, number>>
  readonly finalMode: State.Mode
  readonly epochs: number
  /** `match` when the healed replica equals the disk block for block. */
  readonly verdict: "match" | "mismatch"
  /** The first invariant broken, if any. */
  readonly failure: Simulation.Failure | undefined
  readonly timeline: ReadonlyArray<"sync" | "resync">
  readonly dirtyCurve: ReadonlyArray<number>
}

/** Runs the simulation, calling `onProgress(done, total)` between chunks of steps. */
export const run = Effect.fn("ModelSimulation.run")(function* (
  options: Options,
  onProgress: (done: number, total: number) => Effect.Effect<void> = () => Effect.void
) {
  const config = yield* Either.mapLeft(
    Config.make({
      blockSize: options.blockSize,
      blockCount: options.blockCount,
      window: options.window,
      congestionLimit: options.congestionLimit,
      initial: options.initial
    }),
    (e) => e
  )
  const world = new Simulation.World(config, Simulation.reference, {
    recordEvents: false,
    diskCheckEvery: Math.max(1, Math.ceil(options.blockCount / 256)),
    ...(options.compareFrom === undefined ? {} : { compareFrom: options.compareFrom })
  })
  const ticks = Simulation.workloadTicks(
    config,
    options.seed,
    options.steps,
    options.faults,
    options.compareFrom !== undefined
  )
  const chunk = 5_000
  let done = 0
  for (const tick of ticks) {
    for (const step of tick) world.step(step)
    done++
    if (world.failure !== undefined) break
    if (done % chunk === 0) {
      yield* onProgress(done, options.steps)
      yield* Effect.yieldNow()
    }
  }
  world.settle(256)
  yield* onProgress(options.steps, options.steps)
  const view = world.view
  return {
    options,
    steps: done,
    modelSteps: world.stats.steps,
    writes: world.stats.writes,
    bytes: world.stats.bytes,
    events: world.stats.events,
    records: world.stats.records,
    faults: world.stats.faults,
    recoveryPoints: world.stats.recoveryPoints,
    compared: world.stats.compared,
    matched: world.stats.matched,
    modeChanges: world.stats.modeChanges,
    finalMode: view.mode,
    epochs: view.epoch,
    verdict: world.quiescent && world.firstDifference() < 0 ? "match" : "mismatch",
    failure: world.failure,
    timeline: world.stats.timeline,
    dirtyCurve: world.stats.dirtyCurve
  } satisfies Report
})

/**
 * The `cdp-sync` command line with every command (the main bundle's), and the two commands
 * of the pure model, `model` and `check-trace`.
 */
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect } from "effect"
import * as Trace from "../domain/Trace.js"
import * as CheckTrace from "../conformance/CheckTrace.js"
import { mount } from "./mountCommand.js"
import { points, receiver, restore, scrub } from "./receiverCommands.js"
import { replicate } from "./replicatorCommands.js"
import { simulate } from "./simulateCommand.js"
import { commandLine } from "./commandLine.js"
import { serve } from "./serveCommand.js"
import { status } from "./statusCommand.js"
import { verify } from "./verifyCommand.js"
import * as ModelSimulation from "../simulator/ModelSimulation.js"
import { modeTimeline, progressBar, sparkline } from "./internal/charts.js"
import { mib } from "../internal/units.js"
import * as Outcome from "./internal/outcome.js"
import { described, json, positive, seed as seedOption, size } from "./internal/options.js"

const render = (report: ModelSimulation.Report): string => {
  const o = report.options
  const width = 72
  const lines = [
    "",
    `cdp-sync model simulation  seed ${o.seed}  faults ${o.faults}  disk ${o.blockCount} x ${o.blockSize / 1024} KiB blocks  window ${o.window}`,
    "",
    `  writes            ${report.writes} (${mib(report.bytes)})`,
    `  events decided    ${report.events}`,
    `  records sent      ${report.records}`,
    `  faults injected   ${report.faults}`,
    `  recovery points   ${report.recoveryPoints}`,
    `  epochs            ${report.epochs}`,
    `  mode changes      ${Object.entries(report.modeChanges)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}`,
    "",
    "  mode timeline (─ sync, █ resync, ▒ both)",
    `  ${modeTimeline(report.timeline, width)}`,
    "  dirty blocks",
    `  ${sparkline(report.dirtyCurve, width)}  peak ${report.dirtyCurve.reduce((a, b) => Math.max(a, b), 0)}`,
    ""
  ]
  if (report.failure !== undefined)
    lines.push(
      `  INVARIANT BROKEN at step ${report.failure.step}: ${report.failure.invariant}: ${report.failure.detail}`
    )
  else
    lines.push(
      "  invariants        all held (no write lost, sync only when clean, sequence, coverage, legality)"
    )
  lines.push(
    `  verdict           ${report.verdict === "match" ? "MATCH: the healed replica equals the disk, block for block" : "MISMATCH"}`,
    ""
  )
  return lines.join("\n")
}

const d = ModelSimulation.defaults
const steps = positive(
  "steps",
  d.steps,
  "How many ticks to run (each a write, a fault, or a round of pump, sends and acks)"
)
const blocks = positive("blocks", d.blockCount, "Tracking blocks on the simulated disk")
const blockSize = size(
  "block-size",
  d.blockSize,
  "Tracking-block size in bytes (power of two, 4 KiB … 1 MiB)"
)
const window = positive("window", d.window, "Max block records in flight during a drain")
const congestionLimit = size(
  "congestion-limit",
  d.congestionLimit,
  "Max unacked live bytes before pull-ahead into resync"
)
const initial = Options.choice("initial", ["in-sync", "full-sync"]).pipe(
  Options.withDefault(d.initial),
  Options.withDescription(
    described("Whether the receiver starts with the base snapshot or needs a full sync", d.initial)
  )
)
const faults = Options.choice("faults", ["none", "some", "chaos"]).pipe(
  Options.withDefault(d.faults),
  Options.withDescription(
    described("How often to cut the link, drop records and restart the receiver", d.faults)
  )
)
const seed = seedOption("Seed of the workload (same seed, same run)", d.seed)

export const model = Command.make(
  "model",
  { steps, blocks, blockSize, window, congestionLimit, initial, faults, seed, json: json() },
  (o) =>
    Effect.gen(function* () {
      const interactive = !o.json && process.stderr.isTTY === true
      const report = yield* ModelSimulation.run(
        {
          steps: o.steps,
          blockCount: o.blocks,
          blockSize: o.blockSize,
          window: o.window,
          congestionLimit: o.congestionLimit,
          initial: o.initial,
          faults: o.faults,
          seed: o.seed
        },
        (done, total) =>
          o.json
            ? Effect.void
            : Effect.sync(() => {
                const line = `simulating ${progressBar(done, total)} ${done}/${total} steps`
                if (interactive) process.stderr.write(`\r${line}`)
                else if (done === total || done % Math.max(1, Math.floor(total / 4)) < 5000)
                  process.stderr.write(`${line}\n`)
              })
      )
      if (interactive) process.stderr.write("\n")
      if (o.json) {
        const { timeline: _t, dirtyCurve: _d, ...rest } = report
        yield* Console.log(JSON.stringify(rest))
      } else yield* Console.log(render(report))
      if (report.verdict !== "match" || report.failure !== undefined) process.exitCode = Outcome.EXIT_FAILURE
    }).pipe(Outcome.reportFailure("model", o.json))
).pipe(
  Command.withDescription(
    "Run the pure model: random writes and faults through decide/evolve against a simulated receiver; every invariant is checked at every step. Example: cdp-sync model --steps 50000 --faults chaos --seed 7"
  )
)

export const checkTrace = Command.make(
  "check-trace",
  {
    file: Args.text({ name: "FILE" }).pipe(
      Args.withDefault("-"),
      Args.withDescription("The trace (JSON Lines); - or nothing for standard input")
    ),
    quiescent: Options.boolean("quiescent").pipe(
      Options.withDescription("The trace must end in sync mode, link up, nothing in flight")
    ),
    json: json("Report as one JSON object"),
    maxLineBytes: size(
      "max-line-bytes",
      Trace.DEFAULT_MAX_LINE_BYTES,
      "A longer line (not counting its line end) makes the trace invalid: line-too-long"
    )
  },
  ({ file, quiescent, json, maxLineBytes }) =>
    CheckTrace.checkFile(file, { quiescent, maxLineBytes }).pipe(
      Effect.flatMap((outcome) =>
        Effect.gen(function* () {
          yield* Console.log(json ? JSON.stringify(outcome) : CheckTrace.render(outcome))
          if (!outcome.valid) process.exitCode = 1
        })
      ),
      // Documented: exit 2 when the trace cannot be read (1 is an invalid trace).
      Effect.catchTag("TraceUnreadable", (e) => Outcome.fail("check-trace", e, json, Outcome.EXIT_USAGE)),
      Outcome.reportFailure("check-trace", json)
    )
).pipe(
  Command.withDescription(
    "Check a trace from another implementation against the model (design §5). Exit 0 valid, 1 invalid (the first offending line is named), 2 the file cannot be read. Example: cdp-sync check-trace run.jsonl --quiescent"
  )
)

/** Every command, in the order `--help` lists them (the main bundle's: `run.ts`). */
export const commands = [
  simulate,
  replicate,
  serve,
  receiver,
  status,
  verify,
  restore,
  mount,
  points,
  scrub,
  checkTrace,
  model
] as const

/** The command line with every command (what `cdp-sync --help` lists; tests run it in-process). */
export const cli = commandLine(commands)

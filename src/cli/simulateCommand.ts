/**
 * `cdp-sync simulate`: the whole system on this machine (a disk image, the log receiver as
 * a child process, faults on a schedule, a guest workload), then a restore compared with
 * the disk.
 */
import { Command, Options } from "@effect/cli"
import { Console, Effect, Option } from "effect"
import * as Simulate from "../simulator/Simulate.js"
import { progressBar, sparkline } from "./internal/charts.js"
import { mib } from "../internal/units.js"
import { integer, json, seed, size } from "./internal/options.js"
import { reportFailure } from "./internal/outcome.js"

const statusLine = (t: Simulate.Tick, peakDirty: number, rate: number, seconds: number): string => {
  const s = t.status
  const mode = s.mode === "sync" ? "SYNC  " : "RESYNC"
  const drain =
    s.mode === "resync" && peakDirty > 0
      ? `drain ${progressBar(peakDirty - s.dirtyBlocks, peakDirty, 16)}`
      : "drain [ live stream    ]     "
  const fault = t.fault === undefined ? "" : `  fault: ${t.fault}`
  const left = Math.max(0, seconds - t.at / 1000)
  return `${progressBar(t.at, seconds * 1000, 10)} ETA ${left.toFixed(0).padStart(3)}s ${(t.at / 1000).toFixed(1).padStart(5)}s ${mode} epoch ${String(s.epoch).padStart(3)} link ${s.link.padEnd(4)} dirty ${String(s.dirtyBlocks).padStart(6)} ${drain} lag ${String(s.lagRecords).padStart(5)} rec ${String(s.lagMillis).padStart(5)} ms  ${rate.toFixed(1).padStart(6)} MB/s${fault}`
}

const renderTimeline = (report: Simulate.Report, width: number): Array<string> => {
  const total = Math.max(1, report.seconds * 1000)
  const cells: Array<string> = Array.from({ length: width }, () => " ")
  const dirty: Array<number> = Array.from({ length: width }, () => 0)
  let last: "sync" | "resync" = "resync"
  for (let c = 0; c < width; c++) {
    const from = (c / width) * total
    const to = ((c + 1) / width) * total
    const inCell = report.timeline.filter((p) => p.at >= from && p.at < to)
    const modes = new Set(inCell.map((p) => p.mode))
    if (modes.size === 0) modes.add(last)
    cells[c] = modes.size === 2 ? "▒" : modes.has("sync") ? "─" : "█"
    for (const p of inCell) dirty[c] = Math.max(dirty[c]!, p.dirty)
    last = inCell.at(-1)?.mode ?? last
  }
  return [
    "  mode timeline (─ sync, █ resync, ▒ both)",
    `  ${cells.join("")}`,
    "  dirty blocks",
    `  ${sparkline(dirty, width)}`,
    `  0s${" ".repeat(Math.max(1, width - 8))}${report.seconds.toFixed(0)}s`
  ]
}

export const renderReport = (options: Simulate.Options, report: Simulate.Report): string => {
  const lines = [
    "",
    `cdp-sync simulate  ${options.seconds}s  disk ${mib(options.diskBytes)} in ${options.blockSize / 1024} KiB blocks  faults ${options.faults}  seed ${options.seed}`,
    "",
    `  guest writes      ${report.writes} (${mib(report.bytes)}, ${(report.bytes / 1024 / 1024 / report.seconds).toFixed(1)} MB/s)`,
    `  faults injected   ${
      Object.entries(report.faults)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "none"
    }`,
    `  mode changes      ${
      Object.entries(report.modeChanges)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "none"
    }`,
    `  epochs            ${report.epochs}`,
    `  recovery points   ${report.recoveryPoints} (restored: seq ${report.restoredSeq})`,
    "",
    ...renderTimeline(report, 72),
    "",
    `  disk     sha256   ${report.diskSha256}`,
    `  replica  sha256   ${report.replicaSha256}`,
    `  verdict           ${report.verdict === "match" ? "MATCH: the restored recovery point equals the disk" : "MISMATCH"}`
  ]
  if (report.diskImage !== undefined)
    lines.push(`  kept              ${report.diskImage}, ${report.receiverDir}`)
  return `${lines.join("\n")}\n`
}

export const simulate = Command.make(
  "simulate",
  {
    seconds: integer("seconds", 20, "How long the workload runs"),
    diskSize: size("disk-size", 256 * 2 ** 20, "Size of the simulated disk (e.g. 256MiB, 1GiB)"),
    blockSize: size("block-size", 64 * 2 ** 10, "Tracking-block size (power of two, 4 KiB … 1 MiB)"),
    faults: Options.choice("faults", ["none", "some", "chaos"]).pipe(
      Options.withDefault("some"),
      Options.withDescription(
        "Fault schedule: none; some (each kind in turn every ~3 s); chaos (random, every ~1.2 s)"
      )
    ),
    seed: seed("Seed of the workload and the faults"),
    keep: Options.text("keep").pipe(
      Options.optional,
      Options.withDescription("Keep the disk image and the receiver's directory in DIR")
    ),
    json: json(),
    trace: Options.text("trace").pipe(
      Options.optional,
      Options.withDescription("Write the filter's events as a trace (design §5)")
    )
  },
  (o) =>
    Effect.gen(function* () {
      const options: Simulate.Options = {
        seconds: o.seconds,
        diskBytes: o.diskSize,
        blockSize: o.blockSize,
        faults: o.faults,
        seed: o.seed,
        keep: Option.getOrUndefined(o.keep),
        json: o.json,
        trace: Option.getOrUndefined(o.trace)
      }
      const tty = process.stderr.isTTY === true
      let peakDirty = 0
      let lastBytes = 0
      let lastAt = 0
      let lastPrinted = -1
      const report = yield* Simulate.run(options, (t) =>
        Effect.sync(() => {
          if (t.status.mode === "sync") peakDirty = 0
          peakDirty = Math.max(peakDirty, t.status.dirtyBlocks)
          const rate = t.at > lastAt ? ((t.bytes - lastBytes) / 1024 / 1024 / (t.at - lastAt)) * 1000 : 0
          lastBytes = t.bytes
          lastAt = t.at
          const line = statusLine(t, peakDirty, rate, o.seconds)
          if (tty) process.stderr.write(`\r${line}\u001b[K`)
          else if (Math.floor(t.at / 2000) !== lastPrinted) {
            lastPrinted = Math.floor(t.at / 2000)
            process.stderr.write(`${line}\n`)
          }
        })
      )
      if (tty) process.stderr.write("\n")
      if (o.json) {
        const { timeline: _, ...rest } = report
        yield* Console.log(JSON.stringify(rest))
      } else yield* Console.log(renderReport(options, report))
      if (report.verdict !== "match") process.exitCode = 1
    }).pipe(reportFailure("simulate", o.json))
).pipe(
  Command.withDescription(
    "Run the whole system on this machine: a disk image, the log receiver as a child process on loopback, faults on a schedule, a mixed guest workload; then restore the latest recovery point and compare it with the disk (exit 1 on a mismatch). Example: cdp-sync simulate --seconds 30 --faults chaos --seed 7 --keep ./sim"
  )
)

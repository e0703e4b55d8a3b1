/**
 * `cdp-sync verify`: online verify (DRBD's `drbdadm verify`) of a running filter's replica.
 * Asks the filter's control endpoint (`replicate` or `serve`) to compare the receiver's
 * version of every block with the disk's where they must match, while replication runs;
 * with `--resync` the blocks found to differ are marked so the next pass sends them.
 * Progress on stderr; the report on stdout. Exit 0 when the replica equals the disk,
 * 1 when blocks differ or the verify cannot run, 2 on a usage error.
 */
import { Command, Options } from "@effect/cli"
import { Console, Effect, Option } from "effect"
import * as Control from "../internal/control.js"
import type { VerifyReport } from "../internal/controlProtocol.js"
import { CONTROL_FILE, controlPath } from "./internal/control.js"
import { formatBytes } from "./statusCommand.js"
import { json, optionalSize, optionalText } from "./internal/options.js"
import { progress } from "./internal/progress.js"

const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? "" : "s"}`

/** The report for a person: the verdict, then the differing ranges. */
export const render = (r: VerifyReport): string => {
  const verdict =
    r.differing === 0
      ? `verified disk ${JSON.stringify(r.disk)}: ${r.verified === r.blocks ? "all " : ""}${r.verified} of ${r.blocks} blocks equal the replica's`
      : `verified disk ${JSON.stringify(r.disk)}: ${plural(r.differing, "block")} of ${r.blocks} differ${r.differing === 1 ? "s" : ""} from the replica's${r.resync ? " (marked: the next pass sends them)" : " (run with --resync to send them again)"}`
  const ranges = r.ranges.map((x) =>
    x.count === 1
      ? `  block ${x.first} (bytes ${x.first * r.blockSize}…${(x.first + 1) * r.blockSize - 1})`
      : `  blocks ${x.first}…${x.first + x.count - 1} (bytes ${x.first * r.blockSize}…${(x.first + x.count) * r.blockSize - 1})`
  )
  if (r.rangesOmitted > 0) ranges.push(`  … and ${plural(r.rangesOmitted, "more range")}`)
  const tail = `${r.algorithm === undefined ? "" : `${r.algorithm}, `}${formatBytes(Math.round(r.bytesPerSecond))}/s over ${r.seconds.toFixed(1)} s${r.rechecked > 0 ? `, ${plural(r.rechecked, "block")} rechecked after a write raced the comparison` : ""}${r.unverified > 0 ? `; ${plural(r.unverified, "block")} not judged: written during every attempt` : ""}`
  return [verdict, ...ranges, tail].join("\n")
}

export const verify = Command.make(
  "verify",
  {
    control: optionalText("control", "The filter's control socket"),
    journal: optionalText("journal", `The filter's journal directory (asks its ${CONTROL_FILE})`),
    rate: optionalSize(
      "rate",
      "Read and hash at most this much of the disk per second (e.g. 50MiB; default: no limit)"
    ),
    resync: Options.boolean("resync").pipe(
      Options.withDescription("Mark the blocks found to differ so that the next pass sends them again")
    ),
    json: json(
      'The report as one JSON object on stdout ({"verify": …} or {"error": …}); progress as JSON lines on stderr'
    )
  },
  (o) =>
    Effect.gen(function* () {
      if (Option.isSome(o.control) === Option.isSome(o.journal)) {
        yield* Console.error("cdp-sync verify: give one of --control PATH or --journal DIR")
        process.exitCode = 2
        return
      }
      const socket = controlPath(
        o.control,
        Option.getOrElse(o.journal, () => ".")
      )
      const bar = progress({
        label: "verifying",
        rate: (perSecond) => `${perSecond.toFixed(0)} blocks/s`,
        json: o.json ? { phase: "verifying", unit: "blocks" } : undefined
      })
      const outcome = yield* Effect.either(
        Control.verify(
          socket,
          {
            ...(Option.isSome(o.rate) ? { bytesPerSecond: o.rate.value } : {}),
            ...(o.resync ? { resync: true } : {})
          },
          (p) => bar.update(p.verified, p.blocks)
        )
      )
      bar.end()
      if (outcome._tag === "Left") {
        const e = outcome.left
        yield* o.json
          ? Console.log(JSON.stringify({ error: { _tag: e._tag, message: e.message } }))
          : Console.error(`cdp-sync verify: ${e.message}`)
        process.exitCode = 1
        return
      }
      const report = outcome.right
      yield* Console.log(o.json ? JSON.stringify({ verify: report }) : render(report))
      if (report.differing > 0) process.exitCode = 1
    })
).pipe(
  Command.withDescription(
    `Online verify: compare the receiver's version of every block with the disk's, while the filter runs (asks a running replicate or serve on its control socket: ${CONTROL_FILE} in the journal directory, or --control). Reports the blocks that differ (count and ranges); with --resync marks them so the next pass sends them again. Exit 0 when the replica equals the disk, 1 when blocks differ or the verify cannot run, 2 on a usage error. Example: cdp-sync verify --journal ./journal --rate 100MiB --resync`
  )
)

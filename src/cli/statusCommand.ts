/**
 * `cdp-sync status`: asks a running `replicate`, `serve` or `receiver` on its control
 * socket (`internal/control.ts`) and shows, per disk, what `drbdsetup status` would:
 * role, mode, link, epoch, dirty blocks, the drain, checksum resync's counts, the lag (the
 * live RPO), the last recovery point and its age, the last error or why it stopped. `--watch` redraws every
 * second like `drbdmon` (on a terminal; elsewhere a line per disk and update).
 */
import * as path from "node:path"
import { Command, Options } from "@effect/cli"
import { Console, Effect, Either, Option } from "effect"
import * as Control from "../internal/control.js"
import type { FilterDisk, ReceiverDisk, Report, StatusReply } from "../internal/controlProtocol.js"
import { CONTROL_FILE } from "./internal/control.js"
import { optionalText } from "./internal/options.js"

const units = ["B", "KiB", "MiB", "GiB", "TiB"]

/** `12.5 MiB`. */
export const formatBytes = (n: number): string => {
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`
}

const secs = (s: number) => (s < 10 ? `${s.toFixed(3)}s` : s < 600 ? `${s.toFixed(1)}s` : `${Math.round(s)}s`)

const filterBlock = (d: FilterDisk): Array<string> => {
  const lines = [
    `${d.disk} role:filter mode:${d.mode} link:${d.link} epoch:${d.epoch} receiver:${d.receiver}`,
    `  dirty:${d.dirtyBlocks} blocks (${formatBytes(d.dirtyBytes)}) in-flight:${d.inFlight} lag:${d.lagRecords} records ${secs(d.lagSeconds)}`
  ]
  if (d.drain !== null)
    lines.push(
      `  drain:${(d.drain.progress * 100).toFixed(1)}% (${d.drain.sentBlocks} blocks sent, peak ${d.drain.peakBlocks} owed) ${formatBytes(d.drain.bytesPerSecond)}/s`
    )
  if (d.checksums !== undefined && d.checksums.compared > 0)
    lines.push(
      `  checksum-resync:${d.checksums.compared} blocks compared, ${d.checksums.matched} matched, ${d.checksums.sent} sent${d.checksums.algorithm === undefined ? "" : ` (${d.checksums.algorithm})`}`
    )
  lines.push(
    d.lastRecoveryPoint === null
      ? "  last-point:none yet"
      : `  last-point:seq ${d.lastRecoveryPoint.seq} (${secs(d.lastRecoveryPoint.ageSeconds)} ago)`
  )
  if (d.stopped !== null)
    lines.push(`  STOPPED: ${d.stopped.reason}${d.stopped.detail === "" ? "" : `: ${d.stopped.detail}`}`)
  if (d.lastError !== null) lines.push(`  last-error: ${d.lastError.message} (${d.lastError.at})`)
  return lines
}

const receiverBlock = (d: ReceiverDisk): Array<string> => {
  const lines = [
    `${d.disk} role:receiver ${d.connected ? `connected peer:${d.peer}` : "disconnected"}`,
    `  durable:seq ${d.durableSeq} accepted:seq ${d.acceptedSeq}${d.inResync ? " in-resync" : ""} log:${formatBytes(d.logBytes)} in ${d.segments} segment${d.segments === 1 ? "" : "s"}`,
    d.lastRecoveryPoint === null
      ? "  last-point:none"
      : `  last-point:seq ${d.lastRecoveryPoint.seq} (${secs(d.lastRecoveryPoint.ageSeconds)} ago)`
  ]
  if (d.lastError !== null) lines.push(`  last-error: ${d.lastError.message} (${d.lastError.at})`)
  return lines
}

/** One compact block per disk, like `drbdsetup status`. */
export const render = (report: Report): string =>
  report.disks.length === 0
    ? `no disks (${report.role}, pid ${report.pid})`
    : report.disks
        .map((d) => (d.role === "filter" ? filterBlock(d) : receiverBlock(d)).join("\n"))
        .join("\n\n")

/** One line per disk, for a log (`--watch` off a terminal). */
export const renderLine = (report: Report): string =>
  report.disks
    .map((d) =>
      d.role === "filter"
        ? `${report.at} ${d.disk} filter ${d.mode} link:${d.link} epoch:${d.epoch} dirty:${d.dirtyBlocks} lag:${d.lagRecords}/${secs(d.lagSeconds)}${d.drain === null ? "" : ` drain:${(d.drain.progress * 100).toFixed(1)}%`} point:${d.lastRecoveryPoint?.seq ?? "-"}${d.stopped === null ? "" : ` STOPPED: ${d.stopped.reason}`}`
        : `${report.at} ${d.disk} receiver ${d.connected ? "connected" : "disconnected"} durable:${d.durableSeq} point:${d.lastRecoveryPoint?.seq ?? "-"} log:${formatBytes(d.logBytes)}`
    )
    .join("\n")

type Answer = Either.Either<Report, { readonly _tag: string; readonly message: string }>

const ask = (socket: string): Effect.Effect<Answer> =>
  Control.request(socket).pipe(
    Effect.map(
      (reply: StatusReply): Answer =>
        "status" in reply ? Either.right(reply.status) : Either.left(reply.error)
    ),
    Effect.catchAll((e) => Effect.succeed<Answer>(Either.left({ _tag: e._tag, message: e.message })))
  )

export const status = Command.make(
  "status",
  {
    json: Options.boolean("json").pipe(
      Options.withDescription('One JSON object on stdout ({"status": …} or {"error": …}), nothing else')
    ),
    watch: Options.boolean("watch").pipe(
      Options.withDescription("Ask every second and redraw (a line per disk and update when not a terminal)")
    ),
    control: optionalText("control", "The control socket to ask"),
    journal: optionalText("journal", `A filter's journal directory (asks its ${CONTROL_FILE})`),
    dir: optionalText("dir", `A receiver directory (asks its ${CONTROL_FILE})`)
  },
  (o) =>
    Effect.gen(function* () {
      const given = [o.control, o.journal, o.dir].filter(Option.isSome)
      if (given.length !== 1) {
        yield* Console.error("cdp-sync status: give one of --control PATH, --journal DIR or --dir DIR")
        process.exitCode = 2
        return
      }
      const socket = Option.isSome(o.control)
        ? o.control.value
        : path.join(
            Option.getOrElse(
              Option.orElse(o.journal, () => o.dir),
              () => "."
            ),
            CONTROL_FILE
          )
      const show = (answer: Answer, mode: "once" | "screen" | "lines") =>
        Either.match(answer, {
          onRight: (report) =>
            o.json
              ? Console.log(JSON.stringify({ status: report }))
              : mode === "lines"
                ? Console.log(renderLine(report))
                : Console.log(
                    mode === "screen"
                      ? `\u001b[H\u001b[2Jcdp-sync status  ${socket}  ${report.at}\n\n${render(report)}`
                      : render(report)
                  ),
          onLeft: (error) =>
            Effect.zipRight(
              o.json ? Console.log(JSON.stringify({ error: { ...error, path: socket } })) : Effect.void,
              mode === "screen" && !o.json
                ? Console.log(`\u001b[H\u001b[2Jcdp-sync status  ${socket}\n\n${error.message}`)
                : Console.error(`cdp-sync status: ${error.message}`)
            )
        })
      if (!o.watch) {
        const answer = yield* ask(socket)
        yield* show(answer, "once")
        if (Either.isLeft(answer)) process.exitCode = 1
        return
      }
      // Until interrupted (Ctrl-C); what does not answer now may answer in a second.
      const screen = !o.json && process.stdout.isTTY === true
      for (;;) {
        yield* show(yield* ask(socket), screen ? "screen" : "lines")
        yield* Effect.sleep("1 second")
      }
    })
).pipe(
  Command.withDescription(
    `Show what a running replicate, serve or receiver says about each disk: role, mode, link, epoch, dirty blocks, drain progress and rate, lag in records and seconds (the live RPO), the last recovery point and its age, the last error or why it stopped. Asks the control socket (${CONTROL_FILE} in the journal or receiver directory, or --control). Exit 1 when nothing answers, 2 on a usage error. Example: cdp-sync status --journal ./journal --watch`
  )
)

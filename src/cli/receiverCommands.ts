/**
 * The log receiver's commands: `receiver` (the TCP service), `restore` (a disk image at
 * a recovery point), `points` (the recovery points) and `scrub` (verifies every file). The root command (`cli.ts`)
 * adds them as subcommands; `main.ts` runs them on their own.
 */
import { Command, Options } from "@effect/cli"
import { Console, Duration, Effect, Either, Option } from "effect"
import * as Wire from "../protocol/Wire.js"
import { controlOption, controlPath } from "./internal/control.js"
import * as Logging from "./internal/logging.js"
import {
  at,
  described,
  diskOption as disk,
  receiverDir as dir,
  duration,
  invalid,
  json,
  port,
  positive,
  size,
  sizeValue
} from "./internal/options.js"
import { reportFailure } from "./internal/outcome.js"
import { type Progress, progress } from "./internal/progress.js"
import { formatSize } from "../internal/units.js"
import { metricsOption, withMetrics } from "./internal/metrics.js"
import type { InvalidOption } from "../receiver/internal/errors.js"
import * as LogStore from "../receiver/LogStore.js"
import * as ReceiverService from "../receiver/ReceiverService.js"
import * as Restore from "../receiver/Restore.js"
import * as Retention from "../receiver/Retention.js"
import * as Scrub from "../receiver/Scrub.js"

const fromEither = <A>(either: Either.Either<A, InvalidOption>) =>
  Either.isRight(either) ? Effect.succeed(either.right) : Effect.fail(invalid(either.left.message))

/**
 * Logs go to stderr as logfmt, one line per record (control characters in values escaped),
 * and only there: whichever logger the runtime installed (the root CLI's pretty one, or
 * runMain's) is replaced, not doubled. Stdout carries only the ready line and results.
 * The level is the CLI's (`--log-level`, Info by default).
 */
const logging = <A, E, R>(self: Effect.Effect<A, E, R>) => self.pipe(Logging.only(Logging.logfmtStderr))

export const receiver = Command.make(
  "receiver",
  {
    dir,
    ...controlOption,
    port: port("port", "TCP port, 0 … 65535; 0 picks a free one (see the ready line)"),
    host: Options.text("host").pipe(
      Options.withDefault("127.0.0.1"),
      Options.withDescription(described("Address to listen on (loopback unless told otherwise)", "127.0.0.1"))
    ),
    segmentBytes: size(
      "segment-bytes",
      LogStore.DEFAULT_SEGMENT_BYTES,
      "Seal a segment file once it holds this many bytes (e.g. 67108864, 64MiB, 64m)"
    ),
    retain: Options.text("retain").pipe(
      Options.optional,
      Options.mapEffect((text) =>
        Option.isNone(text)
          ? Effect.succeed(Option.none<Retention.Policy>())
          : Effect.map(fromEither(Retention.parsePolicy(text.value)), Option.some)
      ),
      Options.withDescription(
        "Fold older segments into the base image, keeping every recovery point of the last AGE (7d, 12h) or of the newest SIZE of log (10GiB)"
      )
    ),
    verifyRate: Options.text("verify-rate").pipe(
      Options.withPseudoName("SIZE"),
      Options.withDefault(formatSize(LogStore.DEFAULT_VERIFY_RATE)),
      Options.mapEffect((text) => (text.trim() === "0" ? Effect.succeed(0) : sizeValue("verify-rate")(text))),
      Options.withDescription(
        described(
          "Bytes per second the background verification reads of sealed segments (e.g. 8MiB); 0 turns it off",
          formatSize(LogStore.DEFAULT_VERIFY_RATE)
        )
      )
    ),
    maxFrameBytes: size(
      "max-frame-bytes",
      Wire.DEFAULT_MAX_FRAME_BYTES,
      "Largest frame accepted (header included); a larger one closes the connection"
    ),
    helloTimeout: duration(
      "hello-timeout",
      10_000,
      "How long a new connection may take to send its hello before it is closed"
    ),
    idleTimeout: duration(
      "idle-timeout",
      Duration.toMillis(ReceiverService.DEFAULT_IDLE_TIMEOUT),
      "How long a connection may stay silent after its hello (the filter sends keep-alives) before it is closed; a hello for a disk whose connection has been silent for half of it takes the disk over"
    ),
    maxConnections: positive(
      "max-connections",
      ReceiverService.DEFAULT_MAX_CONNECTIONS,
      "Connections served at once; beyond it a new connection is closed at once"
    ),
    metrics: metricsOption
  },
  (o) =>
    ReceiverService.run({
      dir: o.dir,
      host: o.host,
      port: o.port,
      segmentBytes: o.segmentBytes,
      retain: Option.getOrUndefined(o.retain),
      verifyRate: o.verifyRate,
      maxFrameBytes: o.maxFrameBytes,
      helloTimeout: Duration.millis(o.helloTimeout),
      idleTimeout: Duration.millis(o.idleTimeout),
      maxConnections: o.maxConnections,
      control: controlPath(o.control, o.dir)
    }).pipe(withMetrics(o.metrics), reportFailure("receiver"), logging)
).pipe(
  Command.withDescription(
    "Run the log receiver: one TCP connection per protected disk, records fsynced before they are acked. Prints `listening HOST:PORT` when ready. Example: cdp-sync receiver --dir /backup --port 7070 --retain 7d"
  )
)

export const restore = Command.make(
  "restore",
  {
    dir,
    disk,
    at,
    out: Options.text("out").pipe(
      Options.withDescription(
        "The image file to write (replaced atomically); never a file inside --dir, nor a device, FIFO or directory"
      )
    ),
    force: Options.boolean("force").pipe(
      Options.withDescription("Allow --out to be a block device: the image is written into it in place")
    ),
    json: json()
  },
  (o) => {
    // One bar per phase: opening the point (its block indexes), writing the image, its fsync.
    let bar: { readonly phase: Restore.Progress["phase"]; readonly progress: Progress } | undefined
    const update = (p: Restore.Progress) => {
      if (bar?.phase !== p.phase) {
        bar?.progress.end()
        bar = {
          phase: p.phase,
          progress: progress({
            label:
              p.phase === "indexing"
                ? "opening the point (block indexes)"
                : p.phase === "writing"
                  ? `restoring ${o.out}`
                  : `writing ${o.out} back to the disk (fsync)`,
            rate: formatRate,
            json: o.json ? { phase: p.phase, unit: "bytes" } : undefined
          })
        }
      }
      bar.progress.update(p.bytes, p.total)
    }
    return Restore.restore({
      dir: o.dir,
      diskId: Option.getOrUndefined(o.disk),
      at: o.at,
      out: o.out,
      force: o.force,
      onProgress: update
    }).pipe(
      Effect.ensuring(Effect.sync(() => bar?.progress.end())),
      Effect.flatMap((r) =>
        Console.log(
          o.json
            ? JSON.stringify(r)
            : `restored disk ${r.diskId} at seq ${r.seq} (received ${Restore.formatTime(r.time)}): ${r.records} records over the base, ${r.bytes} bytes to ${r.out}`
        )
      ),
      reportFailure("restore", o.json),
      logging
    )
  }
).pipe(
  Command.withDescription(
    "Write the disk image at a recovery point: the base image plus the log through that seq, with progress on stderr. A seq that is no recovery point is refused and the nearest ones named. Example: cdp-sync restore --dir /backup --disk vm1 --at latest --out vm1.img"
  )
)

const formatRate = (bytesPerSecond: number) => `${(bytesPerSecond / 2 ** 20).toFixed(1)} MiB/s`

export const points = Command.make(
  "points",
  {
    dir,
    disk,
    // `--at` parsed and refused as `restore` does; without it every point is listed.
    at: Options.optional(at),
    json: json()
  },
  (o) => {
    const spec = Option.getOrUndefined(o.at)
    return Restore.points(o.dir, Option.getOrUndefined(o.disk), { at: spec }).pipe(
      Effect.flatMap((disks) =>
        Console.log(o.json ? JSON.stringify({ disks }) : Restore.render(disks, spec !== undefined))
      ),
      reportFailure("points", o.json),
      logging
    )
  }
).pipe(
  Command.withDescription(
    "List the recovery points of the disks in a receiver directory (seq, receive time, kind); with --at, only the point it names (refused, naming the nearest points, when there is none). Example: cdp-sync points --dir /backup --disk vm1 --at -15m"
  )
)

export const scrub = Command.make("scrub", { dir, disk, json: json() }, (o) =>
  Scrub.scrub(o.dir, Option.getOrUndefined(o.disk)).pipe(
    Effect.flatMap((report) =>
      Effect.zipRight(
        Console.log(o.json ? JSON.stringify(Scrub.toJson(report)) : Scrub.render(report)),
        Effect.sync(() => {
          if (!report.clean) process.exitCode = 1
        })
      )
    ),
    reportFailure("scrub", o.json),
    logging
  )
).pipe(
  Command.withDescription(
    "Verify every file of every disk in a receiver directory: disk.json, base.img, every record of every segment (CRC, seqs following each other) and every index and block index (.bix) against its segment. Read-only, safe beside a running receiver. Prints what it checked and each damage (file, byte offset, reason); exit 0 when clean, 1 on damage. Example: cdp-sync scrub --dir /backup --json"
  )
)

/**
 * The `replicate` command (and the filter options and start `serve` shares): the replicator as people run it.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Command, Options } from "@effect/cli"
import { Console, Data, Duration, Effect, Fiber, Layer, Option, Ref } from "effect"
import * as ActivityLog from "../adapters/ActivityLog.js"
import * as EventJournal from "../adapters/EventJournal.js"
import * as LogReceiver from "../adapters/LogReceiver.js"
import * as VirtualDisk from "../adapters/VirtualDisk.js"
import * as Config from "../domain/Config.js"
import * as Trace from "../domain/Trace.js"
import { metricsOption, serveMetrics } from "./internal/metrics.js"
import { controlOption, filterControl } from "./internal/control.js"
import * as Replicator from "../replicator/Replicator.js"
import * as Workload from "../simulator/Workload.js"
import { formatDuration, mib } from "../internal/units.js"
import {
  duration,
  hostPort,
  integer,
  invalid,
  json,
  name,
  optionalDuration,
  optionalPositive,
  optionalSize,
  positive,
  seed,
  size
} from "./internal/options.js"
import { reportFailure, UsageError } from "./internal/outcome.js"

export class CommandFailed extends Data.TaggedError("CommandFailed")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

// ---------------------------------------------------------------------------
// replicate

const exists = (file: string) =>
  Effect.promise(() =>
    fs.stat(file).then(
      (st) => st,
      () => undefined
    )
  )

/**
 * The disk's size: an existing image's own (`--disk-size`, when given, must say the
 * same), or `--disk-size` for a new one. A new image under a journal that already
 * describes a disk is refused: a zeroed disk is not the disk the journal knows.
 */
const diskSizeOf = (disk: string, wanted: Option.Option<number>, journal: string) =>
  Effect.gen(function* () {
    const size = Option.getOrUndefined(wanted)
    const image = yield* exists(disk)
    if (image !== undefined) {
      if (size !== undefined && size !== image.size)
        return yield* new CommandFailed({
          detail: `${disk} has ${image.size} bytes (${mib(image.size)}), but --disk-size says ${size} (${mib(size)}); leave --disk-size out to use the image as it is`
        })
      return { bytes: image.size, existed: true }
    }
    if (size === undefined)
      return yield* new CommandFailed({ detail: `${disk} does not exist; give --disk-size to create it` })
    const log = yield* exists(path.join(journal, EventJournal.LOG_FILE))
    const run = yield* exists(path.join(journal, EventJournal.RUN_FILE))
    if ((log !== undefined && log.size > 0) || run !== undefined)
      return yield* new CommandFailed({
        detail: `${disk} does not exist, but the journal ${journal} describes an existing disk: restore the image (cdp-sync restore), or start a new journal`
      })
    return { bytes: size, existed: false }
  })

/**
 * What the journal's events fold from: what an existing journal recorded; for a new one,
 * every block owed when the image already holds data (a full sync: the receiver has none
 * of it), nothing when the image was just created (zeros, as the receiver's base).
 */
const initialOf = (journal: string, imageExisted: boolean) =>
  Effect.gen(function* () {
    const recorded = yield* EventJournal.recordedHeader(journal)
    if (recorded !== undefined) return recorded.initial
    const log = yield* exists(path.join(journal, EventJournal.LOG_FILE))
    // A journal from before run files began in sync.
    if (log !== undefined) return "in-sync" as const
    return imageExisted ? ("full-sync" as const) : ("in-sync" as const)
  })

/**
 * The filter's own options (its disk, receiver, journal and tuning), shared by every
 * command that runs the replicator (`replicate`, `serve`).
 */
export const filterOptions = {
  disk: Options.text("disk").pipe(Options.withDescription("The disk image (a raw file)")),
  receiver: hostPort("receiver", "The log receiver, HOST:PORT"),
  journal: Options.text("journal").pipe(Options.withDescription("The filter's journal directory")),
  diskId: name("disk-id", "disk", "The disk's identity at the receiver", 1024),
  blockSize: size("block-size", 64 * 2 ** 10, "Tracking-block size"),
  diskSize: optionalSize(
    "disk-size",
    "Create the image at this size if it does not exist (e.g. 256MiB); an existing image must have this size"
  ),
  window: positive("window", 32, "Block records in flight during a drain"),
  congestionLimit: size(
    "congestion-limit",
    64 * 2 ** 20,
    "Unacked live bytes before pull-ahead into resync (a time in disguise: the longest ack stall the stream rides out at the write rate)"
  ),
  ackTimeout: duration(
    "ack-timeout",
    2000,
    "How long a record may wait for its ack before the link is cut and reconnected (--ack-timeout-ms, the old spelling, is the same option)",
    ["ack-timeout-ms"]
  ),
  rate: optionalSize("drain-rate", "Drain rate limit per second (e.g. 100MiB)"),
  compareFrom: optionalPositive(
    "compare-from",
    "Checksum-based resync: while at least N blocks are owed, compare each with the receiver's copy (a digest of each side, see --digest) and send only those that differ (default: never compare, send every owed block)"
  ),
  digest: Options.text("digest").pipe(
    Options.withPseudoName("blake3 | sha256"),
    Options.optional,
    Options.mapEffect((text) =>
      Option.isNone(text) || text.value === "blake3" || text.value === "sha256"
        ? Effect.succeed(text as Option.Option<"blake3" | "sha256">)
        : Effect.fail(invalid(`--digest ${text.value}: expected blake3 or sha256`))
    ),
    Options.withDescription(
      "The block digest of checksum resync and verify: blake3 (the default where its native module loads; about 3x less CPU at 64 KiB blocks) or sha256 (FIPS; what a receiver from before blake3 answers, which the filter falls back to by itself)"
    )
  ),
  trace: Options.text("trace").pipe(
    Options.optional,
    Options.withDescription("Append the filter's events as a trace")
  ),
  activityExtents: positive(
    "activity-extents",
    1024,
    "Extents the activity log keeps active: after a crash only these are resynced, not the whole disk"
  ),
  activityExtentSize: size(
    "activity-extent-size",
    4 * 2 ** 20,
    "The activity log's extent (a multiple of 512 bytes)"
  )
}

/** The values of `filterOptions`, as a command's handler receives them. */
export interface FilterSettings {
  readonly disk: string
  readonly receiver: { readonly host: string; readonly port: number }
  readonly journal: string
  readonly diskId: string
  readonly blockSize: number
  readonly diskSize: Option.Option<number>
  readonly window: number
  readonly congestionLimit: number
  readonly ackTimeout: number
  readonly rate: Option.Option<number>
  readonly compareFrom: Option.Option<number>
  readonly digest: Option.Option<"blake3" | "sha256">
  readonly trace: Option.Option<string>
  readonly activityExtents: number
  readonly activityExtentSize: number
}

/**
 * The replicator as `o` says, with its disk image, file journal, activity log and TCP
 * link to the receiver: checks the options, sizes (or creates) the image, starts the
 * trace file. Fails with `CommandFailed` (one line for the operator).
 */
export const filterLayer = (o: FilterSettings) =>
  Effect.gen(function* () {
    const { host, port } = o.receiver
    const image = yield* diskSizeOf(o.disk, o.diskSize, o.journal)
    const diskBytes = image.bytes
    const config = yield* Config.make({
      blockSize: o.blockSize,
      blockCount: Math.ceil(diskBytes / o.blockSize),
      window: o.window,
      congestionLimit: o.congestionLimit,
      initial: yield* initialOf(o.journal, image.existed)
    })
    if (config.blockCount * config.blockSize !== diskBytes)
      return yield* new CommandFailed({
        detail: `the disk size ${diskBytes} is not a multiple of the block size`
      })
    if (o.activityExtentSize <= 0 || o.activityExtentSize % 512 !== 0)
      return yield* new CommandFailed({
        detail: `--activity-extent-size must be a positive multiple of 512 bytes, not ${o.activityExtentSize}`
      })
    if (o.activityExtents < 1)
      return yield* new CommandFailed({ detail: `--activity-extents must be at least 1` })
    const traceFile = Option.getOrUndefined(o.trace)
    if (
      traceFile !== undefined &&
      !(yield* Effect.promise(() =>
        fs.stat(traceFile).then(
          () => true,
          () => false
        )
      ))
    )
      yield* Effect.promise(() =>
        fs.writeFile(
          traceFile,
          `${Trace.encodeHeader({ blockSize: config.blockSize, blockCount: config.blockCount, initial: config.initial })}\n`
        )
      )
    const layer = Replicator.layer({
      diskId: o.diskId,
      config,
      ackTimeout: Duration.millis(o.ackTimeout),
      activityExtents: o.activityExtents,
      drainBytesPerSecond: Option.getOrUndefined(o.rate),
      compareFrom: Option.getOrUndefined(o.compareFrom),
      digest: Option.getOrUndefined(o.digest),
      ...(traceFile === undefined
        ? {}
        : {
            onEvents: (events) =>
              Effect.promise(() => fs.appendFile(traceFile, `${events.map(Trace.encodeEvent).join("\n")}\n`))
          })
    }).pipe(
      Layer.provideMerge(
        Layer.mergeAll(
          VirtualDisk.layerFile({ path: o.disk, geometry: config, create: true }),
          EventJournal.layerFile({ directory: o.journal }),
          ActivityLog.layerFile({ directory: o.journal, extentBytes: o.activityExtentSize }),
          LogReceiver.layerTcp({ host, port })
        )
      )
    )
    return { config, layer }
  })

/**
 * In the caller's scope: the metrics endpoint, the replicator with its disk, and the
 * control endpoint, as every command that runs the filter starts them.
 */
export const startFilter = <E>(
  o: {
    readonly metrics: Parameters<typeof serveMetrics>[0]
    readonly control: Option.Option<string>
    readonly journal: string
    readonly diskId: string
    readonly receiver: { readonly host: string; readonly port: number }
  },
  layer: Layer.Layer<Replicator.Replicator | VirtualDisk.VirtualDisk, E>
) =>
  Effect.gen(function* () {
    yield* serveMetrics(o.metrics)
    const context = yield* Layer.build(layer)
    const replicator = yield* Effect.provide(Replicator.Replicator, context)
    const disk = yield* Effect.provide(VirtualDisk.VirtualDisk, context)
    yield* filterControl(o, replicator)
    return { context, replicator, disk }
  })

export const replicate = Command.make(
  "replicate",
  {
    ...filterOptions,
    ...controlOption,
    seconds: integer("seconds", 0, "Run the built-in guest workload this long (0: none)"),
    seed: seed("Seed of the workload"),
    quiesce: Options.boolean("quiesce").pipe(
      Options.withDescription("Then wait until the replica is whole (sync, nothing in flight) and exit")
    ),
    timeout: optionalDuration(
      "timeout",
      "With --quiesce: fail (exit 1) when the replica is not whole within this long (default: wait for ever)"
    ),
    metrics: metricsOption,
    json: json()
  },
  (o) =>
    Effect.gen(function* () {
      if (Option.isSome(o.timeout) && !o.quiesce)
        return yield* new UsageError({ detail: "--timeout bounds --quiesce: give both, or neither" })
      const { config, layer } = yield* filterLayer(o)
      yield* Effect.scoped(
        Effect.gen(function* () {
          const { replicator, disk } = yield* startFilter(o, layer)
          const totals = yield* Ref.make<Workload.Totals>({ writes: 0, bytes: 0 })
          const report = yield* Effect.fork(
            Effect.gen(function* () {
              for (;;) {
                yield* Effect.sleep("500 millis")
                const s = yield* replicator.status
                const t = yield* Ref.get(totals)
                process.stderr.write(
                  `status mode=${s.mode} link=${s.link} epoch=${s.epoch} dirty=${s.dirtyBlocks} watermark=${s.watermark} lag=${s.lagRecords} writes=${t.writes}\n`
                )
              }
            })
          )
          if (o.seconds > 0) {
            const burst = yield* Ref.make(false)
            const workload = yield* Effect.fork(
              Workload.run(replicator, config, { seed: o.seed, writers: 4, pause: "1 millis" }, totals, burst)
            )
            // A replicator that stops (or a disk that fails a write) ends the run there.
            yield* Effect.sleep(Duration.seconds(o.seconds)).pipe(
              Effect.raceFirst(replicator.stopped),
              Effect.raceFirst(Fiber.join(workload))
            )
            yield* Fiber.interrupt(workload)
          }
          if (o.quiesce)
            yield* Option.match(o.timeout, {
              onNone: () => replicator.quiesce,
              onSome: (millis) =>
                replicator.quiesce.pipe(
                  Effect.timeoutFail({
                    duration: Duration.millis(millis),
                    onTimeout: () => "timeout" as const
                  }),
                  Effect.catchIf(
                    (e) => e === "timeout",
                    () =>
                      Effect.flatMap(replicator.status, (s) =>
                        Effect.fail(
                          new CommandFailed({
                            detail: `--quiesce: the replica was not whole after ${formatDuration(millis)} (mode ${s.mode}, link ${s.link}, ${s.dirtyBlocks} dirty blocks, ${s.inFlight} records in flight)${s.link === "down" ? `: is the receiver at ${o.receiver.host}:${o.receiver.port} running?` : ""}`
                          })
                        )
                      )
                  )
                )
            })
          yield* Fiber.interrupt(report)
          // Fails if the replicator stopped (the journal then keeps the run open: the next start is unclean).
          yield* replicator.flush
          yield* disk.flush
          const s = yield* replicator.status
          const t = yield* Ref.get(totals)
          yield* Console.log(
            o.json
              ? JSON.stringify({ ...s, writes: t.writes, bytes: t.bytes })
              : `replicated disk ${JSON.stringify(o.diskId)} to ${o.receiver.host}:${o.receiver.port}: mode ${s.mode}, link ${s.link}, epoch ${s.epoch}, ${s.dirtyBlocks} dirty blocks, ${s.inFlight} records in flight, next seq ${s.nextSeq}${s.quiescent ? " (the replica is whole)" : ""}; guest writes ${t.writes} (${mib(t.bytes)})${s.checksums.compared > 0 ? `; checksum resync (${s.checksums.algorithm}): ${s.checksums.compared} blocks compared, ${s.checksums.matched} matched, ${s.checksums.sent} sent` : ""}`
          )
        })
      )
    }).pipe(reportFailure("replicate", o.json))
).pipe(
  Command.withDescription(
    "Run the filter for a disk image against a log receiver, with an optional built-in guest workload (the simulator runs the same replicator in-process through its embedding API). The journal records whether the last run closed cleanly: a start after a crash resyncs what the activity log holds. Errors are one line on stderr with exit code 1 (--log-level debug for the whole cause). Example: cdp-sync replicate --disk disk.img --disk-size 256MiB --receiver 127.0.0.1:7070 --journal ./journal --seconds 30 --quiesce"
  )
)

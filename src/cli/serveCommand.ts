/**
 * `cdp-sync serve`: the filter as a disk a real guest can use (docs/nbd.md). Serves the
 * disk image over NBD and replicates every write through the replicator to the log
 * receiver; the replicator's options are `replicate`'s (`filterOptions`).
 */
import { Command, Options } from "@effect/cli"
import { Console, Effect, Option } from "effect"
import * as Nbd from "../nbd/Nbd.js"
import { metricsOption } from "./internal/metrics.js"
import { controlOption } from "./internal/control.js"
import { reportFailure } from "./internal/outcome.js"
import { nbdListenOf, nbdListenOptions, positive } from "./internal/options.js"
import { filterLayer, filterOptions, startFilter } from "./replicatorCommands.js"

export const serve = Command.make(
  "serve",
  {
    ...filterOptions,
    ...controlOption,
    ...nbdListenOptions("the --disk-id"),
    readOnly: Options.boolean("read-only").pipe(
      Options.withDescription("Refuse every write (EPERM); the export says it is read-only")
    ),
    maxConnections: positive("max-connections", 16, "Clients connected at once; more are refused"),
    metrics: metricsOption
  },
  (o) =>
    Effect.gen(function* () {
      const listen = yield* nbdListenOf(o)
      const { layer } = yield* filterLayer(o)
      yield* Effect.scoped(
        Effect.gen(function* () {
          const { context, replicator, disk } = yield* startFilter(o, layer)
          // Runs after the server closed and before the replicator closes (and journals
          // every answered write): a clean stop leaves the image durable too.
          yield* Effect.addFinalizer(() =>
            disk.flush.pipe(
              Effect.catchAll((e) => Effect.logWarning(`the disk could not be flushed at exit: ${e.message}`))
            )
          )
          const server = yield* Nbd.serve({
            listen,
            exportName: Option.getOrElse(o.exportName, () => o.diskId),
            readOnly: o.readOnly,
            maxConnections: o.maxConnections,
            description: `cdp-sync: ${o.disk}, replicated to ${o.receiver.host}:${o.receiver.port} as ${JSON.stringify(o.diskId)}`
          }).pipe(Effect.provide(context))
          yield* Console.log(`listening ${server.uri}`)
          // Until SIGINT/SIGTERM (the scope closes: exit 0) or the replicator stops (exit 1).
          return yield* replicator.stopped
        })
      )
    }).pipe(reportFailure("serve"))
).pipe(
  Command.withDescription(
    "Serve a disk image over NBD (fixed newstyle; READ, WRITE with FUA, FLUSH, TRIM, WRITE_ZEROES) and replicate every write to a log receiver. Prints `listening nbd://HOST:PORT/NAME` (or `nbd+unix:///NAME?socket=PATH`) when ready; SIGINT/SIGTERM answer what was taken, journal every answered write and exit 0. Example: cdp-sync serve --disk vm.img --disk-size 8GiB --receiver backup:7070 --journal ./journal; then qemu-system-x86_64 -drive file=nbd://127.0.0.1:10809/disk,format=raw"
  )
)

/**
 * `cdp-sync mount`: a recovery point of a receiver directory served read-only over NBD
 * (docs/receiver.md "Mounting a recovery point"), by the same server as `serve`, read
 * through the block index without materialising the image. Safe beside a running
 * receiver, and across its retention folds.
 */
import { Command, Options } from "@effect/cli"
import { Console, Effect, Option } from "effect"
import * as Nbd from "../nbd/Nbd.js"
import { formatTime } from "../receiver/Restore.js"
import * as Logging from "./internal/logging.js"
import {
  at,
  diskOption,
  json,
  nbdListenOf,
  nbdListenOptions,
  positive,
  receiverDir
} from "./internal/options.js"
import { reportFailure } from "./internal/outcome.js"

export const mount = Command.make(
  "mount",
  {
    dir: receiverDir,
    disk: diskOption,
    at,
    ...nbdListenOptions("the disk id"),
    overlay: Options.file("overlay").pipe(
      Options.optional,
      Options.withDescription(
        "Make the export writable: writes go to this sparse file (created when missing, reopened with its earlier writes when made for this disk and point, refused otherwise; never inside --dir); the receiver's files are never written"
      )
    ),
    maxConnections: positive("max-connections", 16, "Clients connected at once; more are refused"),
    json: json(
      'Print one JSON object when ready ({"uri", "diskId", "seq", "time"}) instead of the listening line; a failure as {"error": {"_tag", "message"}}'
    )
  },
  (o) =>
    Effect.gen(function* () {
      const listen = yield* nbdListenOf(o)
      yield* Effect.scoped(
        Effect.gen(function* () {
          const { mounted, server } = yield* Nbd.serveMount({
            dir: o.dir,
            diskId: Option.getOrUndefined(o.disk),
            at: o.at,
            listen,
            exportName: Option.getOrUndefined(o.exportName),
            overlay: Option.getOrUndefined(o.overlay),
            maxConnections: o.maxConnections
          })
          const { seq, time, kind } = mounted.point
          yield* Effect.logInfo(
            `mounted disk ${mounted.diskId} at seq ${seq} (received ${formatTime(time)}, ${kind}), ${
              mounted.overlay === undefined ? "read-only" : `writes to the overlay ${mounted.overlay}`
            }`
          ).pipe(Effect.annotateLogs({ diskId: mounted.diskId, seq, uri: server.uri }))
          yield* Console.log(
            o.json
              ? JSON.stringify({
                  uri: server.uri,
                  diskId: mounted.diskId,
                  seq,
                  time,
                  kind,
                  bytes: mounted.bytes,
                  overlay: mounted.overlay ?? null
                })
              : `listening ${server.uri}`
          )
          // Until SIGINT/SIGTERM: the scope closes (the server answers what it took, the files close), exit 0.
          return yield* Effect.never
        })
      )
    }).pipe(reportFailure("mount", o.json), Logging.only(Logging.logfmtStderr))
).pipe(
  Command.withDescription(
    "Serve a recovery point read-only over NBD (the same server as `serve`), read through the block index without writing an image (writable with --overlay FILE: writes go to that file, never to the log); safe while the receiver runs and folds. Prints `listening nbd://HOST:PORT/NAME` (or `nbd+unix:///NAME?socket=PATH`) when ready; SIGINT/SIGTERM close it, exit 0. Example: cdp-sync mount --dir /backup --disk vm1 --at -15m --listen 127.0.0.1:10810; then qemu-img convert -O qcow2 nbd://127.0.0.1:10810/vm1 vm1.qcow2"
  )
)

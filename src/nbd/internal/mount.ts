/**
 * A recovery point served over NBD (`cdp-sync mount`, docs/receiver.md "Mounting a recovery
 * point"): the receiver opens the point as a block device (`Mount.open`, which knows nothing
 * of NBD), and this front end serves it with the same server as `serve`, mapping the
 * receiver's failures to NBD errors.
 */
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import { LogIoError } from "../../receiver/internal/errors.js"
import * as Mount from "../../receiver/Mount.js"
import * as P from "./protocol.js"
import {
  type InvalidServeOptions,
  type Listen,
  type ListenFailed,
  type Server,
  serveDevice
} from "./server.js"

export interface ServeMountOptions extends Mount.MountOptions {
  /** Where to listen: TCP `host` and `port` (0: any free port), or a unix socket `path`. */
  readonly listen: Listen
  /** The export's name (default: the disk id); clients asking for the default export get it too. */
  readonly exportName?: string | undefined
  /** Connections at once (default 16). */
  readonly maxConnections?: number | undefined
}

/** A full file system under the overlay is ENOSPC; damage and other failures EIO (the server checked the range). */
const mountErrno = (error: unknown): number =>
  error instanceof LogIoError &&
  typeof error.cause === "object" &&
  error.cause !== null &&
  (error.cause as { code?: unknown }).code === "ENOSPC"
    ? P.ENOSPC
    : P.EIO

/** Mounts the point `at` names (`Mount.open`) and serves it over NBD until the scope closes. */
export const serveMount = (
  options: ServeMountOptions
): Effect.Effect<
  { readonly mounted: Mount.Mounted; readonly server: Server },
  Effect.Effect.Error<ReturnType<typeof Mount.open>> | ListenFailed | InvalidServeOptions,
  Scope.Scope
> =>
  Effect.gen(function* () {
    const mounted = yield* Mount.open(options)
    const server = yield* serveDevice(
      { ...mounted.device, errnoOf: mountErrno },
      {
        listen: options.listen,
        exportName: options.exportName ?? mounted.diskId,
        maxConnections: options.maxConnections,
        description: `cdp-sync: disk ${JSON.stringify(mounted.diskId)} at seq ${mounted.point.seq}, ${
          mounted.overlay === undefined ? "read-only" : `writes to ${mounted.overlay}`
        }`
      }
    )
    return { mounted, server }
  })

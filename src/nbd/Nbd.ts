/**
 * The NBD front end of the filter (design §7, docs/nbd.md): serves the protected disk
 * over the Network Block Device protocol so a guest — QEMU, the kernel's `nbd-client`,
 * qemu-img, libnbd's tools, fio — writes through the `Replicator`.
 *
 * `serve` is an Effect program over `Replicator` and `VirtualDisk`: reads come from the
 * disk; writes go through `Replicator.write` and are answered once it returns (the disk
 * has them and they are folded as completed writes); FLUSH and FUA are answered once
 * every earlier answered write is durable on the disk (`VirtualDisk.flush`) and its event
 * journaled (`Replicator.flush`); TRIM and WRITE_ZEROES write zeros through the
 * replicator, so they replicate like writes. Guest I/O never waits for the network.
 *
 * The protocol: fixed newstyle handshake with `NBD_OPT_GO`, `NBD_OPT_INFO` (export and
 * block sizes), `NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST` and `NBD_OPT_ABORT` (others are
 * answered `NBD_REP_ERR_UNSUP`); simple replies; READ, WRITE (+FUA), FLUSH, TRIM,
 * WRITE_ZEROES (+NO_HOLE), DISC. Block sizes: minimum 512 (the disk is sector aligned:
 * unaligned requests are answered EINVAL, never read-modify-written), preferred 4096,
 * maximum `maxPayload`. `connect` is a small client for the same protocol.
 *
 * `serveDevice` serves any other block device through the same server (a `Device`: a size,
 * `read`, `writeAll`, `flush` and how its failures map to NBD errors): `cdp-sync mount`
 * serves a recovery point read-only with it.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"
import type * as Scope from "effect/Scope"
import type { VirtualDisk } from "../adapters/VirtualDisk.js"
import type { Replicator } from "../replicator/Replicator.js"
import * as ClientImpl from "./internal/client.js"
import type * as DeviceImpl from "./internal/device.js"
import * as MountImpl from "./internal/mount.js"
import * as ServerImpl from "./internal/server.js"
import type { Mounted, open as openMount } from "../receiver/Mount.js"

/** Why a mount could not be opened (`Mount.open`'s errors). */
type MountError = Effect.Effect.Error<ReturnType<typeof openMount>>

export { NbdProtocolError, type ProtocolErrorReason } from "./internal/codec.js"
export { EndedMidMessage, SocketFailed } from "./internal/socketIo.js"
export {
  NbdCommandFailed,
  NbdConnectionClosed,
  NbdOptionRefused,
  type ClientError,
  type ConnectOptions,
  type Endpoint,
  type WriteFlags
} from "./internal/client.js"
export {
  DEFAULT_MAX_PAYLOAD,
  InvalidServeOptions,
  ListenFailed,
  MIN_BLOCK,
  PREFERRED_BLOCK,
  type Address,
  type Listen,
  type ServeOptions
} from "./internal/server.js"
export type { BlockSizes } from "./internal/codec.js"
export type { Device, DeviceWrite } from "./internal/device.js"

/** A running NBD server: where it listens and what it exports. */
export type Server = ServerImpl.Server

/** A connected NBD client, in transmission. */
export type Client = ClientImpl.Client

/** The NBD error values (`NbdCommandFailed.error`). */
export const errors = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108
} as const

/** The transmission flags the server sets (`Server.transmissionFlags`, `Client.transmissionFlags`). */
export const transmissionFlags = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  CAN_MULTI_CONN: 1 << 8
} as const

/**
 * Serves the disk in the context through the replicator in the context until the scope
 * closes. Closing stops accepting, lets each connection answer the requests it took, and
 * closes the sockets; close the replicator after (it journals every answered write).
 */
export const serve: (
  options: ServerImpl.ServeOptions
) => Effect.Effect<
  ServerImpl.Server,
  ServerImpl.ListenFailed | ServerImpl.InvalidServeOptions,
  Replicator | VirtualDisk | Scope.Scope
> = ServerImpl.serve

/**
 * Serves `device` until the scope closes, the way `serve` serves the protected disk: the
 * same handshake, checks, batching of pipelined WRITEs into one `writeAll`, shared
 * durability points (FLUSH and FUA wait for `device.flush`) and bounds. A read-only device
 * (or `readOnly`) answers every change EPERM. A size that is not a multiple of 512 is
 * `InvalidServeOptions`.
 */
export const serveDevice: <E>(
  device: DeviceImpl.Device<E>,
  options: ServerImpl.ServeOptions
) => Effect.Effect<ServerImpl.Server, ServerImpl.ListenFailed | ServerImpl.InvalidServeOptions, Scope.Scope> =
  ServerImpl.serveDevice

/**
 * Mounts a recovery point of a receiver directory (`Mount.open`: `dir`, `diskId`, `at`, and
 * `overlay` to make it writable) and serves it until the scope closes (`cdp-sync mount`).
 * Damage met by a read answers that request EIO (a full file system under the overlay,
 * ENOSPC); the mount goes on.
 */
export const serveMount: (
  options: MountImpl.ServeMountOptions
) => Effect.Effect<
  { readonly mounted: Mounted; readonly server: ServerImpl.Server },
  MountError | ServerImpl.ListenFailed | ServerImpl.InvalidServeOptions,
  Scope.Scope
> = MountImpl.serveMount

export type { ServeMountOptions } from "./internal/mount.js"

/** The running server as a service, for programs built from layers. */
export class NbdServer extends Context.Tag("cdp-sync/NbdServer")<NbdServer, ServerImpl.Server>() {}

export const layer = (
  options: ServerImpl.ServeOptions
): Layer.Layer<
  NbdServer,
  ServerImpl.ListenFailed | ServerImpl.InvalidServeOptions,
  Replicator | VirtualDisk
> => Layer.scoped(NbdServer, ServerImpl.serve(options))

/** Connects to an NBD server and enters transmission with `NBD_OPT_GO`; disconnects with the scope. */
export const connect: (
  options: ClientImpl.ConnectOptions
) => Effect.Effect<ClientImpl.Client, ClientImpl.ClientError, Scope.Scope> = ClientImpl.connect

/** `nbd://HOST:PORT/NAME` or `nbd+unix:///NAME?socket=PATH`. */
export const uriOf: (address: ServerImpl.Address, exportName: string) => string = ServerImpl.uriOf

/** Runs `use` with a client connected for its duration. */
export const withClient = <A, E, R>(
  options: ClientImpl.ConnectOptions,
  use: (client: ClientImpl.Client) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | ClientImpl.ClientError, R> => Effect.scoped(Effect.flatMap(connect(options), use))

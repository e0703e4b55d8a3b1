/**
 * Raw NBD conversations for the malformed-input tests: a socket at any stage of the
 * protocol, bytes no well-behaved client sends, and waits for what the server does.
 */
import { Duration, Effect, type Scope } from "effect"
import * as Codec from "../../src/nbd/internal/codec.js"
import { Connection, dial, type Endpoint, go, OptionChannel } from "../../src/nbd/internal/client.js"
import * as P from "../../src/nbd/internal/protocol.js"
import type { SocketReader } from "../../src/nbd/internal/socketIo.js"

export { P, Codec }

/** Connected, greeting read, client flags sent: options may follow. */
export const options = (
  endpoint: Endpoint,
  clientFlags?: number
): Effect.Effect<OptionChannel, unknown, Scope.Scope> =>
  Effect.flatMap(dial(endpoint), ({ socket, reader }) => OptionChannel.open(socket, reader, clientFlags))

/** In transmission after `NBD_OPT_GO`, with the raw request interface. */
export const transmitting = (
  endpoint: Endpoint,
  name = "test"
): Effect.Effect<Connection, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const channel = yield* options(endpoint)
    yield* go(channel, name)
    return yield* Connection.start(channel.socket, channel.reader)
  })

/** Reads (and drops) what the server still sends until it closes the connection; the bytes read. */
export const untilClosed = (reader: SocketReader): Effect.Effect<number> =>
  Effect.gen(function* () {
    let bytes = 0
    for (;;) {
      const got = yield* Effect.either(reader.take(1, "anything"))
      if (got._tag === "Left" || got.right === undefined) return bytes
      bytes++
    }
  })

/** Waits (polling) until `condition` holds; fails the test after `within`. */
export const eventually = (
  condition: () => boolean,
  what: string,
  within: Duration.DurationInput = "20 seconds"
): Effect.Effect<void> =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(within))
    while (!condition()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* Effect.sleep("5 millis")
    }
  })

/** The error value of a raw request's reply (0: success). */
export const errnoOf = (request: Effect.Effect<Uint8Array, unknown>): Effect.Effect<number | "ok", unknown> =>
  request.pipe(
    Effect.as("ok" as const),
    Effect.catchIf(
      (e): e is { readonly _tag: "NbdCommandFailed"; readonly error: number } =>
        typeof e === "object" && e !== null && (e as { _tag?: unknown })._tag === "NbdCommandFailed",
      (e) => Effect.succeed(e.error)
    )
  )

/**
 * One filter's world for the in-process checksum tests (replicator-checksums, replicator-digest):
 * a memory disk, journal store and receiver kept across the filter's runs, and a replicator
 * started on it in the caller's scope (`wrap` may stand between it and the receiver).
 */
import { Effect, Layer, Schedule } from "effect"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import type * as Config from "../../src/domain/Config.js"
import * as Mutants from "../../src/replicator/internal/mutants.js"
import * as Replicator from "../../src/replicator/Replicator.js"

/** The disk, journal and receiver of one filter, kept across its runs. */
export const makeWorld = (
  config: Config.Config,
  disk: VirtualDisk.VirtualDisk.Service = VirtualDisk.makeMemory(config)
) =>
  Effect.gen(function* () {
    const receiver = yield* Layer.build(LogReceiver.layerMemory())
    return {
      disk,
      store: EventJournal.makeMemoryStore(),
      receiver,
      control: yield* Effect.provide(LogReceiver.MemoryReceiver, receiver)
    }
  })
export type World = Effect.Effect.Success<ReturnType<typeof makeWorld>>

/** A replicator (disk id `d`) on `world` in the caller's scope; `wrap` may stand between it and the receiver. */
export const startReplicator = (
  world: World,
  config: Config.Config,
  options: Partial<Replicator.Options> = {},
  wrap?: (inner: LogReceiver.LogReceiver.Service) => LogReceiver.LogReceiver.Service,
  mutants: Partial<Mutants.Mutants> = {}
) =>
  Effect.gen(function* () {
    const inner = yield* Effect.provide(LogReceiver.LogReceiver, world.receiver)
    const context = yield* Layer.build(
      Replicator.layer({
        diskId: "d",
        config,
        ackTimeout: "2 seconds",
        reconnect: Schedule.spaced("5 millis"),
        ...options
      }).pipe(
        Layer.provide(Mutants.layer(mutants)),
        Layer.provide(
          Layer.mergeAll(
            Layer.succeed(VirtualDisk.VirtualDisk, world.disk),
            EventJournal.layerMemory({ store: world.store }),
            Layer.succeed(LogReceiver.LogReceiver, wrap === undefined ? inner : wrap(inner))
          )
        )
      )
    )
    return yield* Effect.provide(Replicator.Replicator, context)
  })

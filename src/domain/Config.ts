/**
 * The filter's static configuration (design §3).
 */
import { Either, Schema } from "effect"
import { Count } from "./Event.js"
import * as Geometry from "./Geometry.js"

export const Initial = Schema.Literal("in-sync", "full-sync")
export type Initial = typeof Initial.Type

export const Config = Schema.Struct({
  /** Tracking-block size in bytes: a power of two, 4 KiB … 1 MiB. */
  blockSize: Count,
  /** Number of tracking blocks, 1 … 2^30. */
  blockCount: Count,
  /** Max block records in flight during a drain. */
  window: Count.pipe(Schema.positive()),
  /** Max unacked live bytes before pull-ahead into resync. */
  congestionLimit: Count.pipe(Schema.positive()),
  /** `in-sync`: the receiver holds the base snapshot; `full-sync`: every block must be sent first. */
  initial: Initial
}).pipe(
  Schema.filter((c) =>
    Either.match(Geometry.make(c.blockSize, c.blockCount), { onLeft: (e) => e.reason, onRight: () => true })
  )
)
export type Config = typeof Config.Type

export const defaults = {
  blockSize: 65536,
  window: 64,
  congestionLimit: 64 * 1024 * 1024,
  initial: "in-sync"
} as const satisfies Partial<Config>

/** Builds a config, filling in the defaults; a typed rejection when the geometry is invalid. */
export const make = (
  options: Pick<Config, "blockCount"> & Partial<Config>
): Either.Either<Config, Geometry.InvalidGeometry> => {
  const config: Config = { ...defaults, ...options }
  return Either.map(Geometry.make(config.blockSize, config.blockCount), () => config)
}

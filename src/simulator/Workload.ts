/**
 * A guest workload that writes through the `Replicator` embedding API: random,
 * sequential and hot-spot writes from a few concurrent writers, seeded so a run
 * can be repeated. Bursts raise the write rate now and then.
 */
import { Duration, Effect, Ref } from "effect"
import type { Config } from "../domain/Config.js"
import { prng } from "../conformance/Simulation.js"
import type { Replicator } from "../replicator/Replicator.js"

export interface Options {
  readonly seed: number
  /** Concurrent writers (each keeps one write outstanding, like a guest's queue depth). */
  readonly writers: number
  /** Pause between a writer's writes; 0 writes flat out. */
  readonly pause: Duration.DurationInput
}

export interface Totals {
  readonly writes: number
  readonly bytes: number
}

const SECTOR = 512

/** Runs until interrupted; `totals` counts what was written. */
export const run = (
  replicator: Replicator.Service,
  config: Config,
  options: Options,
  totals: Ref.Ref<Totals>,
  burst: Ref.Ref<boolean>
) =>
  Effect.forEach(
    Array.from({ length: options.writers }, (_, i) => i),
    (writer) =>
      Effect.gen(function* () {
        const random = prng(options.seed * 7919 + writer)
        const int = (n: number) => Math.floor(random() * n)
        const diskBytes = config.blockSize * config.blockCount
        const hot = int(Math.max(1, config.blockCount - 16)) * config.blockSize
        let cursor = int(diskBytes / SECTOR) * SECTOR
        const pause = Duration.toMillis(Duration.decode(options.pause))
        for (;;) {
          const sectors = 1 + int(random() < 0.2 ? 256 : 16)
          const length = Math.min(sectors * SECTOR, diskBytes)
          const kind = random()
          let offset: number
          if (kind < 0.35) offset = int((diskBytes - length) / SECTOR + 1) * SECTOR
          else if (kind < 0.7) {
            if (cursor + length > diskBytes) cursor = 0
            offset = cursor
            cursor += length
          } else offset = Math.min(diskBytes - length, hot + int((16 * config.blockSize) / SECTOR) * SECTOR)
          const data = new Uint8Array(length)
          // Cheap, seeded content: a different pattern per write, so a lost write is visible.
          const stamp = (int(0xffffffff) | 1) >>> 0
          const view = new DataView(data.buffer)
          for (let i = 0; i + 4 <= length; i += 4) view.setUint32(i, (stamp * (i + 1)) >>> 0)
          yield* replicator.write(offset, data)
          yield* Ref.update(totals, (t) => ({ writes: t.writes + 1, bytes: t.bytes + length }))
          const bursting = yield* Ref.get(burst)
          if (pause > 0 && !bursting) yield* Effect.sleep(Duration.millis(pause * (0.5 + random())))
          else yield* Effect.yieldNow()
        }
      }),
    { concurrency: "unbounded", discard: true }
  )

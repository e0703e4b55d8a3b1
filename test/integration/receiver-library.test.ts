/**
 * The receiver side as a library (cdp-sync/receiver): an application runs the service
 * in-process, protects a disk image through the replicator over TCP, then lists the
 * recovery points, restores the latest one and verifies it against the image — and
 * `verify` reports exactly the blocks that differ once the image changes.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Either, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import { EventJournal, LogReceiver, VirtualDisk } from "../../src/adapters/index.js"
import { Config } from "../../src/domain/index.js"
import { Replicator } from "../../src/replicator/index.js"
import * as Receiver from "../../src/receiver/index.js"

const tempDir = tempDirs("cdp-receiver-lib-", "each")

/**
 * Serves `dir` in-process (until the scope closes) and protects `image` (created) as disk
 * vm1 through the replicator over TCP: write i fills block 7i mod blockCount with i + 1;
 * then quiesce.
 */
const serveAndProtect = (dir: string, image: string, config: Config.Config, writes: number) =>
  Effect.gen(function* () {
    const server = yield* Receiver.ReceiverService.serve({ dir, host: "127.0.0.1", port: 0 })
    yield* Effect.gen(function* () {
      const replicator = yield* Replicator.Replicator
      for (let i = 0; i < writes; i++)
        yield* replicator.write(
          ((i * 7) % config.blockCount) * config.blockSize,
          new Uint8Array(config.blockSize).fill(i + 1)
        )
      yield* replicator.quiesce
    }).pipe(
      Effect.provide(
        Replicator.layer({ diskId: "vm1", config }).pipe(
          Layer.provide(
            Layer.mergeAll(
              VirtualDisk.layerFile({ path: image, geometry: config, create: true }),
              EventJournal.layerMemory(),
              LogReceiver.layerTcp({ host: "127.0.0.1", port: server.port })
            )
          )
        )
      )
    )
  })

describe("cdp-sync/receiver as a library", () => {
  it("serves in-process; points, restore and verify agree with the disk; verify names the blocks that differ", async () => {
    const work = tempDir()
    const dir = path.join(work, "backup")
    const image = path.join(work, "disk.img")
    const config = Either.getOrThrow(Config.make({ blockCount: 64, blockSize: 4096 }))
    const program = Effect.gen(function* () {
      yield* serveAndProtect(dir, image, config, 40)
      const [disk] = yield* Receiver.points(dir, "vm1")
      const restored = yield* Receiver.restore({
        dir,
        diskId: "vm1",
        at: "latest",
        out: path.join(work, "r.img")
      })
      const same = yield* Receiver.verify({ dir, diskId: "vm1", at: "latest", image })
      // The guest's disk changes after the point: two adjacent blocks and one further on.
      const handle = fs.openSync(image, "r+")
      fs.writeSync(handle, Buffer.alloc(10, 0xee), 0, 10, 5 * 4096 + 100)
      fs.writeSync(handle, Buffer.alloc(4096, 0xee), 0, 4096, 6 * 4096)
      fs.writeSync(handle, Buffer.alloc(1, 0xee), 0, 1, 63 * 4096 + 4095)
      fs.closeSync(handle)
      const changed = yield* Receiver.verify({ dir, diskId: "vm1", at: "latest", image })
      return { disk: disk!, restored, same, changed }
    })
    const { disk, restored, same, changed } = await Effect.runPromise(Effect.scoped(program))
    expect(disk.points.length).toBeGreaterThan(1)
    expect(restored.seq).toBe(disk.points.at(-1)!.seq)
    expect(same).toMatchObject({ diskId: "vm1", seq: restored.seq, equal: true, differing: 0, ranges: [] })
    expect(changed).toMatchObject({
      equal: false,
      differing: 3,
      ranges: [
        { first: 5, count: 2 },
        { first: 63, count: 1 }
      ]
    })
  })

  it("refuses an image of another size with a typed error", async () => {
    const work = tempDir()
    const dir = path.join(work, "backup")
    const config = Either.getOrThrow(Config.make({ blockCount: 8, blockSize: 4096 }))
    const image = path.join(work, "disk.img")
    const exit = await Effect.runPromiseExit(
      Effect.scoped(
        Effect.gen(function* () {
          yield* serveAndProtect(dir, image, config, 1)
          fs.truncateSync(image, 4096 * 9)
          return yield* Receiver.verify({ dir, at: "latest", image })
        })
      )
    )
    expect(exit._tag).toBe("Failure")
    expect(JSON.stringify(exit)).toMatch(/ImageSizeMismatch/)
  })
})

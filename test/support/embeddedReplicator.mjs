/**
 * An application that embeds the replicator, as docs/replicator.md shows it: the
 * built package's layers (a raw disk image, the file journal, the file activity log,
 * TCP to a receiver) and `Replicator.layer` with default options. For
 * test/integration/replicator-embedding-crash.test.ts, which SIGKILLs it.
 *
 * Plain JavaScript on dist/ (built by the suite's global setup), so each start costs
 * what the application's would. Driven over stdio, one line each:
 *   → stdout `quiesced`   every write before this start is at the receiver, the image flushed
 *   ← stdin  `go`         start writing, for ever: stdout `writing` after the first write
 *   ← stdin  `exit`       close the replicator cleanly and exit 0
 *
 * argv[2] is JSON: { disk, journal, host, port, diskId, blockSize, blockCount,
 * extentBytes, seed, mutant }. `mutant: "assume-clean"` provides the internal test
 * variant (`ReplicatorMutants.assumeCleanStart`) that takes every start as clean (the
 * caller trusted), which the test must catch.
 */
import * as readline from "node:readline"
import { Effect, Either, Fiber, Layer } from "effect"
import * as ActivityLog from "../../dist/adapters/ActivityLog.js"
import { prng } from "../../dist/conformance/Simulation.js"
import * as EventJournal from "../../dist/adapters/EventJournal.js"
import * as LogReceiver from "../../dist/adapters/LogReceiver.js"
import * as VirtualDisk from "../../dist/adapters/VirtualDisk.js"
import * as Config from "../../dist/domain/Config.js"
import * as Mutants from "../../dist/replicator/internal/mutants.js"
import * as Replicator from "../../dist/replicator/Replicator.js"

const o = JSON.parse(process.argv[2])

const config = Either.getOrThrow(Config.make({ blockSize: o.blockSize, blockCount: o.blockCount }))
const ReplicatorLive = Replicator.layer({ diskId: o.diskId, config }).pipe(
  // The application's own code provides nothing here; only the test's mutant does.
  Layer.provide(Mutants.layer({ assumeCleanStart: o.mutant === "assume-clean" })),
  Layer.provideMerge(
    Layer.mergeAll(
      VirtualDisk.layerFile({ path: o.disk, geometry: config, create: true }),
      EventJournal.layerFile({ directory: o.journal }),
      ActivityLog.layerFile({ directory: o.journal, extentBytes: o.extentBytes }),
      LogReceiver.layerTcp({ host: o.host, port: o.port })
    )
  )
)

// Lines are kept until asked for: one may arrive before the program waits for it.
const received = []
let waiting
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  received.push(line.trim())
  waiting?.()
})
const nextLine = Effect.async((resume) => {
  const take = () => {
    waiting = undefined
    resume(Effect.succeed(received.shift()))
  }
  if (received.length > 0) take()
  else waiting = take
})
const say = (line) => Effect.sync(() => process.stdout.write(`${line}\n`))

/** Guest writers: sector-aligned writes of 512 B … 64 KiB anywhere, each with its own content. */
const writers = (replicator, announce) =>
  Effect.forEach(
    [0, 1, 2, 3],
    (w) =>
      Effect.gen(function* () {
        const random = prng(o.seed * 31 + w)
        const sectors = (o.blockSize * o.blockCount) / 512
        for (let n = 0; ; n++) {
          const length = 1 + Math.floor(random() * 128)
          const first = Math.floor(random() * (sectors - length + 1))
          const bytes = new Uint8Array(length * 512)
          const stamp = (Math.floor(random() * 0xffffffff) | 1) >>> 0
          const view = new DataView(bytes.buffer)
          for (let i = 0; i < bytes.length; i += 4) view.setUint32(i, (stamp * (i + 1)) >>> 0)
          yield* replicator.write(first * 512, bytes)
          if (n === 0 && w === 0) yield* announce
          if (n % 8 === 7) yield* Effect.yieldNow()
        }
      }),
    { concurrency: "unbounded", discard: true }
  )

const main = Effect.scoped(
  Effect.gen(function* () {
    const context = yield* Layer.build(ReplicatorLive)
    const replicator = yield* Effect.provide(Replicator.Replicator, context)
    const disk = yield* Effect.provide(VirtualDisk.VirtualDisk, context)
    yield* replicator.quiesce
    yield* disk.flush
    yield* say("quiesced")
    const command = yield* nextLine
    if (command === "exit") return
    const running = yield* Effect.fork(writers(replicator, say("writing")))
    yield* nextLine
    yield* Fiber.interrupt(running)
  })
)

Effect.runPromise(main).then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`embedded replicator failed: ${error?.message ?? error}\n`)
    process.exit(1)
  }
)

/**
 * Keeps a log receiver busy for the mount bench: connects as the filter of disk DISK
 * (geometry BLOCK_SIZE × BLOCK_COUNT) and sends random 4–64 KiB writes from the seq after
 * the receiver's durable one, at about RATE bytes per second, with at most 256 records
 * beyond the last ack. Prints `ingesting from seq N` once welcomed; on SIGTERM prints
 * `ingested BYTES bytes in MS ms` and exits.
 * Usage: `node ingest.mjs HOST PORT DISK BLOCK_SIZE BLOCK_COUNT RATE`.
 * Plain JavaScript over the built package, so it starts as a bare child process.
 */
import { Effect, Stream } from "effect"
import * as LogReceiver from "../../dist/adapters/LogReceiver.js"

const [host, port, diskId, blockSize, blockCount, rate] = process.argv.slice(2)
const diskBytes = Number(blockSize) * Number(blockCount)
const pool = Buffer.alloc(1 << 20)
for (let i = 0; i < pool.length; i++) pool[i] = (i * 2654435761) >>> 24
const KiB4 = 4096
let sent = 0
let lastAck = 0
const start = performance.now()

process.on("SIGTERM", () => {
  console.log(`ingested ${sent} bytes in ${Math.round(performance.now() - start)} ms`)
  process.exit(0)
})

const program = Effect.scoped(
  Effect.gen(function* () {
    const receiver = yield* LogReceiver.LogReceiver
    const connection = yield* receiver.connect({
      diskId,
      blockSize: Number(blockSize),
      blockCount: Number(blockCount),
      watermark: 0
    })
    lastAck = connection.durableSeq
    yield* connection.messages.pipe(
      Stream.runForEach((m) =>
        Effect.sync(() => {
          if (m._tag === "Ack") lastAck = Math.max(lastAck, m.seq)
        })
      ),
      Effect.forkScoped
    )
    console.log(`ingesting from seq ${connection.durableSeq + 1}`)
    for (let seq = connection.durableSeq + 1; ; seq++) {
      // Paced: never ahead of RATE, never more than 256 records beyond the last ack.
      while (sent > (Number(rate) * (performance.now() - start)) / 1000 || seq - lastAck > 256)
        yield* Effect.sleep("5 millis")
      const length = KiB4 * (1 + Math.floor(Math.random() * 16))
      const offset = KiB4 * Math.floor(Math.random() * ((diskBytes - length) / KiB4 + 1))
      const at = KiB4 * Math.floor(Math.random() * ((pool.length - length) / KiB4))
      yield* connection.send({ _tag: "Write", seq, epoch: 0, offset, data: pool.subarray(at, at + length) })
      sent += length
    }
  })
).pipe(Effect.provide(LogReceiver.layerTcp({ host, port: Number(port), sendBuffer: 256 })))

Effect.runPromise(program).catch((e) => {
  console.error(e)
  process.exit(1)
})

/**
 * Writes the mount bench's log into a `cdp-sync receiver` process over TCP, speaking as the
 * filter does (`LogReceiver.layerTcp`): random 4–64 KiB writes over the whole disk, each
 * applied to an in-memory copy of the disk; when the link breaks (the caller kills the
 * receiver) the guest goes on writing for a while, and after the reconnect a resync pass
 * sends every block written since the receiver's durable seq (resync-begin, whole blocks
 * from the copy, resync-end), then writes resume in sync. At the end the copy is the disk:
 * the latest point restored must equal it.
 *
 * Why not `cdp-sync serve` and fio: on a loaded 2-core machine the filter could not keep
 * up with fio even at 16 MiB/s, pulled ahead into a resync, and fio dirtied blocks as fast
 * as the drain sent them: the log came out as ~99% whole-block records, not writes.
 */
import { Deferred, Effect, Exit, Fiber, Stream } from "effect"
import * as LogReceiver from "../../dist/adapters/LogReceiver.js"

const KiB4 = 4096
const IN_FLIGHT = 512

export interface Link {
  readonly host: string
  readonly port: number
}

export interface LogClientOptions {
  readonly diskId: string
  readonly blockSize: number
  readonly blockCount: number
  /** Stop once this many bytes of records (headers aside) are acked. */
  readonly bytes: number
  /** Where the receiver listens now (it moves when it is restarted). */
  readonly link: () => Link
  /**
   * Called once the acked bytes pass each of `breakAt`: it kills the receiver, lets
   * `whileDown` run (the guest writing meanwhile) and starts it again.
   */
  readonly breakAt: ReadonlyArray<number>
  readonly breakLink: (whileDown: () => void) => Promise<void>
  readonly progress?: (acked: number) => void
}

/** A small deterministic PRNG (mulberry32). */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** Streams the workload; resolves with the disk as the receiver's latest point must hold it. */
export const writeLog = async (options: LogClientOptions): Promise<Buffer> => {
  const { blockSize, blockCount } = options
  const diskBytes = blockSize * blockCount
  const disk = Buffer.alloc(diskBytes)
  const random = prng(7)
  const pool = Buffer.allocUnsafe(8 << 20)
  for (let i = 0; i < pool.length; i += 4) pool.writeUInt32LE((random() * 4294967296) >>> 0, i)
  /** Blocks written since the receiver's durable seq, by the seq that wrote them last. */
  const unacked = new Map<number, number>()
  const dirty = new Set<number>()
  let acked = 0
  let lastAck = 0
  let epoch = 0
  let breaks = 0

  const guestWrite = () => {
    const length = KiB4 * (1 + Math.floor(random() * 16))
    const offset = KiB4 * Math.floor(random() * ((diskBytes - length) / KiB4 + 1))
    const from = KiB4 * Math.floor(random() * ((pool.length - length) / KiB4))
    pool.copy(disk, offset, from, from + length)
    return { offset, length }
  }
  const blocksOf = (offset: number, length: number) => {
    const out: Array<number> = []
    for (let b = Math.floor(offset / blockSize); b * blockSize < offset + length; b++) out.push(b)
    return out
  }

  /** One connection: resync what the receiver lacks, then writes until done or the link breaks. */
  const session = Effect.scoped(
    Effect.gen(function* () {
      const receiver = yield* LogReceiver.LogReceiver
      const connection = yield* receiver.connect({
        diskId: options.diskId,
        blockSize,
        blockCount,
        watermark: lastAck
      })
      const durable = connection.durableSeq
      for (const [block, seq] of unacked) if (seq > durable) dirty.add(block)
      unacked.clear()
      lastAck = durable
      const sizes = new Map<number, number>()
      const woken: Array<() => void> = []
      const done = yield* Deferred.make<void>()
      const consumer = yield* connection.messages.pipe(
        Stream.runForEach((m) =>
          Effect.sync(() => {
            if (m._tag !== "Ack") return
            for (let s = lastAck + 1; s <= m.seq; s++) {
              acked += sizes.get(s) ?? 0
              sizes.delete(s)
            }
            lastAck = Math.max(lastAck, m.seq)
            options.progress?.(acked)
            for (const wake of woken.splice(0)) wake()
            if (acked >= options.bytes && sizes.size === 0) Deferred.unsafeDone(done, Exit.void)
          })
        ),
        Effect.forkScoped
      )
      let seq = durable
      const send = (
        record: LogReceiver.LogReceiver.OutRecord,
        bytes: number,
        blocks: ReadonlyArray<number>
      ) =>
        Effect.gen(function* () {
          while (seq - lastAck >= IN_FLIGHT)
            yield* Effect.raceFirst(
              Effect.async<void>((resume) => {
                woken.push(() => resume(Effect.void))
              }),
              Fiber.join(consumer)
            )
          sizes.set(record.seq, bytes)
          for (const b of blocks) unacked.set(b, record.seq)
          yield* connection.send(record)
        })
      if (dirty.size > 0) {
        epoch++
        yield* send({ _tag: "ResyncBegin", seq: ++seq, epoch, base: durable }, 0, [])
        for (const block of [...dirty].sort((a, b) => a - b)) {
          const data = disk.subarray(block * blockSize, (block + 1) * blockSize)
          yield* send({ _tag: "Block", seq: ++seq, epoch, block, data }, blockSize, [block])
        }
        dirty.clear()
        yield* send({ _tag: "ResyncEnd", seq: ++seq, epoch }, 0, [])
      }
      while (acked < options.bytes) {
        if (breaks < options.breakAt.length && acked >= options.breakAt[breaks]!) {
          breaks++
          // The guest writes on while the receiver is down; what it wrote is resynced.
          yield* Effect.promise(() =>
            options.breakLink(() => {
              for (let i = 0; i < 1000; i++) {
                const w = guestWrite()
                for (const b of blocksOf(w.offset, w.length)) dirty.add(b)
              }
            })
          )
          return false
        }
        const w = guestWrite()
        yield* send(
          {
            _tag: "Write",
            seq: ++seq,
            epoch,
            offset: w.offset,
            data: disk.subarray(w.offset, w.offset + w.length)
          },
          w.length,
          blocksOf(w.offset, w.length)
        )
      }
      yield* Effect.raceFirst(Deferred.await(done), Fiber.join(consumer))
      return true
    })
  )
  for (;;) {
    const link = options.link()
    const finished = await Effect.runPromise(
      session.pipe(
        Effect.provide(LogReceiver.layerTcp({ host: link.host, port: link.port, sendBuffer: 256 })),
        Effect.catchAll(() => Effect.succeed(false))
      )
    )
    if (finished) return disk
  }
}

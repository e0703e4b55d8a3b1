/**
 * A TCP proxy on loopback between the filter and the log receiver that injects
 * the faults the simulator schedules: cut connections, stalled acks, a dropped
 * record (the receiver then sees a gap), and a throttled link (congestion).
 */
import * as net from "node:net"
import { Effect, type Scope } from "effect"
import * as Wire from "../../protocol/Wire.js"

const { HEADER_BYTES, Kind, Offset } = Wire

export interface FaultProxy {
  readonly port: number
  /** Cuts every connection through the proxy (both ends see a reset). */
  readonly cut: Effect.Effect<void>
  /** Holds receiver → filter traffic (acks) while on. */
  readonly stallAcks: (on: boolean) => Effect.Effect<void>
  /** The next write or block record from the filter vanishes. */
  readonly dropNextRecord: Effect.Effect<void>
  /** Limits filter → receiver bandwidth (bytes/s), or lifts the limit. */
  readonly throttle: (bytesPerSecond: number | undefined) => Effect.Effect<void>
  /** Points new connections at another receiver port (after a restart). */
  readonly retarget: (port: number) => Effect.Effect<void>
}

/** Splits the filter's byte stream at frame boundaries so one record can be dropped. */
class FrameGate {
  private header = Buffer.alloc(0)
  private remaining = 0
  private dropping = false
  dropNext = false
  /** Bytes of `chunk` to forward, in order. */
  pass(chunk: Buffer): Array<Buffer> {
    const out: Array<Buffer> = []
    let at = 0
    while (at < chunk.length) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - at)
        if (!this.dropping) out.push(chunk.subarray(at, at + n))
        this.remaining -= n
        at += n
        continue
      }
      const need = HEADER_BYTES - this.header.length
      const take = chunk.subarray(at, at + need)
      this.header = this.header.length === 0 ? Buffer.from(take) : Buffer.concat([this.header, take])
      at += take.length
      if (this.header.length < HEADER_BYTES) break
      const kind = this.header[Offset.kind]
      const length = this.header.readUInt32BE(Offset.length)
      this.dropping = this.dropNext && (kind === Kind.Write || kind === Kind.Block)
      if (this.dropping) this.dropNext = false
      if (!this.dropping) out.push(this.header)
      this.header = Buffer.alloc(0)
      this.remaining = length
    }
    return out
  }
}

export const make = (targetPort: number, host = "127.0.0.1"): Effect.Effect<FaultProxy, Error, Scope.Scope> =>
  Effect.gen(function* () {
    let target = targetPort
    let acksStalled = false
    let rate: number | undefined
    const pairs = new Set<{
      client: net.Socket
      upstream: net.Socket
      gate: FrameGate
      held: Array<Buffer>
    }>()
    let dropNext = false

    const server = net.createServer((client) => {
      client.setNoDelay(true)
      const upstream = net.connect({ host, port: target })
      upstream.setNoDelay(true)
      const pair = { client, upstream, gate: new FrameGate(), held: [] as Array<Buffer> }
      pairs.add(pair)
      // Filter → receiver, through the frame gate and the throttle.
      let budgetAt = Date.now()
      let tokens = 0
      client.on("data", (chunk: Buffer) => {
        if (dropNext) {
          pair.gate.dropNext = true
          dropNext = false
        }
        const parts = pair.gate.pass(chunk)
        for (const p of parts) if (!upstream.write(p)) client.pause()
        if (rate !== undefined) {
          const now = Date.now()
          tokens = Math.min(rate, tokens + ((now - budgetAt) / 1000) * rate) - chunk.length
          budgetAt = now
          if (tokens < 0) {
            client.pause()
            setTimeout(() => client.resume(), Math.min(1000, (-tokens / rate) * 1000))
          }
        }
      })
      upstream.on("drain", () => client.resume())
      // Receiver → filter (acks, gaps), held while stalled.
      upstream.on("data", (chunk: Buffer) => {
        if (acksStalled) pair.held.push(chunk)
        else client.write(chunk)
      })
      const close = () => {
        pairs.delete(pair)
        client.destroy()
        upstream.destroy()
      }
      client.on("error", close)
      upstream.on("error", close)
      client.on("close", close)
      upstream.on("close", close)
    })
    yield* Effect.async<void, Error>((resume) => {
      server.once("error", (e) => resume(Effect.fail(e)))
      server.listen(0, host, () => resume(Effect.void))
    })
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        for (const p of pairs) {
          p.client.destroy()
          p.upstream.destroy()
        }
        server.close(() => resume(Effect.void))
      })
    )
    const port = (server.address() as net.AddressInfo).port
    return {
      port,
      cut: Effect.sync(() => {
        for (const p of pairs) {
          p.client.resetAndDestroy()
          p.upstream.destroy()
        }
        pairs.clear()
      }),
      stallAcks: (on) =>
        Effect.sync(() => {
          acksStalled = on
          if (!on)
            for (const p of pairs) {
              for (const chunk of p.held) p.client.write(chunk)
              p.held = []
            }
        }),
      dropNextRecord: Effect.sync(() => {
        dropNext = true
      }),
      throttle: (bytesPerSecond) =>
        Effect.sync(() => {
          rate = bytesPerSecond
        }),
      retarget: (p) =>
        Effect.sync(() => {
          target = p
        })
    } satisfies FaultProxy
  })

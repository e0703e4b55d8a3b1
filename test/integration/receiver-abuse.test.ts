/**
 * The real receiver (a child process, so its memory is its own: VmHWM in /proc/PID/status
 * is the peak resident size) under each way a peer can try to pin its memory or its
 * disks. Each case states its bound over the receiver's resident size once ready, checks
 * the peak after the abuse, and then has a well-behaved filter served.
 *
 * The bounds are far below what the abuse pinned before the fixes (issue 13: 176 partial
 * 32 MiB hellos took 5.9 GB, 5 M unread acks 1.3 GB) and far above what the fixed receiver
 * needs, so they hold on a loaded machine.
 */
import * as fs from "node:fs"
import * as Net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { crc32c } from "../../src/internal/crc32c.js"
import { mib } from "../../src/internal/units.js"
import * as Wire from "../../src/protocol/Wire.js"
import * as Proc from "../support/receiverProcess.js"
import { tempDirs } from "../support/tempDirs.js"

const MiB = 1 << 20
const running: Array<Proc.ReceiverProcess> = []
const tempDir = tempDirs("cdp-abuse-")
const start = async (extra: ReadonlyArray<string>) => {
  const dir = tempDir()
  const receiver = await Proc.start(dir, extra)
  running.push(receiver)
  return { receiver, dir }
}
afterEach(async () => {
  for (const r of running.splice(0)) await r.kill()
})

/** VmRSS and VmHWM (the peak) of a process, in bytes. */
const memory = (pid: number) => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)![1]) * 1024
  return { rss: kb("VmRSS"), peak: kb("VmHWM") }
}

const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms))
const until = async (what: string, condition: () => boolean, attempts = 3000) => {
  for (let i = 0; i < attempts; i++) {
    if (condition()) return
    await sleep(10)
  }
  throw new Error(`timed out waiting for ${what}`)
}

interface Peer {
  readonly socket: Net.Socket
  readonly frames: Array<Wire.Frame>
  readonly closed: Promise<void>
  isClosed(): boolean
}

const connect = (receiver: Proc.ReceiverProcess, read = true) =>
  new Promise<Peer>((resolve, reject) => {
    const socket = Net.connect({ host: receiver.host, port: receiver.port }, () => {
      const frames: Array<Wire.Frame> = []
      const decoder = Wire.makeDecoder()
      let closed = false
      if (read) socket.on("data", (chunk) => decoder.pushInto(chunk, frames))
      const done = new Promise<void>((resolve) =>
        socket.on("close", () => {
          closed = true
          resolve()
        })
      )
      socket.on("error", () => {})
      resolve({ socket, frames, closed: done, isClosed: () => closed })
    })
    socket.once("error", reject)
  })

/** Writes `bytes` (waiting for the socket to take them); stops quietly if the receiver closed it. */
const write = (peer: Peer, bytes: Uint8Array) =>
  new Promise<void>((resolve) => {
    if (peer.isClosed() || peer.socket.destroyed) return resolve()
    const ok = peer.socket.write(bytes, () => resolve())
    if (!ok) peer.socket.once("close", () => resolve())
  })

const zeros = Buffer.alloc(MiB)
const writeZeros = async (peer: Peer, bytes: number) => {
  for (let left = bytes; left > 0 && !peer.isClosed(); left -= MiB)
    await write(peer, zeros.subarray(0, Math.min(MiB, left)))
}

/** A frame header announcing `payload` bytes of `frame`'s kind, with a valid header CRC. */
const headerAnnouncing = (frame: Wire.Frame, payload: number) => {
  const header = Buffer.from(Wire.encode(frame).subarray(0, Wire.HEADER_BYTES))
  header.writeUInt32BE(payload, 28)
  header.writeUInt32BE(crc32c(header.subarray(0, 36)), 36)
  return header
}

const geometry = { blockSize: 4096, blockCount: 4096 }
const helloBytes = (diskId: string) => Wire.encode({ _tag: "Hello", diskId, ...geometry, watermark: 0 })

/** A well-behaved filter streams a plan on a fresh disk and has all of it acked. */
const served = async (receiver: Proc.ReceiverProcess, diskId: string, attempts = 1) => {
  const plan = Proc.makePlan({ seed: 5, records: 200, ...geometry })
  for (let attempt = 1; ; attempt++) {
    const result = await Proc.streamPlan({
      host: receiver.host,
      port: receiver.port,
      hello: { diskId, ...geometry, watermark: 0 },
      plan
    })
    if (result.outcome === "complete" || attempt >= attempts)
      return expect(result).toMatchObject({ outcome: "complete", lastAck: 200 })
    await sleep(50)
  }
}

describe("the receiver's bounds as options", () => {
  it("must be positive: the parser refuses 0 and negatives, naming the option", async () => {
    for (const [option, value, reason] of [
      ["--idle-timeout", "0", '"0": the duration must be at least 1ms'],
      ["--max-connections", "-3", "-3: expected a positive integer"],
      ["--hello-timeout", "0", '"0": the duration must be at least 1ms']
    ] as const) {
      const result = await Proc.run(["receiver", "--dir", tempDir(), "--port", "0", option, value])
      expect(result.code, option).toBe(2)
      expect(result.stderr).toContain(`${option} ${reason}`)
      expect(result.stdout).not.toMatch(/listening/)
    }
  })
})

describe("the receiver under abuse (a child process, its peak resident size bounded)", () => {
  it("partial 32 MiB hellos: refused from the header, nothing pinned (bound: +160 MiB)", async () => {
    const { receiver } = await start(["--hello-timeout", "300"])
    const base = memory(receiver.child.pid!).rss
    const header = headerAnnouncing(
      { _tag: "Hello", diskId: "x", ...geometry, watermark: 0 },
      Wire.DEFAULT_MAX_FRAME_BYTES - Wire.HEADER_BYTES
    )
    // 8 rounds of 16 peers, each sending 8 MiB of a hello and then nothing: 1 GiB if kept.
    for (let round = 0; round < 8; round++) {
      const peers = await Promise.all(Array.from({ length: 16 }, () => connect(receiver)))
      await Promise.all(
        peers.map(async (peer) => {
          await write(peer, header)
          await writeZeros(peer, 8 * MiB)
        })
      )
      await Promise.all(peers.map((peer) => peer.closed))
    }
    const { peak } = memory(receiver.child.pid!)
    // It levels off: 16 sockets' read buffers and the heap's working set, not 8 × 128 MiB.
    expect(peak - base, `peak ${mib(peak)}, ready at ${mib(base)}`).toBeLessThan(160 * MiB)
    expect(receiver.stderr()).toMatch(/reason=too-large/)
    await served(receiver, "after-hellos")
  })

  it("partial 16 MiB records after a hello, then silence: dropped after the idle timeout, buffers released (bound: +256 MiB)", async () => {
    const { receiver } = await start(["--idle-timeout", "500"])
    const base = memory(receiver.child.pid!).rss
    const header = headerAnnouncing(
      { _tag: "Write", seq: 1, epoch: 0, offset: 0, data: new Uint8Array(0) },
      16 * MiB
    )
    // 12 rounds of 16 disks, each 4 MiB into a record: 768 MiB if kept, 64 MiB a round.
    for (let round = 0; round < 12; round++) {
      const peers = await Promise.all(Array.from({ length: 16 }, () => connect(receiver)))
      await Promise.all(
        peers.map(async (peer, i) => {
          await write(peer, helloBytes(`r${round}-d${i}`))
          await write(peer, header)
          await writeZeros(peer, 4 * MiB)
        })
      )
      await Promise.all(peers.map((peer) => peer.closed))
    }
    const { peak } = memory(receiver.child.pid!)
    expect(peak - base, `peak ${mib(peak)}, ready at ${mib(base)}`).toBeLessThan(256 * MiB)
    expect(receiver.stderr().match(/connection closed: nothing received/g)).toHaveLength(12 * 16)
    await served(receiver, "after-records")
  })

  it("a peer that says hello and goes silent holds the disk only until the idle timeout; the filter then connects", async () => {
    const { receiver } = await start(["--idle-timeout", "1000"])
    const silent = await connect(receiver)
    await write(silent, helloBytes("vm1"))
    await until("the welcome", () => silent.frames.length > 0)
    // The filter retries (as the replicator does) until the disk is free.
    let refusals = 0
    for (;;) {
      const plan = Proc.makePlan({ seed: 9, records: 50, ...geometry })
      const result = await Proc.streamPlan({
        host: receiver.host,
        port: receiver.port,
        hello: { diskId: "vm1", ...geometry, watermark: 0 },
        plan
      })
      if (result.outcome === "complete") break
      expect(result.outcome).toBe("refused")
      refusals++
      expect(refusals).toBeLessThan(200)
      await sleep(50)
    }
    expect(silent.isClosed()).toBe(true)
    expect(receiver.stderr()).toMatch(
      /vm1: connection taken over by a new one|connection closed: nothing received/
    )
  })

  it("a peer that never reads its acks: 2 M duplicates, coalesced acks (bound: +192 MiB)", async () => {
    const { receiver, dir } = await start([])
    const base = memory(receiver.child.pid!).rss
    const peer = await connect(receiver)
    await write(peer, helloBytes("dups"))
    await write(peer, Wire.encode({ _tag: "Write", seq: 1, epoch: 0, offset: 0, data: new Uint8Array(512) }))
    await until("ack 1", () => peer.frames.some((f) => f._tag === "Ack"))
    peer.socket.pause()
    // 2 M duplicates of record 1, each due an ack: 10 000 per write.
    const one = Wire.encode({ _tag: "ResyncEnd", seq: 1, epoch: 0 })
    const batch = Buffer.alloc(one.byteLength * 10_000)
    for (let i = 0; i < 10_000; i++) batch.set(one, i * one.byteLength)
    for (let i = 0; i < 200; i++) await write(peer, batch)
    // Record 2 behind them: once it is in the log, the receiver has handled every duplicate.
    await write(peer, Wire.encode({ _tag: "Write", seq: 2, epoch: 0, offset: 0, data: new Uint8Array(512) }))
    let logged = 0
    for (let i = 0; i < 3000 && logged < 2; i++) {
      logged = (await Proc.readLog(dir, "dups")).records.length
      if (logged < 2) await sleep(20)
    }
    expect(logged).toBe(2)
    const { peak } = memory(receiver.child.pid!)
    // The heap's garbage between collections, not the acks: the old receiver kept every
    // unread ack (+461 MiB here, and growing with each duplicate).
    expect(peak - base, `peak ${mib(peak)}, ready at ${mib(base)}`).toBeLessThan(192 * MiB)
    expect(peer.isClosed()).toBe(false)
    await served(receiver, "after-dups")
    peer.socket.destroy()
  })

  it("a flood of connections beyond --max-connections: closed at once with a WARN line (bound: +64 MiB)", async () => {
    const { receiver } = await start(["--max-connections", "32"])
    const base = memory(receiver.child.pid!).rss
    const peers = await Promise.all(Array.from({ length: 200 }, () => connect(receiver)))
    await until("168 connections closed", () => peers.filter((p) => p.isClosed()).length >= 168)
    await sleep(200)
    expect(peers.filter((p) => p.isClosed())).toHaveLength(168)
    expect(
      receiver.stderr().match(/connection refused: too many connections.*maxConnections=32/g)
    ).toHaveLength(168)
    const { peak } = memory(receiver.child.pid!)
    expect(peak - base, `peak ${mib(peak)}, ready at ${mib(base)}`).toBeLessThan(64 * MiB)
    for (const p of peers) p.socket.destroy()
    // Once the receiver has seen them go, a filter is served.
    await served(receiver, "after-flood", 100)
  })
})

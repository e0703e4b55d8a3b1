/**
 * Issue 18, the receiver's half of checksum resync: a real receiver process (the built CLI)
 * answers checksum requests over TCP (a raw socket speaking the wire).
 *
 * - Records and requests interleaved, small segments sealed and folded by retention as they
 *   go: each reply's `through` is the last record sent before its request, the ack of it came
 *   first, and each digest is SHA-256 of that block in the model image at `through`; at the
 *   end, a request for every block equals SHA-256 of the replay oracle's image
 *   (`internal/replay.ts`) block by block, and so does `Checksums.blockDigests` (what verify
 *   reads) at the latest recovery point, read beside the running receiver.
 * - A request for a block beyond the disk closes the connection with a typed `bad-request`.
 * - A flipped payload byte under a requested block: a `ChecksumRefused` naming the segment
 *   and the record's byte, never a digest; other blocks are still answered on that connection.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as Net from "node:net"
import * as path from "node:path"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Wire from "../../src/protocol/Wire.js"
import { diskDirName, openChain } from "../../src/receiver/internal/chain.js"
import { openPointMap } from "../../src/receiver/internal/point.js"
import { replayPoint } from "../../src/receiver/internal/replay.js"
import * as Checksums from "../../src/receiver/Checksums.js"
import { flipByte, readMetaFile } from "../support/receiverDisk.js"
import * as Proc from "../support/receiverProcess.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-checksums-")
const running: Array<Proc.ReceiverProcess> = []
afterEach(async () => {
  for (const r of running.splice(0)) await r.kill()
})

const blockSize = 4096
const blockCount = 64
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest()

interface Peer {
  readonly frames: Array<Wire.Frame>
  readonly state: { closed: boolean }
  send(frame: Wire.Frame): void
  waitFor<A>(what: string, find: () => A | undefined): Promise<A>
  close(): void
}

const connect = (port: number) =>
  new Promise<Peer>((resolve, reject) => {
    const socket = Net.connect({ host: "127.0.0.1", port }, () => {
      const frames: Array<Wire.Frame> = []
      const state = { closed: false }
      const decoder = Wire.makeDecoder()
      socket.on("data", (chunk) => decoder.pushInto(chunk, frames))
      socket.on("close", () => {
        state.closed = true
      })
      socket.on("error", () => {})
      resolve({
        frames,
        state,
        send: (frame) => socket.write(Wire.encode(frame)),
        waitFor: async (what, find) => {
          for (let i = 0; i < 6000; i++) {
            const found = find()
            if (found !== undefined) return found
            if (state.closed) throw new Error(`the connection closed while waiting for ${what}`)
            await new Promise((done) => setTimeout(done, 10))
          }
          throw new Error(`timed out waiting for ${what}`)
        },
        close: () => socket.destroy()
      })
    })
    socket.once("error", reject)
  })

const start = async (dir: string, extra: ReadonlyArray<string> = []) => {
  const receiver = await Proc.start(dir, ["--verify-rate", "0", ...extra])
  running.push(receiver)
  const peer = await connect(receiver.port)
  peer.send({ _tag: "Hello", diskId: "vm", blockSize, blockCount, watermark: 0 })
  const welcome = await peer.waitFor("the welcome", () => peer.frames[0])
  expect(welcome._tag).toBe("Welcome")
  return { receiver, peer }
}

const answerTo = (peer: Peer, id: number) =>
  peer.waitFor(`the answer to request ${id}`, () =>
    peer.frames.find(
      (f): f is Wire.ChecksumReply | Wire.ChecksumRefused =>
        (f._tag === "ChecksumReply" || f._tag === "ChecksumRefused") && f.id === id
    )
  )

const apply = (image: Buffer, record: Wire.Record) => {
  if (record._tag === "Write") image.set(record.data, record.offset)
  else if (record._tag === "Block") image.set(record.data, record.block * blockSize)
}

describe("checksum requests against a real receiver (issue 18)", () => {
  it("answers with the digests of the model image at `through`, across seals and folds; at the end, of the replay oracle", async () => {
    const dir = tempDir()
    const { receiver, peer } = await start(dir, ["--segment-bytes", "24KiB", "--retain", "64KiB"])
    const plan = Proc.makePlan({ seed: 18, records: 240, blockSize, blockCount, maxWrite: 3 * blockSize })
    const random = Proc.prng(1818)
    const image = Buffer.alloc(blockSize * blockCount)
    const asked: Array<{ id: number; through: number; blocks: Array<number>; image: Buffer }> = []
    let id = 0
    for (let i = 0; i < plan.length; ) {
      const n = 1 + Math.floor(random() * 20)
      for (const { record } of plan.slice(i, i + n)) {
        peer.send(record)
        apply(image, record)
      }
      i = Math.min(plan.length, i + n)
      // A sparse set, with the first and the last block now and then.
      const blocks = [
        ...new Set([0, blockCount - 1, ...Array.from({ length: 6 }, () => Math.floor(random() * blockCount))])
      ]
        .filter((_b, k) => k > 1 || random() < 0.5)
        .sort((a, b) => a - b)
      if (blocks.length === 0) continue
      peer.send({ _tag: "ChecksumRequest", algorithm: 0, id: ++id, blocks })
      asked.push({ id, through: i, blocks, image: Buffer.from(image) })
    }
    for (const request of asked) {
      const answer = await answerTo(peer, request.id)
      if (answer._tag !== "ChecksumReply") throw new Error(`request ${request.id} refused: ${answer.detail}`)
      expect(answer.through).toBe(request.through)
      // The records it reflects were acked before it.
      const at = peer.frames.indexOf(answer)
      const acked = Math.max(0, ...peer.frames.slice(0, at).map((f) => (f._tag === "Ack" ? f.seq : 0)))
      expect(acked).toBeGreaterThanOrEqual(answer.through)
      request.blocks.forEach((b, k) => {
        const expected = sha256(request.image.subarray(b * blockSize, (b + 1) * blockSize))
        expect(
          Buffer.from(Wire.digestAt(answer, k)).equals(expected),
          `request ${request.id} block ${b}`
        ).toBe(true)
      })
    }
    // Every block at the end, against the replay oracle.
    const all = Array.from({ length: blockCount }, (_, b) => b)
    peer.send({ _tag: "ChecksumRequest", algorithm: 0, id: ++id, blocks: all })
    const last = await answerTo(peer, id)
    if (last._tag !== "ChecksumReply") throw new Error(last.detail)
    expect(last.through).toBe(plan.length)
    const diskDir = path.join(dir, diskDirName("vm"))
    const replayed = path.join(tempDir(), "replayed.img")
    // `undefined`: a fold raced the replay; the chain is read again.
    for (let round = 0; ; round++) {
      const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
      // Retention folded while the requests were answered (the base moved).
      expect(chain.base.seq).toBeGreaterThan(0)
      if ((await replayPoint(chain, last.through, { _tag: "File", path: replayed })) !== undefined) break
      expect(round).toBeLessThan(5)
    }
    const oracle = fs.readFileSync(replayed)
    expect(oracle.equals(image)).toBe(true)
    all.forEach((b) => {
      expect(
        Buffer.from(Wire.digestAt(last, b)).equals(
          sha256(oracle.subarray(b * blockSize, (b + 1) * blockSize))
        ),
        `block ${b}`
      ).toBe(true)
    })
    // The library call verify uses, beside the running receiver: the latest recovery point.
    const verified = await Effect.runPromise(Checksums.blockDigests({ dir, diskId: "vm", at: "latest" }))
    const atPoint = path.join(tempDir(), "point.img")
    for (let round = 0; ; round++) {
      const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
      if ((await replayPoint(chain, verified.seq, { _tag: "File", path: atPoint })) !== undefined) break
      expect(round).toBeLessThan(5)
    }
    const pointImage = fs.readFileSync(atPoint)
    all.forEach((b) => {
      const expected = sha256(pointImage.subarray(b * blockSize, (b + 1) * blockSize))
      expect(
        Buffer.from(verified.digests.subarray(b * 32, (b + 1) * 32)).equals(expected),
        `block ${b}`
      ).toBe(true)
    })
    peer.close()
    expect(receiver.stderr()).not.toMatch(/refused|level=ERROR/)
  }, 120_000)

  it("refuses a request for a block beyond the disk: the connection closes with bad-request", async () => {
    const { receiver, peer } = await start(tempDir())
    peer.send({ _tag: "ChecksumRequest", algorithm: 0, id: 1, blocks: [0, blockCount] })
    await peer.waitFor("the close", () => (peer.state.closed ? true : undefined)).catch(() => undefined)
    expect(peer.state.closed).toBe(true)
    expect(peer.frames.some((f) => f._tag === "ChecksumReply" || f._tag === "ChecksumRefused")).toBe(false)
    for (let i = 0; i < 500 && !/bad-request/.test(receiver.stderr()); i++)
      await new Promise((done) => setTimeout(done, 10))
    expect(receiver.stderr()).toMatch(
      /wire protocol error \(bad-request\): checksum request 1: block 64 is outside/
    )
  }, 60_000)

  it("never hashes a damaged payload byte: the request is refused naming the file and byte; others are answered", async () => {
    const dir = tempDir()
    const { receiver, peer } = await start(dir, ["--segment-bytes", "16KiB"])
    const plan = Proc.makePlan({ seed: 7, records: 60, blockSize, blockCount, resyncChance: 0 })
    for (const { record } of plan) peer.send(record)
    // Once everything is durable, find where block 5's newest bytes live, and flip one.
    peer.send({ _tag: "ChecksumRequest", algorithm: 0, id: 1, blocks: [5] })
    expect((await answerTo(peer, 1))._tag).toBe("ChecksumReply")
    const diskDir = path.join(dir, diskDirName("vm"))
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const map = await openPointMap(chain, chain.lastSeq, false)
    const block = Array.from({ length: blockCount }, (_, b) => b).find((b) =>
      map.extents.some((x) => x.start <= b * blockSize && x.end > b * blockSize)
    )!
    const x = map.extents.find((e) => e.start <= block * blockSize && e.end > block * blockSize)!
    const segment = chain.segments[x.segment]!
    const entry = segment.entries!.find((e) => e.seq === x.seq)!
    flipByte(path.join(diskDir, segment.name), x.fileOffset + (block * blockSize - x.start))
    const clean = Array.from({ length: blockCount }, (_, b) => b).find(
      (b) =>
        !map.extents.some((e) => e.seq === x.seq && e.start < (b + 1) * blockSize && e.end > b * blockSize)
    )!
    peer.send({ _tag: "ChecksumRequest", algorithm: 0, id: 2, blocks: [block] })
    const refused = await answerTo(peer, 2)
    expect(refused._tag).toBe("ChecksumRefused")
    if (refused._tag !== "ChecksumRefused") return
    expect(refused.reason).toBe("damaged")
    expect(refused.detail).toContain(`${segment.name} at byte ${entry.offset}`)
    expect(refused.detail).toContain(`record ${x.seq}`)
    // The connection stays up: a block the damage does not reach is answered.
    peer.send({ _tag: "ChecksumRequest", algorithm: 0, id: 3, blocks: [clean] })
    expect((await answerTo(peer, 3))._tag).toBe("ChecksumReply")
    expect(receiver.stderr()).toMatch(/checksum request 2 refused: log corrupt/)
    peer.close()
  }, 60_000)
})

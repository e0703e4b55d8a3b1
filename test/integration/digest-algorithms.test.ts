/**
 * The block digest's algorithm end to end (session 13, docs/wire.md "Checksums"): the built
 * CLI's `replicate` (a raw image, the file journal and activity log, TCP) against the real
 * receiver process, its BLAKE3 from the native module the CLI bundle leaves external.
 *
 * - Both ends agree on both algorithms: after an unclean start, `--digest sha256` and the
 *   default (BLAKE3) each send exactly the blocks changed on the disk (a digest computed
 *   differently at either end would send more), `replicate --json` says which; the
 *   receiver's digests of its replayed image, asked by either code, are the disk's.
 * - `--digest` of another value is a usage error (exit 2).
 * - A receiver without BLAKE3's binary (a preload makes its load fail, as on such a
 *   platform) refuses BLAKE3 as `unsupported`; the filter falls back to SHA-256, says so,
 *   and the replica ends equal to the disk.
 * - A receiver from before the code (a proxy hands it every request with code 0, as such a
 *   receiver reads it: it answers SHA-256, echoing 0): the filter believes no reply whose
 *   echo is not what it asked, falls back to SHA-256, and the replica ends equal to the disk.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import * as Wire from "../../src/protocol/Wire.js"
import {
  type FilterSetup,
  filterArgs,
  killedFilter,
  receiverDigests,
  replicate
} from "../support/checksumFilter.js"
import * as Proc from "../support/receiverProcess.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-digest-")
const running: Array<Proc.ReceiverProcess> = []
afterEach(async () => {
  for (const r of running.splice(0)) await r.kill()
})

const BLOCK = 65536
const BLOCKS = 64
const WINDOW = 4
const SETUP: FilterSetup = { blockSize: BLOCK, blockCount: BLOCKS, window: WINDOW }
const WITHOUT_BLAKE3 = path.resolve(import.meta.dirname, "../support/withoutBlake3.cjs")

const changeBlocks = (dir: string, blocks: ReadonlyArray<number>, fill: number) => {
  const fd = fs.openSync(path.join(dir, "disk.img"), "r+")
  try {
    for (const b of blocks) fs.writeSync(fd, Buffer.alloc(BLOCK, fill + b), 0, BLOCK, b * BLOCK)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Between the filter and the receiver at `port`: every checksum request goes on with code 0,
 * every other frame as it came; the receiver's side passes untouched. Closed by the test.
 */
const codeZeroProxy = async (port: number) => {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1")
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on("error", () => undefined)
      s.on("close", () => {
        sockets.delete(s)
        client.destroy()
        upstream.destroy()
      })
    }
    const decoder = Wire.makeDecoder()
    client.on("data", (bytes: Buffer) => {
      const frames: Array<Wire.Frame> = []
      const error = decoder.pushInto(bytes, frames)
      for (const f of frames)
        upstream.write(Wire.encode(f._tag === "ChecksumRequest" ? { ...f, algorithm: 0 } : f))
      if (error !== undefined) client.destroy()
    })
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  }
}

describe("the block digest's algorithm against the real receiver (session 13)", () => {
  it("both ends agree on SHA-256 and BLAKE3: exactly the changed blocks sent; the receiver's digests are the disk's", async () => {
    const dir = tempDir()
    const receiverDir = path.join(dir, "receiver")
    fs.mkdirSync(receiverDir)
    const receiver = await Proc.start(receiverDir, ["--verify-rate", "0"])
    running.push(receiver)
    const usage = await Proc.run(["replicate", ...filterArgs(SETUP, dir, receiver.port), "--digest", "md5"])
    expect(usage.code).toBe(2)
    expect(usage.stderr).toContain("--digest md5: expected blake3 or sha256")

    await replicate(SETUP, dir, receiver.port, ["--seconds", "1", "--seed", "13"])
    let watermark = 0
    for (const [digest, changed] of [
      ["sha256", [5, 40]],
      ["blake3", [9, 33, 63]]
    ] as const) {
      await killedFilter(SETUP, dir, receiver.port)
      changeBlocks(dir, changed, digest === "sha256" ? 0x10 : 0x80)
      const { status } = await replicate(SETUP, dir, receiver.port, [
        "--compare-from",
        "1",
        ...(digest === "blake3" ? [] : ["--digest", digest])
      ])
      expect(status).toMatchObject({ mode: "sync", quiescent: true })
      expect(status.checksums, digest).toEqual({
        compared: BLOCKS,
        matched: BLOCKS - changed.length,
        sent: changed.length,
        algorithm: digest
      })
      watermark = status.watermark
    }
    expect(await Proc.restoredEqualsDisk(dir, receiverDir)).toBe(true)
    // The receiver's digests of the image its log replays, by either code, are the disk's.
    const image = fs.readFileSync(path.join(dir, "disk.img"))
    for (const algorithm of Wire.DIGEST_ALGORITHMS) {
      const reply = await receiverDigests(SETUP, receiver.port, watermark, algorithm)
      for (let b = 0; b < BLOCKS; b++)
        expect(
          Buffer.from(Wire.digestAt(reply, b)).equals(
            Buffer.from(Wire.blockDigest(image.subarray(b * BLOCK, (b + 1) * BLOCK), algorithm))
          ),
          `${algorithm} block ${b}`
        ).toBe(true)
    }
  }, 240_000)

  it("a receiver without BLAKE3's binary refuses it as unsupported; the filter falls back to SHA-256 and the replica ends whole", async () => {
    const dir = tempDir()
    const receiverDir = path.join(dir, "receiver")
    fs.mkdirSync(receiverDir)
    const receiver = await Proc.start(receiverDir, ["--verify-rate", "0"], {
      node: ["--require", WITHOUT_BLAKE3]
    })
    running.push(receiver)
    await replicate(SETUP, dir, receiver.port, ["--seconds", "1", "--seed", "31"])
    await killedFilter(SETUP, dir, receiver.port)
    const changed = [2, 50]
    changeBlocks(dir, changed, 0x40)
    const { status, stderr } = await replicate(SETUP, dir, receiver.port, ["--compare-from", "1"])
    expect(status).toMatchObject({ mode: "sync", quiescent: true })
    expect(status.checksums).toMatchObject({ compared: BLOCKS, algorithm: "sha256" })
    // The requests that asked BLAKE3 before the first refusal are sent whole: a window at most.
    expect(status.checksums.sent).toBeGreaterThanOrEqual(changed.length)
    expect(status.checksums.sent).toBeLessThanOrEqual(changed.length + WINDOW)
    expect(stderr).toContain("checksum requests ask sha256, not blake3")
    expect(receiver.stderr()).toMatch(/refused: blake3 is not available here/)
    expect(await Proc.restoredEqualsDisk(dir, receiverDir)).toBe(true)
  }, 240_000)

  it("a receiver from before the code (SHA-256 answered, echo 0): the filter falls back to SHA-256 and the replica ends whole", async () => {
    const dir = tempDir()
    const receiverDir = path.join(dir, "receiver")
    fs.mkdirSync(receiverDir)
    const receiver = await Proc.start(receiverDir, ["--verify-rate", "0"])
    running.push(receiver)
    const proxy = await codeZeroProxy(receiver.port)
    try {
      await replicate(SETUP, dir, proxy.port, ["--seconds", "1", "--seed", "7"])
      await killedFilter(SETUP, dir, proxy.port)
      const changed = [11, 44]
      changeBlocks(dir, changed, 0x60)
      const { status, stderr } = await replicate(SETUP, dir, proxy.port, ["--compare-from", "1"])
      expect(status).toMatchObject({ mode: "sync", quiescent: true })
      expect(status.checksums).toMatchObject({ compared: BLOCKS, algorithm: "sha256" })
      // The requests that asked BLAKE3 before the first reply are sent whole: a window at most.
      expect(status.checksums.sent).toBeGreaterThanOrEqual(changed.length)
      expect(status.checksums.sent).toBeLessThanOrEqual(changed.length + WINDOW)
      expect(stderr).toMatch(/answered checksum request \d+ with digest code 0, asked 1/)
      expect(await Proc.restoredEqualsDisk(dir, receiverDir)).toBe(true)
    } finally {
      await proxy.close()
    }
  }, 240_000)
})

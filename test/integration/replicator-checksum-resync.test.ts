/**
 * Checksum-based resync end to end (issue 18): the built CLI's `replicate` and `serve` (a
 * raw image, the file journal and activity log, TCP) against the real receiver process.
 *
 * The disk is replicated, then a filter is SIGKILLed: the next start is unclean and owes
 * what the activity log holds, here the whole disk (one extent). Meanwhile a few blocks
 * change on the disk. With `--compare-from 1` the receiver gets data records for exactly
 * those blocks, the counters say compared / matched / sent, and a restore equals the disk.
 * Then the same with a block damaged in the receiver's log: the receiver refuses to hash
 * it, the filter sends it (with the rest of its request), and the receiver's newest version
 * of every block hashes as the disk's.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import * as Wire from "../../src/protocol/Wire.js"
import { diskDirName, openChain } from "../../src/receiver/internal/chain.js"
import { openPointMap } from "../../src/receiver/internal/point.js"
import { flipByte, readMetaFile } from "../support/receiverDisk.js"
import {
  type FilterSetup,
  filterArgs,
  killedFilter,
  receiverDigests,
  replicate
} from "../support/checksumFilter.js"
import * as Proc from "../support/receiverProcess.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-checksum-resync-")
const running: Array<Proc.ReceiverProcess> = []
afterEach(async () => {
  for (const r of running.splice(0)) await r.kill()
})

const BLOCK = 65536
const BLOCKS = 128
const WINDOW = 4
const SETUP: FilterSetup = { blockSize: BLOCK, blockCount: BLOCKS, window: WINDOW, trace: true }

/** Blocks the filter sent (BlockSent) in the trace lines from `from` on. */
const sentInTrace = (dir: string, from: number) =>
  fs
    .readFileSync(path.join(dir, "trace.jsonl"), "utf8")
    .trim()
    .split("\n")
    .slice(from)
    .map((line) => JSON.parse(line) as { type: string; block?: number })
    .filter((e) => e.type === "BlockSent")
    .map((e) => e.block!)

const traceLength = (dir: string) =>
  fs.readFileSync(path.join(dir, "trace.jsonl"), "utf8").trim().split("\n").length

/** Writes `fill` over `block` of the image, as a write the crashed filter never journaled. */
const changeBlock = (dir: string, block: number, fill: number) => {
  const fd = fs.openSync(path.join(dir, "disk.img"), "r+")
  try {
    fs.writeSync(fd, Buffer.alloc(BLOCK, fill), 0, BLOCK, block * BLOCK)
  } finally {
    fs.closeSync(fd)
  }
}

describe("checksum-based resync against the real receiver (issue 18)", () => {
  it("after an unclean start sends exactly the blocks that differ; a block damaged at the receiver is sent too", async () => {
    const dir = tempDir()
    const receiverDir = path.join(dir, "receiver")
    fs.mkdirSync(receiverDir)
    const receiver = await Proc.start(receiverDir, ["--verify-rate", "0"])
    running.push(receiver)
    // A threshold that is not a positive integer is a usage error.
    const usage = await Proc.run([
      "replicate",
      ...filterArgs(SETUP, dir, receiver.port),
      "--compare-from",
      "0"
    ])
    expect(usage.code).toBe(2)
    expect(usage.stderr).toContain("--compare-from 0: expected a positive integer")

    // The disk replicated: a second of the built-in workload.
    const { status: first } = await replicate(SETUP, dir, receiver.port, ["--seconds", "1", "--seed", "18"])
    expect(first).toMatchObject({ mode: "sync", quiescent: true })
    expect(first.checksums).toEqual({ compared: 0, matched: 0, sent: 0, algorithm: "blake3" })

    // A crash, and writes it never journaled.
    await killedFilter(SETUP, dir, receiver.port)
    const changed = [5, 77, 120]
    for (const b of changed) changeBlock(dir, b, 0xa0 + b)
    let from = traceLength(dir)
    const { status: second } = await replicate(SETUP, dir, receiver.port, ["--compare-from", "1"])
    expect(second).toMatchObject({ mode: "sync", quiescent: true })
    expect(second.checksums).toEqual({
      compared: BLOCKS,
      matched: BLOCKS - changed.length,
      sent: changed.length,
      algorithm: "blake3"
    })
    // The receiver's log after the first run: data records for exactly the changed blocks.
    const log = await Proc.readLog(receiverDir, "vm")
    const data = log.records.filter(
      (r) => r.seq > first.watermark && (r.kind === Wire.Kind.Write || r.kind === Wire.Kind.Block)
    )
    expect(data.map((r) => [r.kind, r.position]).sort((a, b) => a[1]! - b[1]!)).toEqual(
      changed.map((b) => [Wire.Kind.Block, b])
    )
    expect(sentInTrace(dir, from).sort((a, b) => a - b)).toEqual(changed)
    expect(await Proc.restoredEqualsDisk(dir, receiverDir, "after-changes")).toBe(true)

    // A byte of block 33's newest version flipped in the receiver's log; another crash.
    const damaged = 33
    const diskDir = path.join(receiverDir, diskDirName("vm"))
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const map = await openPointMap(chain, chain.lastSeq, false)
    const x = map.extents.find((e) => e.start <= damaged * BLOCK + 100 && e.end > damaged * BLOCK + 100)!
    expect(x, "block 33 lives in a record").toBeDefined()
    flipByte(
      path.join(diskDir, chain.segments[x.segment]!.name),
      x.fileOffset + (damaged * BLOCK + 100 - x.start)
    )
    await killedFilter(SETUP, dir, receiver.port)
    from = traceLength(dir)
    const { status: third } = await replicate(SETUP, dir, receiver.port, ["--compare-from", "1"])
    expect(third).toMatchObject({ mode: "sync", quiescent: true })
    const sent = sentInTrace(dir, from)
    expect(sent).toContain(damaged)
    // Refused requests only: each at most a window of blocks, around the damaged record.
    expect(sent.length).toBeLessThanOrEqual(3 * WINDOW)
    expect(third.checksums).toEqual({
      compared: BLOCKS,
      matched: BLOCKS - sent.length,
      sent: sent.length,
      algorithm: "blake3"
    })
    expect(receiver.stderr()).toMatch(/checksum request \d+ refused/)
    // Its newest version of every block is the disk's now (a restore stops at the damaged
    // record, which is the receiver's to repair): asked as the filter asks.
    const image = fs.readFileSync(path.join(dir, "disk.img"))
    const digests = (await receiverDigests(SETUP, receiver.port, third.watermark, "sha256")).digests
    for (let b = 0; b < BLOCKS; b++)
      expect(
        Buffer.from(digests.subarray(b * Wire.DIGEST_BYTES, (b + 1) * Wire.DIGEST_BYTES)).equals(
          Buffer.from(Wire.blockDigest(image.subarray(b * BLOCK, (b + 1) * BLOCK)))
        ),
        `block ${b}`
      ).toBe(true)
  }, 240_000)
})

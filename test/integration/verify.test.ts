/**
 * Online verify end to end (issue 18), as an operator runs it: a real receiver process,
 * `cdp-sync serve` replicating a disk image full of data to it, and `cdp-sync verify`
 * asking serve's control socket while guest writes go on through NBD. A block of the
 * receiver's data is damaged behind its back, forged with a valid checksum (silently
 * wrong): verify finds exactly that block and nothing else, however the writes race it;
 * with `--resync` it is sent again, a second verify finds nothing, and a restore of the
 * latest point equals the disk. A block whose checksum fails instead (the receiver
 * refuses to vouch for it) is found exactly too, and repaired the same way.
 */
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Control from "../../src/internal/control.js"
import type { FilterDisk } from "../../src/internal/controlProtocol.js"
import * as Nbd from "../../src/nbd/Nbd.js"
import { encodeRecordHeader, Kind, RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import * as ReceiverProcess from "../support/receiverProcess.js"
import { startServe } from "../support/serveProcess.js"

const BLOCK = 16 * 1024
const DISK_BYTES = 4 * 1024 * 1024
const BLOCKS = DISK_BYTES / BLOCK

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

/** Until the filter says it is in sync, link up, nothing dirty or in flight. */
const whole = async (socket: string) => {
  const deadline = Date.now() + 120_000
  for (;;) {
    const reply = await Effect.runPromise(Effect.either(Control.request(socket)))
    const d =
      reply._tag === "Right" && "status" in reply.right
        ? (reply.right.status.disks[0] as FilterDisk)
        : undefined
    if (d !== undefined && d.mode === "sync" && d.link === "up" && d.dirtyBlocks === 0 && d.inFlight === 0)
      return
    if (Date.now() > deadline) throw new Error(`never whole: ${JSON.stringify(reply)}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

const verify = async (socket: string, extra: ReadonlyArray<string> = []) => {
  const r = await ReceiverProcess.run(["verify", "--control", socket, "--json", ...extra], {
    timeoutMs: 120_000
  })
  const json = JSON.parse(r.stdout) as {
    verify: {
      differing: number
      verified: number
      blocks: number
      ranges: Array<{ first: number; count: number }>
      resync: boolean
      unverified: number
      algorithm: string
    }
  }
  return { ...r, report: json.verify }
}

/** The newest `Block` record of each block in the receiver's log: its file and offset. */
const blockRecords = async (receiverDir: string) => {
  const { records } = await ReceiverProcess.readLog(receiverDir, "vm")
  const newest = new Map<number, (typeof records)[number]>()
  for (const r of records) {
    if (r.kind === Kind.Block) newest.set(r.position, r)
    else if (r.kind === Kind.Write)
      // A later write supersedes the block record.
      for (let b = Math.floor(r.position / BLOCK); b <= Math.floor((r.position + r.length - 1) / BLOCK); b++)
        newest.delete(b)
  }
  return newest
}

/** A receiver, and `serve` (with `extra` options) replicating a 4 MiB image of random bytes to it, in sync. */
const setUp = async (extra: ReadonlyArray<string> = []) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-verify-"))
  cleanup.push(async () => fs.rmSync(dir, { recursive: true, force: true }))
  const image = path.join(dir, "disk.img")
  fs.writeFileSync(image, randomBytes(DISK_BYTES))
  const receiverDir = path.join(dir, "receiver")
  const receiver = await ReceiverProcess.start(receiverDir)
  cleanup.push(() => receiver.kill())
  const journal = path.join(dir, "journal")
  const socket = path.join(journal, "control.sock")
  const serve = await startServe(
    [
      ...["--disk", image, "--disk-size", String(DISK_BYTES), "--block-size", String(BLOCK)],
      ...["--receiver", `127.0.0.1:${receiver.port}`, "--journal", journal, "--disk-id", "vm"],
      ...["--export-name", "vm", "--listen", "127.0.0.1:0"],
      ...extra
    ],
    cleanup
  )
  // The image held data before the filter started: a full sync sends it all.
  await whole(socket)
  const diskDir = path.join(receiverDir, "vm")
  /** Damages the newest block record of `block` in the receiver's log: its bytes flipped, its CRC left (or, `forge`, made valid). */
  const damage = async (block: number, forge: boolean) => {
    const r = (await blockRecords(receiverDir)).get(block)
    if (r === undefined) throw new Error(`no block record for block ${block}`)
    const payload = Buffer.from(r.payload)
    payload[100] = payload[100]! ^ 0x40
    const fd = fs.openSync(path.join(diskDir, r.segment), "r+")
    if (forge)
      fs.writeSync(fd, Buffer.concat([encodeRecordHeader(r, payload), payload]), 0, undefined, r.offset)
    else fs.writeSync(fd, payload.subarray(100, 101), 0, 1, r.offset + RECORD_HEADER_BYTES + 100)
    fs.closeSync(fd)
  }
  /** Guest writes through NBD to the lower half of the disk until the returned stop is called. */
  const writeWhile = () => {
    let writing = true
    const done = Effect.runPromise(
      Nbd.withClient({ connect: { host: "127.0.0.1", port: serve.port }, exportName: "vm" }, (client) =>
        Effect.gen(function* () {
          for (let i = 0; writing; i++) {
            yield* client.write(((i * 7) % (BLOCKS / 2)) * BLOCK + (i % 3) * 512, randomBytes(4096))
            if (i % 16 === 0) yield* client.flush
          }
        })
      )
    )
    return async () => {
      writing = false
      await done
      await whole(socket)
    }
  }
  return { dir, image, receiverDir, socket, serve, damage, writeWhile }
}

describe("cdp-sync verify", () => {
  it("finds exactly a block forged at the receiver while writes race it; --resync repairs it; restore equals the disk", async () => {
    const { dir, image, receiverDir, socket, serve, damage, writeWhile } = await setUp()

    // An identical replica: nothing differs. The bundled CLI's digest: BLAKE3, by default.
    const clean = await verify(socket)
    expect(clean.code, clean.stdout).toBe(0)
    expect(clean.report).toMatchObject({
      blocks: BLOCKS,
      verified: BLOCKS,
      differing: 0,
      ranges: [],
      algorithm: "blake3"
    })

    await damage(BLOCKS - 3, true)
    const stop = writeWhile()
    const found = await verify(socket)
    expect(found.code).toBe(1)
    expect(found.report).toMatchObject({
      differing: 1,
      ranges: [{ first: BLOCKS - 3, count: 1 }],
      resync: false
    })
    expect(found.report.verified + found.report.unverified).toBe(BLOCKS)
    const repaired = await verify(socket, ["--resync"])
    expect(repaired.code).toBe(1)
    expect(repaired.report).toMatchObject({
      differing: 1,
      ranges: [{ first: BLOCKS - 3, count: 1 }],
      resync: true
    })
    await stop()
    const after = await verify(socket)
    expect(after.code, after.stdout).toBe(0)
    expect(after.report).toMatchObject({ differing: 0, verified: BLOCKS })

    // The latest point is the disk, byte for byte.
    serve.child.kill("SIGTERM")
    await serve.exited
    const out = path.join(dir, "restored.img")
    const restored = await ReceiverProcess.run([
      "restore",
      "--dir",
      receiverDir,
      "--disk",
      "vm",
      "--at",
      "latest",
      "--out",
      out
    ])
    expect(restored.code, restored.stderr).toBe(0)
    const [got, want] = [fs.readFileSync(out), fs.readFileSync(image)]
    const differ = Array.from({ length: BLOCKS }, (_, b) => b).filter(
      (b) => !got.subarray(b * BLOCK, (b + 1) * BLOCK).equals(want.subarray(b * BLOCK, (b + 1) * BLOCK))
    )
    expect(differ, restored.stdout).toEqual([])
  }, 240_000)

  it("finds exactly a block whose checksum fails at the receiver (refused, narrowed down), and --resync repairs it", async () => {
    // With SHA-256 asked (--digest sha256), as a FIPS shop runs it.
    const { socket, damage, writeWhile } = await setUp(["--digest", "sha256"])
    await damage(BLOCKS - 7, false)
    const stop = writeWhile()
    const found = await verify(socket, ["--resync"])
    expect(found.code).toBe(1)
    expect(found.report).toMatchObject({
      differing: 1,
      ranges: [{ first: BLOCKS - 7, count: 1 }],
      resync: true,
      algorithm: "sha256"
    })
    await stop()
    const after = await verify(socket)
    expect(after.code, after.stdout).toBe(0)
    expect(after.report).toMatchObject({ differing: 0, verified: BLOCKS })
  }, 240_000)

  it("refuses a receiver's endpoint, and usage errors exit 2", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-verify-"))
    cleanup.push(async () => fs.rmSync(dir, { recursive: true, force: true }))
    const receiver = await ReceiverProcess.start(dir)
    cleanup.push(() => receiver.kill())
    const r = await ReceiverProcess.run(["verify", "--control", path.join(dir, "control.sock")])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/does not verify/)
    expect((await ReceiverProcess.run(["verify"])).code).toBe(2)
    expect((await ReceiverProcess.run(["verify", "--control", "a", "--journal", "b"])).code).toBe(2)
    expect((await ReceiverProcess.run(["verify", "--control", "a", "--rate", "lots"])).code).toBe(2)
  }, 60_000)
})

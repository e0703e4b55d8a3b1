/**
 * `cdp-sync restore --out`: never the receiver's own files (anything inside `--dir`,
 * symbolic links resolved), only a regular file or a new path — a block device only with
 * `--force`, written in place, never renamed over. Each refusal exits 1 with one line on
 * stderr, and nothing of the receiver, nor the target, is touched. And a restore where
 * WebAssembly is absent (`node --jitless`: no aligned buffers, so no direct reads) writes the
 * same image.
 */
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  imageAt,
  makeChanges,
  removeTempDirs,
  snapshot,
  tempDir,
  writeDisk
} from "../support/receiverDisk.js"
import * as Proc from "../support/receiverProcess.js"

afterAll(removeTempDirs)

const geometry = { blockSize: 4096, blockCount: 64 }
const diskBytes = geometry.blockSize * geometry.blockCount
const changes = makeChanges(geometry, 50, { seed: 41 })
const latest = imageAt(geometry, changes, 50)

let dir: string
let diskDir: string
let outside: string
beforeAll(async () => {
  dir = tempDir("cdp-restore-out-")
  ;({ diskDir } = await writeDisk(dir, "vm", geometry, changes))
  outside = tempDir("cdp-restore-out-elsewhere-")
})

const isRoot = process.getuid?.() === 0
const mknod = (file: string, type: "b" | "c", major: number, minor: number): boolean => {
  try {
    execFileSync("mknod", [file, type, String(major), String(minor)], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

const restore = (out: string, extra: ReadonlyArray<string> = []) =>
  Proc.run(["restore", "--dir", dir, "--disk", "vm", "--at", "latest", "--out", out, ...extra])

/** Refused: exit 1, one line naming `--out`, the receiver's files untouched. */
const expectRefused = async (out: string, reason: RegExp, extra: ReadonlyArray<string> = []) => {
  const receiverBefore = snapshot(diskDir)
  const dirBefore = fs.readdirSync(dir).sort()
  const result = await restore(out, extra)
  expect(result.code, result.stderr).toBe(1)
  expect(result.stdout).toBe("")
  const lines = result.stderr.trim().split("\n")
  expect(lines).toHaveLength(1)
  expect(lines[0]).toMatch(/^cdp-sync restore: --out /)
  expect(lines[0]).toMatch(reason)
  expect(snapshot(diskDir)).toEqual(receiverBefore)
  expect(fs.readdirSync(dir).sort()).toEqual(dirBefore)
}

describe("restore --out", () => {
  it("writes a regular file, new or replaced", async () => {
    const out = path.join(outside, "vm.img")
    fs.writeFileSync(out, "an older image")
    const result = await restore(out)
    expect(result.code, result.stderr).toBe(0)
    expect(fs.readFileSync(out).equals(latest)).toBe(true)
  })

  it("refuses the receiver's own files and any path inside the receiver directory", async () => {
    await expectRefused(path.join(diskDir, "base.img"), /is inside the receiver directory/)
    await expectRefused(path.join(diskDir, "0000000000000001.seg"), /is inside the receiver directory/)
    await expectRefused(path.join(dir, "restored.img"), /is inside the receiver directory/)
    await expectRefused(path.join(diskDir, "..", "vm", "disk.json"), /is inside the receiver directory/)
    // …also through symbolic links, to the file or to a directory on the way.
    const link = path.join(outside, "link.img")
    fs.symlinkSync(path.join(diskDir, "base.img"), link)
    await expectRefused(link, /is inside the receiver directory/)
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true)
    const dirLink = path.join(outside, "dir-link")
    fs.symlinkSync(dir, dirLink)
    await expectRefused(path.join(dirLink, "new.img"), /is inside the receiver directory/)
  })

  it("refuses a FIFO, a directory, a missing directory and a dangling link, and leaves them as they were", async () => {
    const fifo = path.join(outside, "fifo")
    execFileSync("mkfifo", [fifo])
    await expectRefused(fifo, /is a FIFO/)
    expect(fs.lstatSync(fifo).isFIFO()).toBe(true)
    await expectRefused(fifo, /is a FIFO/, ["--force"])
    expect(fs.lstatSync(fifo).isFIFO()).toBe(true)
    await expectRefused(outside, /is a directory/)
    await expectRefused(path.join(outside, "no-such-dir", "vm.img"), /its directory does not exist/)
    fs.writeFileSync(path.join(outside, "a-file"), "")
    await expectRefused(path.join(outside, "a-file", "vm.img"), /a part of its path is not a directory/)
    const dangling = path.join(outside, "dangling")
    fs.symlinkSync(path.join(outside, "nothing-here"), dangling)
    await expectRefused(dangling, /a symbolic link to nothing/)
    expect(fs.readdirSync(outside).filter((n) => n.includes(".tmp-"))).toEqual([])
  })

  it.skipIf(!isRoot)(
    "refuses a character device, even with --force (as root: /dev/full was renamed over)",
    async () => {
      const full = path.join(outside, "full")
      if (!mknod(full, "c", 1, 7)) return
      await expectRefused(full, /is a character device/)
      await expectRefused(full, /is a character device/, ["--force"])
      expect(fs.lstatSync(full).isCharacterDevice()).toBe(true)
    }
  )

  it.skipIf(!isRoot)("refuses a block device without --force", async () => {
    // A node for a loop device nobody attached: never opened, only looked at.
    const node = path.join(outside, "blk")
    if (!mknod(node, "b", 7, 250)) return
    await expectRefused(node, /is a block device: pass --force to write the image into it in place/)
    expect(fs.lstatSync(node).isBlockDevice()).toBe(true)
  })

  it.skipIf(!isRoot)(
    "with --force writes into a block device in place, every byte of the image",
    async () => {
      const backing = path.join(outside, "loop-backing.img")
      // Larger than the image and full of old data: the image's holes must be written too.
      fs.writeFileSync(backing, Buffer.alloc(diskBytes * 2, 0xab))
      let device: string
      try {
        device = execFileSync("losetup", ["--find", "--show", backing], { encoding: "utf8" }).trim()
      } catch {
        return // no loop devices here
      }
      try {
        const result = await restore(device, ["--force"])
        expect(result.code, result.stderr).toBe(0)
        expect(result.stdout).toMatch(new RegExp(`${diskBytes} bytes to ${device}`))
        expect(fs.lstatSync(device).isBlockDevice()).toBe(true)
      } finally {
        execFileSync("losetup", ["--detach", device])
      }
      const written = fs.readFileSync(backing)
      expect(written.subarray(0, diskBytes).equals(latest)).toBe(true)
      expect(written.subarray(diskBytes).equals(Buffer.alloc(diskBytes, 0xab))).toBe(true)
    }
  )
})

describe("restore without WebAssembly", () => {
  it("node --jitless (no aligned buffers: every read through the page cache) writes the same image", async () => {
    const out = path.join(outside, "jitless.img")
    const r = spawnSync(
      process.execPath,
      ["--jitless", ...(await Proc.entry()), "restore", "--dir", dir, "--at", "latest", "--out", out],
      { encoding: "utf8", timeout: 120_000 }
    )
    expect(r.status, r.stderr).toBe(0)
    expect(fs.readFileSync(out).equals(latest)).toBe(true)
  }, 150_000)
})

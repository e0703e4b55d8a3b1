/**
 * Issue 17: `cdp-sync mount --overlay FILE` with QEMU's tools. Writes through the export
 * (whole clusters and a 512-byte piece of one) read back; the rest of a partly written
 * cluster still reads as the point; a second mount with the same overlay sees them; a mount
 * without it serves the point untouched; and every file of the receiver directory is byte
 * for byte what it was. An overlay made for another point, or placed inside the receiver
 * directory, is refused.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { openChain } from "../../src/receiver/internal/chain.js"
import { replayPoint } from "../../src/receiver/internal/replay.js"
import * as Mount from "../../src/receiver/Mount.js"
import { mountCli, mountCliToExit as runCli } from "../support/mount.js"
import { mustRun, runTool } from "../support/nbdExport.js"
import { diskId, meta, writeLog } from "../support/receiverLog.js"
import { tempDirs } from "../support/tempDirs.js"
import { need } from "../support/tools.js"

const tempDir = tempDirs("cdp-mount-overlay-", "each")

/** Every file under `dir` and the SHA-256 of its bytes. */
const fingerprint = async (dir: string): Promise<Record<string, string>> => {
  const out: Record<string, string> = {}
  for (const entry of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const file = path.join(entry.parentPath, entry.name)
    out[path.relative(dir, file)] = createHash("sha256")
      .update(await fs.readFile(file))
      .digest("hex")
  }
  return out
}

describe("a writable mount through an overlay (issue 17)", () => {
  it("writes read back, survive a remount, never reach the receiver's files; a mount without the overlay serves the point", async (ctx) => {
    const t = need(ctx, "qemu-io", "nbdcopy")
    const dir = tempDir()
    const out = tempDir()
    const diskDir = await writeLog(dir)
    const chain = await openChain(diskDir, meta(diskDir), "read")
    const point = path.join(out, "point.img")
    await replayPoint(chain, chain.lastSeq, { _tag: "File", path: point })
    const image = await fs.readFile(point)
    // A first read-only open writes the block indexes a mount rebuilds (caches beside the
    // segments); from then on nothing in the directory may change.
    await Effect.runPromise(Effect.scoped(Mount.open({ dir, diskId, at: "latest" })))
    const before = await fingerprint(dir)
    const overlay = path.join(out, "vm.overlay")
    const args = ["--dir", dir, "--disk", diskId, "--at", "latest", "--listen", "127.0.0.1:0"]

    const first = await mountCli([...args, "--overlay", overlay])
    try {
      expect(first.stderr()).toMatch(/writes to the overlay/)
      await mustRun(t["qemu-io"], [
        "-f",
        "raw",
        "-c",
        "write -P 0xaa 8192 8192",
        "-c",
        "write -P 0xbb 512 512",
        "-c",
        "flush",
        "-c",
        "read -P 0xaa 8192 8192",
        "-c",
        "read -P 0xbb 512 512",
        first.uri
      ])
    } finally {
      expect((await first.stop()).code).toBe(0)
    }
    const expected = Buffer.from(image)
    expected.fill(0xaa, 8192, 16384)
    expected.fill(0xbb, 512, 1024)

    const second = await mountCli([...args, "--overlay", overlay, "--json"])
    try {
      expect(JSON.parse(second.line)).toMatchObject({ diskId, overlay })
      const copied = path.join(out, "copied.img")
      await mustRun(t.nbdcopy, [second.uri, copied])
      // Cluster 0 was written only at 512..1023: the rest of it is still the point's.
      expect((await fs.readFile(copied)).equals(expected)).toBe(true)
    } finally {
      expect((await second.stop()).code).toBe(0)
    }

    const plain = await mountCli(args)
    try {
      const copied = path.join(out, "plain.img")
      await mustRun(t.nbdcopy, [plain.uri, copied])
      expect((await fs.readFile(copied)).equals(image)).toBe(true)
      // Read-only without an overlay: a write is refused.
      const refused = await runTool(t["qemu-io"], ["-f", "raw", "-c", "write -P 0xcc 0 4096", plain.uri])
      expect(refused.code).not.toBe(0)
    } finally {
      expect((await plain.stop()).code).toBe(0)
    }
    expect(await fingerprint(dir)).toEqual(before)
  })

  it("an overlay made for another point, or inside the receiver directory, is refused and left as it is", async () => {
    const dir = tempDir()
    const out = tempDir()
    await writeLog(dir)
    const overlay = path.join(out, "vm.overlay")
    const latest = await mountCli([
      "--dir",
      dir,
      "--at",
      "latest",
      "--listen",
      "127.0.0.1:0",
      "--overlay",
      overlay
    ])
    expect((await latest.stop()).code).toBe(0)
    const made = await fs.readFile(overlay)
    const other = await runCli([
      "--dir",
      dir,
      "--at",
      "8",
      "--socket",
      path.join(out, "s"),
      "--overlay",
      overlay,
      "--json"
    ])
    expect(other.code).toBe(1)
    expect(JSON.parse(other.stdout)).toMatchObject({ error: { _tag: "OverlayRefused" } })
    expect(other.stdout).toMatch(/other-point/)
    expect((await fs.readFile(overlay)).equals(made)).toBe(true)
    const inside = await runCli([
      "--dir",
      dir,
      "--at",
      "latest",
      "--socket",
      path.join(out, "s"),
      "--overlay",
      path.join(dir, "vm.overlay")
    ])
    expect(inside.code).toBe(1)
    expect(inside.stderr).toMatch(/inside the receiver directory/)
    await expect(fs.stat(path.join(dir, "vm.overlay"))).rejects.toThrow()
  })
})

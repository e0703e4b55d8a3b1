/**
 * Issue 17: `cdp-sync mount` against the standard tools. `qemu-img compare` finds a mounted
 * point identical to the image the record-by-record replay (the oracle) restores, at the
 * oldest point, a write, the end of a resync and the latest, and over a folded base — and
 * finds the difference when the block index keeps the oldest version of each range (mutant). After a quiesced
 * `serve`, the mounted latest point is the filter's disk image, and `nbdcopy` of the mount
 * is byte for byte what `restore` writes.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { openChain } from "../../src/receiver/internal/chain.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import { replayPoint } from "../../src/receiver/internal/replay.js"
import * as Restore from "../../src/receiver/Restore.js"
import { mountCli, withMount } from "../support/mount.js"
import {
  firstDifference,
  MiB,
  mustRun,
  type NbdExport,
  runTool,
  serve,
  serverUnderTest,
  stopAndCompareReplica
} from "../support/nbdExport.js"
import { imageAt, makeChanges, readMetaFile, writeDisk } from "../support/receiverDisk.js"
import { diskId, meta, writeLog } from "../support/receiverLog.js"
import { tempDirs } from "../support/tempDirs.js"
import { need } from "../support/tools.js"

const tempDir = tempDirs("cdp-mount-interop-", "each")
const geometry = { blockSize: 4096, blockCount: 16 }

let exp: NbdExport | undefined
afterEach(async () => {
  ReceiverMutants.blockIndexKeepsOldest = false
  await exp?.dispose()
  exp = undefined
})

/** `qemu-img compare` of a raw image with an export: 0 identical, 1 different. */
const compare = async (qemuImg: string, image: string, uri: string) => {
  const r = await runTool(qemuImg, ["compare", "-f", "raw", "-F", "raw", image, uri])
  if (r.code !== 0 && r.code !== 1) throw new Error(`qemu-img compare failed: ${r.stdout}${r.stderr}`)
  return r.code
}

describe("a mounted recovery point (issue 17)", () => {
  it("qemu-img compare: identical to the record-by-record replay at the oldest, a write, after a resync and the latest", async (ctx) => {
    const t = need(ctx, "qemu-img")
    const dir = tempDir()
    const out = tempDir()
    const diskDir = await writeLog(dir)
    const chain = await openChain(diskDir, meta(diskDir), "read")
    // 0: the empty base; 1: the first write; 8: the last before the resync; 14: its end; 24: the latest.
    for (const seq of [0, 1, 8, 14, 24]) {
      const replayed = path.join(out, `replay-${seq}.img`)
      await replayPoint(chain, seq, { _tag: "File", path: replayed })
      const at = seq === 24 ? "latest" : seq
      const code = await withMount({ dir, diskId, at, socketDir: out }, async (uri, mounted) => {
        expect(mounted.point.seq).toBe(seq)
        return compare(t["qemu-img"], replayed, uri)
      })
      expect(code, `qemu-img compare at seq ${seq}`).toBe(0)
    }
  })

  it("qemu-img compare: identical to the replay over a folded base (overlapping writes); a block index keeping the oldest versions is caught", async (ctx) => {
    const t = need(ctx, "qemu-img")
    const dir = tempDir()
    const out = tempDir()
    // Writes inside the first 16 KiB: most overlap earlier ones.
    const changes = makeChanges(geometry, 80, { seed: 17, limit: 16_384 })
    const { diskDir, baseSeq, lastSeq } = await writeDisk(dir, "vm", geometry, changes, {
      fold: "mid-segment"
    })
    expect(baseSeq).toBeGreaterThan(0)
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const middle = Math.round((baseSeq + lastSeq) / 2)
    for (const seq of [baseSeq, middle, lastSeq]) {
      const replayed = path.join(out, `replay-${seq}.img`)
      await replayPoint(chain, seq, { _tag: "File", path: replayed })
      expect((await fs.readFile(replayed)).equals(imageAt(geometry, changes, seq))).toBe(true)
      const code = await withMount({ dir, at: seq, socketDir: out }, (uri) =>
        compare(t["qemu-img"], replayed, uri)
      )
      expect(code, `qemu-img compare at seq ${seq}`).toBe(0)
    }
    // The compare can fail: a block index that keeps the oldest version of a range (the
    // segments' `.bix` rebuilt by it) serves other bytes.
    for (const name of await fs.readdir(diskDir))
      if (name.endsWith(".bix")) await fs.rm(path.join(diskDir, name))
    ReceiverMutants.blockIndexKeepsOldest = true
    const code = await withMount({ dir, at: lastSeq, socketDir: out }, (uri) =>
      compare(t["qemu-img"], path.join(out, `replay-${lastSeq}.img`), uri)
    )
    expect(code).toBe(1)
  })

  it("after a quiesced serve, the mounted latest point is the disk image; nbdcopy of the mount equals restore", async (ctx) => {
    const t = need(ctx, "qemu-img", "qemu-io", "nbdcopy")
    if (serverUnderTest() !== "cdp-sync") ctx.skip("mount reads a cdp-sync receiver")
    const size = 4 * MiB
    exp = await serve({ size, diskId: "vm1" })
    await mustRun(t["qemu-io"], [
      "-f",
      "raw",
      "-c",
      "write -P 0x11 0 1M",
      "-c",
      "write -P 0x22 512k 8k",
      "-c",
      "write -z 768k 64k",
      "-c",
      "write -P 0x33 4092k 4k",
      "-c",
      "flush",
      exp.uri
    ])
    await stopAndCompareReplica(exp)
    // The receiver still runs: the mount opens the chain read-only beside it.
    const mount = await mountCli(["--dir", exp.receiverDir, "--at", "latest", "--listen", "127.0.0.1:0"])
    try {
      expect(mount.line).toMatch(/^listening nbd:\/\/127\.0\.0\.1:\d+\/vm1$/)
      expect(mount.stderr()).toMatch(/mounted disk vm1 at seq \d+ \(received \d{4}-/)
      expect(await compare(t["qemu-img"], exp.image, mount.uri)).toBe(0)
      const copied = path.join(exp.dir, "copied.img")
      await mustRun(t.nbdcopy, [mount.uri, copied])
      const seq = Number(/at seq (\d+)/.exec(mount.stderr())![1])
      const restored = path.join(exp.dir, "restored-at.img")
      await Effect.runPromise(Restore.restore({ dir: exp.receiverDir, at: seq, out: restored }))
      const [a, b] = [await fs.readFile(copied), await fs.readFile(restored)]
      expect(a.length).toBe(size)
      expect(firstDifference(a, b)).toBe(-1)
      expect(firstDifference(a, await fs.readFile(exp.image))).toBe(-1)
    } finally {
      expect(await mount.stop()).toEqual({ code: 0, signal: null })
    }
  })
})

/**
 * qemu-img writes a real ext4 file system image onto the export (`convert -n`, which
 * turns the image's zero runs into WRITE_ZEROES over a disk first filled with a pattern),
 * compares it through NBD, and after SIGTERM the latest recovery point restored from the
 * receiver equals the image and checks clean with e2fsck.
 */
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { afterEach, expect, it } from "vitest"
import { MiB, mustRun, type NbdExport, runTool, serve, stopAndCompareReplica } from "../support/nbdExport.js"
import { need } from "../support/tools.js"

const SIZE = 32 * MiB
let exp: NbdExport | undefined
afterEach(async () => {
  await exp?.dispose()
  exp = undefined
})

it("qemu-img converts an ext4 image onto the export and compares it; the replica is that file system", async (ctx) => {
  const t = need(ctx, "qemu-img", "qemu-io", "mke2fs")
  exp = await serve({ size: SIZE })
  const { dir, uri } = exp
  // A populated tree: files from 1 byte to 3 MiB, a nested directory, a symbolic link.
  const tree = path.join(dir, "tree")
  await fs.mkdir(path.join(tree, "nested/deeper"), { recursive: true })
  for (const [i, bytes] of [1, 4095, 4096, 70_000, 1 * MiB + 17, 3 * MiB].entries())
    await fs.writeFile(path.join(tree, i % 2 === 0 ? "." : "nested/deeper", `file-${i}`), randomBytes(bytes))
  await fs.symlink("nested/deeper/file-1", path.join(tree, "link"))
  const fsImage = path.join(dir, "fs.img")
  await mustRun(t.mke2fs, ["-q", "-F", "-t", "ext4", "-b", "4096", "-d", tree, fsImage, `${SIZE / 1024}k`])

  // The disk starts full of a pattern, so the file system's zeros must really be written.
  await mustRun(t["qemu-io"], ["-f", "raw", "-c", `write -P 0xa5 0 ${SIZE}`, uri])
  await mustRun(t["qemu-img"], ["convert", "-n", "-f", "raw", "-O", "raw", fsImage, uri])
  const same = await runTool(t["qemu-img"], ["compare", "-f", "raw", "-F", "raw", fsImage, uri])
  expect(same.stdout + same.stderr).toMatch(/Images are identical/)
  expect(same.code).toBe(0)
  // And a compare that can fail: the export differs from the pattern-filled disk it was.
  const pattern = path.join(dir, "pattern.img")
  await fs.writeFile(pattern, Buffer.alloc(SIZE, 0xa5))
  expect((await runTool(t["qemu-img"], ["compare", "-f", "raw", "-F", "raw", pattern, uri])).code).toBe(1)

  const image = await stopAndCompareReplica(exp)
  expect(image.equals(await fs.readFile(fsImage))).toBe(true)
  if (exp.server === "cdp-sync") {
    const e2fsck = path.join(path.dirname(t.mke2fs), "e2fsck")
    const check = await runTool(e2fsck, ["-f", "-n", path.join(dir, "restored.img")])
    expect(check.code, check.stdout + check.stderr).toBe(0)
  }
})

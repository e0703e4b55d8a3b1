/**
 * Issue 17: an overlay whose process is killed (SIGKILL) while it writes and flushes. While
 * the writer runs, opening the overlay here is refused (its `FILE.lock`, naming the writer's
 * pid); once it is killed, the stale lock is taken over, the file reopens, every round up to
 * the last flush it reported is there, and every 512-byte sector reads as that state or as a
 * write of a later round (test/support/overlayWriter.mjs).
 */
import { spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import { describe, expect, it } from "vitest"
import { openOverlay } from "../../src/receiver/internal/overlay.js"
import { OverlayRefused } from "../../src/receiver/internal/overlayFormat.js"
import { pointByte, roundWrites } from "../support/overlayWriter.mjs"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-overlay-kill-")
const WRITER = path.resolve(import.meta.dirname, "../support/overlayWriter.mjs")

describe("an overlay killed while it writes", () => {
  it("reopens with every flushed round, and each sector as flushed or as a later write", async () => {
    const id = { diskId: "vm-kill", diskBytes: 64 * 4096, seq: 9, pointTime: 1_700_000_000_000 }
    const file = path.join(tempDir(), "disk.overlay")
    const child = spawn(process.execPath, [WRITER, JSON.stringify({ file, ...id })], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    const lines = readline.createInterface({ input: child.stdout! })
    let flushed = 0
    let refusal: unknown
    const exited = new Promise((resolve) => child.once("exit", resolve))
    for await (const line of lines) {
      if (line === "ready")
        refusal = await openOverlay(file, id).then(
          (o) => o.close().then(() => "opened"),
          (e: unknown) => e
        )
      const m = /^flushed (\d+)$/.exec(line)
      if (m !== null) flushed = Number(m[1])
      if (flushed >= 40) {
        child.kill("SIGKILL")
        break
      }
    }
    await exited
    expect(refusal).toBeInstanceOf(OverlayRefused)
    expect((refusal as OverlayRefused).reason).toBe("locked")
    expect((refusal as OverlayRefused).detail).toContain(`pid ${child.pid}`)

    // The disk after round `flushed`, and what later rounds (the writer went on for a while) wrote.
    const must = Buffer.from(Array.from({ length: id.diskBytes }, (_, i) => pointByte(i)))
    for (let r = 1; r <= flushed; r++)
      for (const w of roundWrites(r, id.diskBytes)) w.bytes.copy(must, w.offset)
    const later = new Map<number, Array<Buffer>>()
    for (let r = flushed + 1; r <= flushed + 20_000; r++)
      for (const w of roundWrites(r, id.diskBytes))
        for (let at = 0; at < w.bytes.length; at += 512) {
          const list = later.get(w.offset + at) ?? []
          list.push(w.bytes.subarray(at, at + 512))
          later.set(w.offset + at, list)
        }

    const overlay = await openOverlay(file, id)
    try {
      const disk = Buffer.from(
        await overlay.read(0, id.diskBytes, async (offset, length) =>
          Buffer.from(Array.from({ length }, (_, i) => pointByte(offset + i)))
        )
      )
      for (let s = 0; s < id.diskBytes; s += 512) {
        const got = disk.subarray(s, s + 512)
        const ok = got.equals(must.subarray(s, s + 512)) || (later.get(s) ?? []).some((b) => b.equals(got))
        expect(ok, `sector at byte ${s} after round ${flushed}`).toBe(true)
      }
    } finally {
      await overlay.close()
    }
  })
})

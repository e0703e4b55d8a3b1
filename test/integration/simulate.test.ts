/**
 * `cdp-sync simulate --json`: the whole system as a newcomer runs it, read by a program.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const CLI = path.resolve(import.meta.dirname, "../../dist/programs/main.js")
const run = promisify(execFile)

describe("cdp-sync simulate", () => {
  it("--json prints one JSON object with the verdict and the paths to check by hand", async () => {
    const keep = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-simulate-test-"))
    try {
      const { stdout } = await run(
        process.execPath,
        [
          CLI,
          "simulate",
          "--seconds",
          "5",
          "--faults",
          "chaos",
          "--seed",
          "3",
          "--disk-size",
          "32MiB",
          "--json",
          "--keep",
          keep
        ],
        { maxBuffer: 1 << 20 }
      )
      const report = JSON.parse(stdout)
      expect(report).toMatchObject({
        verdict: "match",
        diskImage: path.join(keep, "disk.img"),
        receiverDir: path.join(keep, "receiver")
      })
      expect(report.writes).toBeGreaterThan(0)
      expect(report.bytes).toBeGreaterThan(0)
      expect(report.recoveryPoints).toBeGreaterThan(0)
      expect(typeof report.modeChanges).toBe("object")
      expect(Object.values(report.faults).reduce((a: number, b) => a + (b as number), 0)).toBeGreaterThan(0)
      expect(report.diskSha256).toMatch(/^[0-9a-f]{64}$/)
      expect(report.replicaSha256).toBe(report.diskSha256)
      await fs.access(report.diskImage)
    } finally {
      await fs.rm(keep, { recursive: true, force: true })
    }
  })
})

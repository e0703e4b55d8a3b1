/**
 * Every size option of the built CLI reads the one size grammar (README "Sizes"):
 * `--segment-bytes 64m` is accepted like `--disk-size 64m`; a bad size is a usage error
 * (exit 2) naming the option, whichever command takes it.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import * as Proc from "../support/receiverProcess.js"

const tempDir = tempDirs("cdp-sizes-")

describe("size options", () => {
  it("the receiver takes 64m, 32MiB and 8m for its sizes", async () => {
    const receiver = await Proc.start(tempDir(), [
      "--segment-bytes",
      "64m",
      "--max-frame-bytes",
      "32MiB",
      "--verify-rate",
      "8m"
    ])
    await receiver.kill()
  })

  it("the model takes 4k blocks and a 1m congestion limit", async () => {
    const run = await Proc.run([
      "model",
      "--steps",
      "200",
      "--block-size",
      "4k",
      "--congestion-limit",
      "1m",
      "--json"
    ])
    expect(run.stderr).toBe("")
    expect(run.code).toBe(0)
    expect(JSON.parse(run.stdout)).toMatchObject({ options: { blockSize: 4096, congestionLimit: 2 ** 20 } })
  })

  it("a bad size is a usage error naming the option, for every command", async () => {
    const dir = tempDir()
    // An unreachable receiver: a size the parser let through would make replicate retry it, so each run is capped.
    const replicate = ["replicate", "--disk", path.join(dir, "d.img"), "--receiver", "127.0.0.1:1"]
    for (const [args, option, value] of [
      [["receiver", "--dir", dir, "--port", "0", "--segment-bytes", "1.5"], "--segment-bytes", "1.5"],
      [["receiver", "--dir", dir, "--port", "0", "--max-frame-bytes", "0"], "--max-frame-bytes", "0"],
      [[...replicate, "--journal", dir, "--drain-rate", "lots"], "--drain-rate", "lots"],
      [[...replicate, "--journal", dir, "--disk-size", "-64m"], "--disk-size", "-64m"],
      [["simulate", "--disk-size", `${2 ** 53}`], "--disk-size", `${2 ** 53}`],
      [["model", "--block-size", "4x"], "--block-size", "4x"]
    ] as const) {
      const run = await Proc.run(args, { timeoutMs: 30_000 })
      expect(run.code, args.join(" ")).toBe(2)
      expect(run.stderr).toContain(`${option} ${JSON.stringify(value)}: `)
      expect(run.stdout).not.toMatch(/listening/)
    }
    expect(fs.existsSync(path.join(dir, "d.img"))).toBe(false)
  })
})

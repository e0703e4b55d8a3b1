/**
 * Issue 17 through the built CLI: `points --at` takes the forms `restore --at` does and
 * refuses the same way (exit 1, the nearest points named; `--json`: `{"error":{…}}` on
 * stdout); `restore --json` keeps its result the one JSON object on stdout and writes its
 * progress to stderr as JSON lines, every one of them parseable, a final one per phase.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { blockIndexName } from "../../src/receiver/internal/blockIndex.js"
import * as Proc from "../support/receiverProcess.js"
import { diskId, imageAt, lastSeq, segmentFiles, writeLog } from "../support/receiverLog.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-receiver-points-at-")

interface Listed {
  readonly disks: ReadonlyArray<{
    readonly diskId: string
    readonly points: ReadonlyArray<{ readonly seq: number; readonly time: number; readonly kind: string }>
  }>
}

let dir: string
let diskDir: string
let all: Listed["disks"][number]["points"]

beforeAll(async () => {
  dir = tempDir()
  diskDir = await writeLog(dir)
  const listed = await Proc.run(["points", "--dir", dir, "--json"])
  expect(listed.code, listed.stderr).toBe(0)
  all = (JSON.parse(listed.stdout) as Listed).disks[0]!.points
})

const points = (...args: ReadonlyArray<string>) =>
  Proc.run(["points", "--dir", dir, "--disk", diskId, ...args])

describe("cdp-sync points --at", () => {
  it("a seq, latest, an ISO 8601 time: only the point it names, as text and as JSON", async () => {
    const bySeq = await points("--at", "14", "--json")
    expect(bySeq.code, bySeq.stderr).toBe(0)
    expect((JSON.parse(bySeq.stdout) as Listed).disks[0]!.points).toEqual([all.find((p) => p.seq === 14)])
    const latest = await points("--at", "latest")
    expect(latest.code, latest.stderr).toBe(0)
    expect(latest.stdout).toMatch(new RegExp(`disk ${diskId}: .*; the recovery point asked for`))
    const rows = latest.stdout.split("\n").filter((l) => /^\s+\d+\s/.test(l))
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatch(new RegExp(`^\\s+${lastSeq}\\s+\\S+\\s+write$`))
    // By time: the newest point received at or before it.
    const t = all.find((p) => p.seq === 14)!.time
    const byTime = await points("--at", new Date(t).toISOString(), "--json")
    expect(byTime.code, byTime.stderr).toBe(0)
    const [picked] = (JSON.parse(byTime.stdout) as Listed).disks[0]!.points
    expect(picked).toEqual(all.filter((p) => p.time > 0 && p.time <= t).at(-1))
    expect(picked!.seq).toBeGreaterThanOrEqual(14)
  })

  it("a seq that is no point and a time before the oldest are refused (exit 1) naming the nearest points; a bad form is a usage error", async () => {
    const inside = await points("--at", "10")
    expect(inside.code).toBe(1)
    expect(inside.stdout).toBe("")
    expect(inside.stderr).toMatch(
      /cdp-sync points: seq 10 is not a recovery point of disk vm-damage: .*resync.*; nearest recovery points: 8 \(before\), 14 \(after\)/
    )
    const insideJson = await points("--at", "10", "--json")
    expect(insideJson.code).toBe(1)
    expect(JSON.parse(insideJson.stdout)).toEqual({
      error: {
        _tag: "NotARecoveryPoint",
        message: expect.stringMatching(/nearest recovery points: 8 \(before\), 14 \(after\)/)
      }
    })
    const oldest = all.find((p) => p.time > 0)!
    const early = await points("--at", new Date(oldest.time - 1000).toISOString(), "--json")
    expect(early.code).toBe(1)
    expect(JSON.parse(early.stdout)).toEqual({
      error: {
        _tag: "NoRecoveryPointAt",
        message: expect.stringContaining(`nearest recovery points: ${oldest.seq} (after)`)
      }
    })
    const relative = await points("--at", "-1w")
    expect(relative.code).toBe(1)
    expect(relative.stderr).toMatch(
      /cdp-sync points: no recovery point of disk vm-damage at or before .*--at -1w/
    )
    const bad = await points("--at", "soon")
    expect(bad.code).toBe(2)
    expect(bad.stdout).toBe("")
    expect(bad.stderr).toMatch(/expected a seq, "latest"/)
  })
})

describe("cdp-sync restore --json: progress as JSON lines on stderr", () => {
  it("every stderr line is a JSON progress line, each phase ends with a final one; the result is the one JSON object on stdout", async () => {
    // One block index missing: opening the point rebuilds it, as restore does.
    fs.rmSync(blockIndexName(segmentFiles(diskDir)[1]!))
    const out = path.join(tempDir(), "latest.img")
    const run = await Proc.run(["restore", "--dir", dir, "--at", "latest", "--out", out, "--json"])
    expect(run.code, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout)
    expect(result).toMatchObject({ diskId, seq: lastSeq, out })
    expect(fs.readFileSync(out).equals(imageAt(lastSeq))).toBe(true)
    const lines = run.stderr.split("\n").filter((l) => l !== "")
    const progress = lines.map((l) => JSON.parse(l).progress)
    for (const p of progress)
      expect(p).toEqual({
        phase: expect.stringMatching(/^(indexing|writing|syncing)$/),
        bytes: expect.any(Number),
        total: expect.any(Number),
        bytesPerSecond: expect.any(Number),
        etaSeconds: p.final || p.etaSeconds !== null ? expect.any(Number) : null,
        elapsedSeconds: expect.any(Number),
        final: expect.any(Boolean)
      })
    const finals = progress.filter((p) => p.final)
    expect(finals.map((p) => p.phase)).toEqual(["indexing", "writing", "syncing"])
    for (const p of finals) expect(p.bytes).toBe(p.total)
    // Indexing: the three sealed segments; writing: the image, each byte counted once.
    const sealed = segmentFiles(diskDir)
      .slice(0, -1)
      .reduce((n, f) => n + fs.statSync(f).size, 0)
    expect(finals[0]!.total).toBe(sealed)
    expect(finals[1]!.total).toBe(result.bytes)
    expect(finals[2]!.total).toBe(result.bytes)
    expect(fs.existsSync(blockIndexName(segmentFiles(diskDir)[1]!))).toBe(true)
  })

  it("without --json, a short restore stays quiet on stderr", async () => {
    const out = path.join(tempDir(), "quiet.img")
    const run = await Proc.run(["restore", "--dir", dir, "--at", "14", "--out", out])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toBe("")
    expect(run.stdout).toMatch(/^restored disk vm-damage at seq 14 /)
  })
})

/**
 * `cdp-sync scrub` as operators run it (the built CLI): what it prints and its exit codes
 * (0 clean, 1 damage, 2 usage), and beside a running receiver whose segments roll and whose
 * retention folds them meanwhile: no lock taken, no false damage, the receiver unaffected.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import { RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import * as Restore from "../../src/receiver/Restore.js"
import * as Scrub from "../../src/receiver/Scrub.js"
import * as Proc from "../support/receiverProcess.js"
import { diskId, flip, locate, writeLog } from "../support/receiverLog.js"

const tempDir = tempDirs("cdp-receiver-scrub-")

describe("cdp-sync scrub", () => {
  it("a clean directory: what was checked on stdout, exit 0; damage: each one named, exit 1", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const clean = await Proc.run(["scrub", "--dir", dir])
    expect(clean.code).toBe(0)
    expect(clean.stdout).toMatch(
      new RegExp(
        `disk ${diskId} \\(.*\\): clean; checked 9 files: 4 segments \\(24 records, \\d+ bytes\\), 3 indexes`
      )
    )
    expect(clean.stdout).toMatch(/scrub: no damage/)
    const json = await Proc.run(["scrub", "--dir", dir, "--disk", diskId, "--json"])
    expect(json.code).toBe(0)
    expect(JSON.parse(json.stdout)).toMatchObject({
      clean: true,
      disks: [{ diskId, checked: { segments: 4, records: 24, indexes: 3 }, damage: [], notes: [] }]
    })

    const r = locate(diskDir, 6)
    flip(r.file, r.offset + RECORD_HEADER_BYTES + 1)
    const damaged = await Proc.run(["scrub", "--dir", dir])
    expect(damaged.code).toBe(1)
    expect(damaged.stdout).toContain(`damage: ${r.file} at byte ${r.offset}: CRC32C mismatch`)
    expect(damaged.stdout).toMatch(/scrub: damage in 1 disk/)
    const report = JSON.parse((await Proc.run(["scrub", "--dir", dir, "--json"])).stdout)
    expect(report).toMatchObject({ clean: false, disks: [{ damage: [{ file: r.file, offset: r.offset }] }] })
  })

  it("usage errors exit 2; an unknown disk or an empty directory exit 1 with the reason on stderr", async () => {
    const dir = tempDir()
    await writeLog(dir)
    const missing = await Proc.run(["scrub"])
    expect(missing.code).toBe(2)
    expect(missing.stdout).toBe("")
    const unknown = await Proc.run(["scrub", "--dir", dir, "--disk", "nope"])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/cdp-sync scrub: .* holds no disk "nope"/)
    const empty = await Proc.run(["scrub", "--dir", tempDir()])
    expect(empty.code).toBe(1)
    expect(empty.stderr).toMatch(/holds no disk/)
  })

  it("beside a running receiver (segments rolling, retention folding): never a false damage, the receiver unaffected", async () => {
    const dir = tempDir()
    const geometry = { blockSize: 4096, blockCount: 32 }
    const hello = { diskId: "vm", ...geometry, watermark: 0 }
    const receiver = await Proc.start(dir, ["--segment-bytes", "16KiB", "--retain", "64KiB"])
    const plan = Proc.makePlan({ seed: 11, records: 1500, ...geometry, maxWrite: 2000, resyncChance: 0.04 })
    const reports: Array<Scrub.ScrubReport> = []
    const runs: Array<Proc.CliResult> = []
    try {
      let streaming = true
      const stream = Proc.streamPlan({
        host: receiver.host,
        port: receiver.port,
        hello,
        plan,
        window: 64
      }).finally(() => {
        streaming = false
      })
      // In-process scrubs back to back, and the CLI's now and then, until the stream ends.
      const cli = (async () => {
        while (streaming) runs.push(await Proc.run(["scrub", "--dir", dir, "--json"]))
      })()
      while (streaming || reports.length < 3) {
        const report = await Effect.runPromise(
          Scrub.scrub(dir).pipe(Effect.catchTag("DiskNotFound", () => Effect.succeed(undefined)))
        )
        if (report !== undefined) reports.push(report)
      }
      const result = await stream
      await cli
      expect(result.outcome).toBe("complete")
    } finally {
      await receiver.kill("SIGTERM")
    }
    expect(receiver.stderr()).toMatch(/folded the log into the base image/)
    expect(receiver.stderr()).not.toMatch(/level=ERROR/)
    expect(reports.length).toBeGreaterThan(3)
    for (const report of reports)
      expect(report.disks.flatMap((d) => d.damage.map((e) => e.message))).toEqual([])
    for (const run of runs) {
      expect(run.code, run.stdout + run.stderr).toBe(0)
      expect(JSON.parse(run.stdout).clean).toBe(true)
    }
    // And after it: clean, every point restorable as the plan made it.
    const after = await Proc.run(["scrub", "--dir", dir])
    expect(after.code).toBe(0)
    const [listed] = await Effect.runPromise(Restore.points(dir, "vm"))
    const last = listed!.points.at(-1)!.seq
    // Outside the receiver directory: restore refuses to write inside it.
    const out = path.join(tempDir(), "latest.img")
    await Effect.runPromise(Restore.restore({ dir, diskId: "vm", at: "latest", out }))
    expect(fs.readFileSync(out).equals(Buffer.from(Proc.imagesAt(plan, geometry, [last]).get(last)!))).toBe(
      true
    )
  })

  it("disk.json and base.img: missing or unreadable ones are damage, named; nothing is changed", async () => {
    const scrubOf = async (dir: string) => {
      const report = await Effect.runPromise(Scrub.scrub(dir))
      return {
        report,
        damage: report.disks.flatMap((d) => d.damage.map((e) => [path.basename(e.file), e.offset, e.reason]))
      }
    }
    // base.img missing.
    const a = tempDir()
    const diskA = await writeLog(a)
    fs.rmSync(path.join(diskA, "base.img"))
    expect((await scrubOf(a)).damage).toEqual([["base.img", 0, "missing"]])
    // Its trailer flipped: named at the trailer's offset.
    const b = tempDir()
    const diskB = await writeLog(b)
    const base = path.join(diskB, "base.img")
    // Format 2: the trailer is the last 64 bytes.
    const trailerAt = fs.statSync(base).size - 64
    flip(base, trailerAt + 1)
    expect((await scrubOf(b)).damage).toEqual([
      ["base.img", trailerAt, expect.stringMatching(/magic|CRC|no base trailer/)]
    ])
    // A flipped byte inside the image: found by its unit's checksum, named in base.img.
    const e = tempDir()
    const diskE = await writeLog(e)
    flip(path.join(diskE, "base.img"), 100)
    expect((await scrubOf(e)).damage).toEqual([
      ["base.img", expect.any(Number), expect.stringMatching(/checksum|CRC/i)]
    ])
    // disk.json missing while segments exist: damage (a disk, not a creation cut short).
    const c = tempDir()
    const diskC = await writeLog(c)
    fs.rmSync(path.join(diskC, "disk.json"))
    const missing = await scrubOf(c)
    expect(missing.damage).toEqual([["disk.json", 0, "missing"]])
    // The segments are still checked, the base cannot be (no geometry): a note says so.
    expect(missing.report.disks[0]!.checked.segments).toBe(4)
    expect(missing.report.disks[0]!.notes.join("\n")).toMatch(/base\.img: not checked/)
    // disk.json unreadable.
    const d = tempDir()
    const diskD = await writeLog(d)
    fs.writeFileSync(path.join(diskD, "disk.json"), "{not json")
    const before = fs.readdirSync(diskD).sort()
    expect((await scrubOf(d)).damage).toEqual([["disk.json", 0, expect.stringMatching(/unreadable/)]])
    expect(fs.readdirSync(diskD).sort()).toEqual(before)
  })
})

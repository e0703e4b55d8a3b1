/**
 * `cdp-sync scrub` as operators run it (the built CLI): what it prints and its exit codes
 * (0 clean, 1 damage, 2 usage), and beside a running receiver whose segments roll and whose
 * retention folds them meanwhile: no lock taken, no false damage, the receiver unaffected.
 * Block indexes (`.bix`): each kind of damage (flip, truncate, forge with a valid CRC) is
 * damage named with its file and byte, a missing one a note; scrub writes nothing.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import { crc32c } from "../../src/internal/crc32c.js"
import { BIX_HEADER_BYTES, bixExtentOffset, blockIndexName } from "../../src/receiver/internal/blockIndex.js"
import { openChain } from "../../src/receiver/internal/chain.js"
import { RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import * as Restore from "../../src/receiver/Restore.js"
import * as Scrub from "../../src/receiver/Scrub.js"
import * as Proc from "../support/receiverProcess.js"
import { forgeOldestBlockIndex, makeChanges, readMetaFile, writeDisk } from "../support/receiverDisk.js"
import { diskId, flip, locate, segmentFiles, snapshot, writeLog } from "../support/receiverLog.js"

const tempDir = tempDirs("cdp-receiver-scrub-")

describe("cdp-sync scrub", () => {
  it("a clean directory: what was checked on stdout, exit 0; damage: each one named, exit 1", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const clean = await Proc.run(["scrub", "--dir", dir])
    expect(clean.code).toBe(0)
    expect(clean.stdout).toMatch(
      new RegExp(
        `disk ${diskId} \\(.*\\): clean; checked 12 files: 4 segments \\(24 records, \\d+ bytes\\), 3 indexes, 3 block indexes`
      )
    )
    expect(clean.stdout).toMatch(/scrub: no damage/)
    const json = await Proc.run(["scrub", "--dir", dir, "--disk", diskId, "--json"])
    expect(json.code).toBe(0)
    expect(JSON.parse(json.stdout)).toMatchObject({
      clean: true,
      disks: [
        {
          diskId,
          checked: { files: 12, segments: 4, records: 24, indexes: 3, blockIndexes: 3 },
          damage: [],
          notes: []
        }
      ]
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

/** Rewrites a `.bix` with `change` applied and its CRC recomputed: a forgery the CRC cannot see. */
const forge = (file: string, change: (b: Buffer) => Buffer): void => {
  const bytes = change(fs.readFileSync(file))
  const end = bytes.length - 4
  bytes.writeUInt32LE(crc32c(bytes.subarray(0, end)), end)
  fs.writeFileSync(file, bytes)
}

const bump =
  (at: number) =>
  (b: Buffer): Buffer => {
    b.writeUInt32LE(b.readUInt32LE(at) + 1, at)
    return b
  }

/** Damage to the second sealed segment's `.bix`: what scrub must say (damage at a byte, or a note). */
const bixMatrix: ReadonlyArray<{
  readonly name: string
  readonly damage: (file: string) => void
  readonly outcome:
    | { readonly at: number | ((bytes: Buffer) => number); readonly reason: RegExp }
    | { readonly note: RegExp }
}> = [
  {
    name: "flip an extent byte",
    damage: (f) => flip(f, BIX_HEADER_BYTES + 3),
    outcome: { at: (b) => b.length - 4, reason: /CRC32C mismatch/ }
  },
  { name: "flip the magic", damage: (f) => flip(f, 0), outcome: { at: 0, reason: /bad block index magic/ } },
  {
    name: "truncate",
    damage: (f) => fs.truncateSync(f, fs.statSync(f).size - 10),
    outcome: { at: 20, reason: /length does not match/ }
  },
  {
    name: "forge an extent moved (valid CRC)",
    damage: (f) => forge(f, bump(BIX_HEADER_BYTES)),
    outcome: { at: bixExtentOffset(0), reason: /lies outside record|names file byte/ }
  },
  {
    name: "forge away the last extent (valid CRC)",
    damage: (f) =>
      forge(f, (b) => {
        const count = b.readUInt32LE(20) - 1
        const out = Buffer.concat([b.subarray(0, bixExtentOffset(count)), Buffer.alloc(4)])
        out.writeUInt32LE(count, 20)
        return out
      }),
    outcome: { at: 0, reason: /are in no extent/ }
  },
  {
    name: "forge the segment's record count (valid CRC)",
    damage: (f) => forge(f, bump(48)),
    outcome: { at: 48, reason: /record count/ }
  },
  {
    name: "delete",
    damage: (f) => fs.rmSync(f),
    outcome: { note: /\.bix: missing .*rebuild it from the segment/ }
  }
]

describe("cdp-sync scrub: block indexes", () => {
  for (const row of bixMatrix)
    it(`${row.name}: ${"note" in row.outcome ? "a note, not damage" : "damage at its byte"}; nothing written`, async () => {
      const dir = tempDir()
      const diskDir = await writeLog(dir)
      const file = blockIndexName(segmentFiles(diskDir)[1]!)
      row.damage(file)
      const damaged = fs.existsSync(file) ? fs.readFileSync(file) : Buffer.alloc(0)
      const before = snapshot(diskDir)
      const report = await Effect.runPromise(Scrub.scrub(dir))
      const [disk] = report.disks
      if ("note" in row.outcome) {
        expect(report.clean).toBe(true)
        expect(disk!.checked.blockIndexes).toBe(2)
        expect(disk!.notes.join("\n")).toMatch(row.outcome.note)
      } else {
        const at = typeof row.outcome.at === "number" ? row.outcome.at : row.outcome.at(damaged)
        expect(report.clean).toBe(false)
        expect(disk!.damage.map((e) => [e.file, e.offset])).toEqual([[file, at]])
        expect(disk!.damage[0]!.reason).toMatch(row.outcome.reason)
        expect(disk!.damage[0]!.reason).toMatch(
          /restore, mount and the receiver rebuild it from the segment, which is intact/
        )
      }
      // Read-only: every file as it was, none added.
      const after = snapshot(diskDir)
      expect([...after.keys()]).toEqual([...before.keys()])
      for (const [name, bytes] of before) expect(after.get(name)!.equals(bytes), name).toBe(true)
    })

  it("a .bix forged to name an older record where a newer one wrote (valid CRC) is damage; the CLI says so, exit 1, --json names file and byte", async () => {
    const dir = tempDir()
    const geometry = { blockSize: 4096, blockCount: 4 }
    const changes = makeChanges(geometry, 40, { seed: 7, limit: 6000 })
    const { diskDir } = await writeDisk(dir, "vm", geometry, changes, { segmentBytes: 8192 })
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const sealed = chain.segments[0]!
    const { file } = forgeOldestBlockIndex(chain, sealed)
    const run = await Proc.run(["scrub", "--dir", dir, "--json"])
    expect(run.code).toBe(1)
    const report = JSON.parse(run.stdout)
    expect(report.clean).toBe(false)
    expect(report.disks[0].damage).toEqual([
      {
        file,
        offset: expect.any(Number),
        reason: expect.stringMatching(/wrote over it.*rebuild it from the segment/)
      }
    ])
    expect(report.disks[0].damage[0].offset).toBeGreaterThanOrEqual(BIX_HEADER_BYTES)
    const text = await Proc.run(["scrub", "--dir", dir])
    expect(text.code).toBe(1)
    expect(text.stdout).toContain(
      `damage: ${file} at byte ${report.disks[0].damage[0].offset}: at odds with its segment`
    )
  })

  it("a .bix whose segment is gone, and one beside the active segment, are notes", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const segments = segmentFiles(diskDir)
    fs.copyFileSync(blockIndexName(segments[0]!), path.join(diskDir, "0000000000009999.bix"))
    fs.copyFileSync(blockIndexName(segments[2]!), blockIndexName(segments.at(-1)!))
    const report = await Effect.runPromise(Scrub.scrub(dir))
    expect(report.clean).toBe(true)
    const notes = report.disks[0]!.notes.join("\n")
    expect(notes).toMatch(/0000000000009999\.bix: the block index of a segment that is gone/)
    expect(notes).toMatch(/the active segment has a block index/)
  })
})

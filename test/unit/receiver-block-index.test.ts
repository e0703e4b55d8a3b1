/**
 * Issue 17: the block index files (`<first seq>.bix`) and points by time. Every kind of
 * damage to a `.bix` (flip, truncate, delete, forge with a valid CRC) has one outcome: the
 * index is rebuilt from its segment's records (a note names the file, the byte and why), the
 * restore is right, and no other file changes. `--at` takes seqs, `latest`, ISO 8601 and
 * relative times; a time before the oldest point and a seq that is none are refused naming
 * the nearest points.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Effect, Either, Exit } from "effect"
import { describe, expect, it } from "vitest"
import { crc32c } from "../../src/internal/crc32c.js"
import {
  BIX_EXTENT_BYTES,
  BIX_HEADER_BYTES,
  bixExtentOffset,
  blockIndexName,
  buildMap,
  decodeBlockIndex,
  encodeBlockIndex
} from "../../src/receiver/internal/blockIndex.js"
import { openChain } from "../../src/receiver/internal/chain.js"
import { NoRecoveryPointAt, NotARecoveryPoint } from "../../src/receiver/internal/errors.js"
import { openPointMap } from "../../src/receiver/internal/point.js"
import * as Restore from "../../src/receiver/Restore.js"
import {
  forgeOldestBlockIndex,
  makeChanges,
  imageAt as modelImageAt,
  readMetaFile,
  writeDisk
} from "../support/receiverDisk.js"
import { diskId, flip, imageAt, meta, segmentFiles, snapshot, writeLog } from "../support/receiverLog.js"
import { restoredBeside, tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-receiver-bix-", "each")

const failure = async <A, E>(effect: Effect.Effect<A, E>): Promise<unknown> => {
  const exit = await Effect.runPromiseExit(effect)
  return Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
}

/** Rewrites a `.bix` with `change` applied, its CRC recomputed: a forgery the CRC cannot see. */
const forge = (file: string, change: (b: Buffer) => Buffer): void => {
  const bytes = change(fs.readFileSync(file))
  const end = bytes.length - 4
  bytes.writeUInt32LE(crc32c(bytes.subarray(0, end)), end)
  fs.writeFileSync(file, bytes)
}

const latest = 24

/** Adds one to the u32 at `at`. */
const bump =
  (at: number) =>
  (b: Buffer): Buffer => {
    b.writeUInt32LE(b.readUInt32LE(at) + 1, at)
    return b
  }

/** Damage to the first segment's `.bix` and what the reader must say about it. */
const matrix: ReadonlyArray<{
  readonly name: string
  readonly damage: (file: string) => void
  readonly at: number | ((bytes: Buffer) => number)
  readonly reason: RegExp
}> = [
  {
    name: "flip an extent byte",
    damage: (f) => flip(f, BIX_HEADER_BYTES + 3),
    at: (b) => b.length - 4,
    reason: /CRC32C mismatch/
  },
  { name: "flip the magic", damage: (f) => flip(f, 0), at: 0, reason: /bad block index magic/ },
  {
    name: "truncate",
    damage: (f) => fs.truncateSync(f, fs.statSync(f).size - 10),
    at: 20,
    reason: /length does not match/
  },
  { name: "delete", damage: (f) => fs.rmSync(f), at: 0, reason: /missing/ },
  {
    name: "forge an extent's seq (valid CRC)",
    damage: (f) => forge(f, bump(BIX_HEADER_BYTES + 8)),
    at: bixExtentOffset(0),
    reason: /lies outside record/
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
    at: 0,
    reason: /are in no extent/
  },
  {
    name: "forge the segment's last seq (valid CRC)",
    damage: (f) => forge(f, bump(32)),
    at: 32,
    reason: /last seq/
  },
  {
    name: "forge a payload offset (valid CRC)",
    damage: (f) => forge(f, bump(BIX_HEADER_BYTES + 16)),
    at: bixExtentOffset(0),
    reason: /not record \d+'s payload/
  }
]

describe("block index files", () => {
  it("the receiver writes one per sealed segment, none for the active one", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const segments = segmentFiles(diskDir)
    expect(segments.length).toBe(4)
    for (const s of segments.slice(0, -1)) expect(fs.existsSync(blockIndexName(s))).toBe(true)
    expect(fs.existsSync(blockIndexName(segments.at(-1)!))).toBe(false)
    // Each is exactly the map of its records, and says what it covers.
    const chain = await openChain(diskDir, meta(diskDir), "read")
    for (const segment of chain.segments.slice(0, -1)) {
      const covers = {
        blockSize: 4096,
        blockCount: 16,
        firstSeq: segment.firstSeq,
        lastSeq: segment.lastSeq,
        segmentBytes: segment.bytes,
        records: segment.records
      }
      const bytes = fs.readFileSync(path.join(diskDir, blockIndexName(segment.name)))
      expect(bytes.equals(encodeBlockIndex(covers, buildMap(covers, segment.entries!)))).toBe(true)
      expect(bytes.length).toBe(
        BIX_HEADER_BYTES + BIX_EXTENT_BYTES * (decodeBlockIndex(bytes, covers) as Array<unknown>).length + 4
      )
    }
  })

  for (const row of matrix)
    it(`${row.name}: rebuilt, the restore is right, nothing else changes`, async () => {
      const dir = tempDir()
      const diskDir = await writeLog(dir)
      const file = blockIndexName(segmentFiles(diskDir)[0]!)
      const original = fs.readFileSync(file)
      row.damage(file)
      const damaged = fs.existsSync(file) ? fs.readFileSync(file) : Buffer.alloc(0)
      const before = snapshot(diskDir)
      // Opened without writing: the note names the file, the byte and why.
      const chain = await openChain(diskDir, meta(diskDir), "read")
      const map = await openPointMap(chain, latest, false)
      expect(map.notes).toHaveLength(1)
      expect(map.notes[0]!.annotations).toMatchObject({
        file,
        at: typeof row.at === "number" ? row.at : row.at(damaged)
      })
      expect(String(map.notes[0]!.annotations.reason)).toMatch(row.reason)
      // The restore rebuilds it (the receiver's bytes exactly) and is right.
      const restored = await Effect.runPromise(
        Restore.restore({ dir, diskId, at: "latest", out: restoredBeside(dir, latest) })
      )
      expect(restored.seq).toBe(latest)
      expect(fs.readFileSync(restored.out).equals(imageAt(latest))).toBe(true)
      expect(fs.readFileSync(file).equals(original)).toBe(true)
      const after = snapshot(diskDir)
      for (const [name, bytes] of before)
        if (name !== path.basename(file)) expect(after.get(name)?.equals(bytes), name).toBe(true)
      expect([...after.keys()].sort()).toEqual([...new Set([...before.keys(), path.basename(file)])].sort())
    })

  it("a .bix forged to keep an older version of overlapping writes (valid CRC) is at odds with its records: rebuilt", async () => {
    const dir = tempDir()
    const geometry = { blockSize: 4096, blockCount: 4 }
    const changes = makeChanges(geometry, 40, { seed: 7, limit: 6000 })
    const { diskDir, lastSeq } = await writeDisk(dir, "vm", geometry, changes, { segmentBytes: 8192 })
    const chain = await openChain(diskDir, readMetaFile(diskDir), "read")
    const sealed = chain.segments[0]!
    const { oldest } = forgeOldestBlockIndex(chain, sealed)
    expect(oldest).not.toEqual(buildMap(geometry, sealed.entries!))
    const map = await openPointMap(chain, lastSeq, false)
    expect(String(map.notes[0]?.annotations.reason)).toMatch(/wrote over it/)
    const restored = await Effect.runPromise(
      Restore.restore({ dir, diskId: "vm", at: lastSeq, out: restoredBeside(dir, lastSeq) })
    )
    expect(fs.readFileSync(restored.out).equals(modelImageAt(geometry, changes, lastSeq))).toBe(true)
  })
})

describe("points by time (--at)", () => {
  it("parses seqs, latest, ISO 8601 and relative times; refuses anything else", () => {
    expect(Restore.parseAt("42")).toEqual(Either.right({ _tag: "Seq", seq: 42 }))
    expect(Restore.parseAt("latest")).toEqual(Either.right({ _tag: "Latest" }))
    expect(Restore.parseAt("-15m")).toEqual(Either.right({ _tag: "Ago", ms: 15 * 60_000, text: "-15m" }))
    expect(Restore.parseAt("-2h")).toMatchObject(Either.right({ ms: 7_200_000 }))
    expect(Restore.parseAt("-1d")).toMatchObject(Either.right({ ms: 86_400_000 }))
    expect(Restore.parseAt("2024-05-01T10:00:00Z")).toMatchObject(
      Either.right({ _tag: "Time", time: Date.parse("2024-05-01T10:00:00Z") })
    )
    expect(Restore.parseAt("2024-05-01T10:00:00.250+02:00")).toMatchObject(
      Either.right({ time: Date.parse("2024-05-01T08:00:00.250Z") })
    )
    for (const bad of ["yesterday", "-15", "15m", "2024-13-45T00:00Z", "-1y", "1.5", ""])
      expect(Either.isLeft(Restore.parseAt(bad)), bad).toBe(true)
  })

  it("restores and lists the newest point at or before a time; refuses a time before the oldest and a seq that is none", async () => {
    const dir = tempDir()
    await writeLog(dir)
    const [listed] = await Effect.runPromise(Restore.points(dir, diskId))
    const all = listed!.points
    const timed = all.filter((p) => p.time > 0)
    const newestAtOrBefore = (t: number) => timed.filter((p) => p.time <= t).at(-1)!.seq
    // An ISO time: the point received then (or the newest one in the same millisecond).
    const t14 = all.find((p) => p.seq === 14)!.time
    const iso = new Date(t14).toISOString()
    const byTime = await Effect.runPromise(
      Restore.restore({ dir, diskId, at: iso, out: restoredBeside(dir, "iso") })
    )
    expect(byTime.seq).toBe(newestAtOrBefore(t14))
    expect(fs.readFileSync(byTime.out).equals(imageAt(byTime.seq))).toBe(true)
    // Relative: counted back from `now`.
    const now = () => timed.at(-1)!.time + 15 * 60_000
    const recent = await Effect.runPromise(
      Restore.restore({ dir, diskId, at: "-15m", now, out: restoredBeside(dir, "rel") })
    )
    expect(recent.seq).toBe(latest)
    const [one] = await Effect.runPromise(Restore.points(dir, diskId, { at: iso }))
    expect(one!.points).toEqual([all.find((p) => p.seq === byTime.seq)])
    // Before the oldest point: refused, naming it (the empty base has no time to match).
    const early = await failure(
      Restore.restore({ dir, diskId, at: "-1d", now, out: restoredBeside(dir, "early") })
    )
    expect(early).toBeInstanceOf(NoRecoveryPointAt)
    expect((early as NoRecoveryPointAt).message).toContain(`the oldest is seq ${timed[0]!.seq}`)
    expect((early as NoRecoveryPointAt).message).toContain(
      `nearest recovery points: ${timed[0]!.seq} (after)`
    )
    const earlyIso = await failure(
      Restore.points(dir, diskId, { at: new Date(timed[0]!.time - 1).toISOString() })
    )
    expect(earlyIso).toBeInstanceOf(NoRecoveryPointAt)
    // A seq inside the resync: refused as before, naming the points around it.
    const inside = await failure(Restore.restore({ dir, diskId, at: "10", out: restoredBeside(dir, 10) }))
    expect(inside).toBeInstanceOf(NotARecoveryPoint)
    expect(inside).toMatchObject({ seq: 10, before: 8, after: 14 })
    expect(fs.existsSync(restoredBeside(dir, "early"))).toBe(false)
  })
})

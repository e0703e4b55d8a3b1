/**
 * The corruption matrix of a disk's metadata: `base.img` (image, checksum table, trailer)
 * and `disk.json`. Each row damages one thing — a flipped byte, a cut, a deletion, a forgery
 * with valid checksums — and states what the receiver (restart and hello), `restore` and
 * `verifyBaseImage` make of it: refused with a typed error naming the file and the byte
 * offset, never wrong data, never a deletion. Plus a missing `disk.json` against the real
 * receiver process, and a format-1 base (no checksums) still read.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import { afterAll, afterEach, describe, expect, it } from "vitest"
import { crc32c } from "../../src/internal/crc32c.js"
import { inspectBaseImage, verifyBaseImage } from "../../src/receiver/internal/base.js"
import { type DiskMeta, encodeMeta, inspectDiskDir } from "../../src/receiver/internal/chain.js"
import {
  BASE_TRAILER_V2_BYTES,
  decodeBaseTrailerV2,
  encodeBaseTrailer,
  encodeBaseTrailerV2
} from "../../src/receiver/internal/format.js"
import * as LogStore from "../../src/receiver/LogStore.js"
import * as Restore from "../../src/receiver/Restore.js"
import {
  captured,
  failureOf,
  flipByte,
  imageAt,
  makeChanges,
  readMetaFile,
  removeTempDirs,
  snapshot,
  tempDir,
  withStore,
  writeDisk
} from "../support/receiverDisk.js"
import * as Proc from "../support/receiverProcess.js"

afterEach(() => {
  captured.length = 0
})
afterAll(removeTempDirs)

const geometry = { blockSize: 4096, blockCount: 256 }
const diskBytes = geometry.blockSize * geometry.blockCount
const UNIT = 64 * 1024
const units = diskBytes / UNIT
const tableOffset = diskBytes
const trailerOffset = diskBytes + units * 4
const fileBytes = trailerOffset + BASE_TRAILER_V2_BYTES
/** Records land in the first half only: the second half of the image stays a hole. */
const dataLimit = diskBytes / 2

interface Disk {
  readonly dir: string
  readonly diskDir: string
  readonly baseFile: string
  readonly metaFile: string
  readonly meta: DiskMeta
  readonly baseSeq: number
  readonly lastSeq: number
  readonly changes: ReturnType<typeof makeChanges>
}

/** A disk folded into its base in the middle of a segment (that segment stays, holding the base's record). */
const setUp = async (): Promise<Disk> => {
  const dir = tempDir("cdp-base-matrix-")
  const changes = makeChanges(geometry, 90, { seed: 21, limit: dataLimit })
  const { diskDir, baseSeq, lastSeq } = await writeDisk(dir, "vm", geometry, changes, {
    segmentBytes: 8 * 1024,
    fold: "mid-segment"
  })
  const baseFile = path.join(diskDir, "base.img")
  expect(fs.statSync(baseFile).size).toBe(fileBytes)
  expect(baseSeq).toBeGreaterThan(0)
  return {
    dir,
    diskDir,
    baseFile,
    metaFile: path.join(diskDir, "disk.json"),
    meta: readMetaFile(diskDir),
    baseSeq,
    lastSeq,
    changes
  }
}

const readTrailer = (d: Disk) => {
  const bytes = fs.readFileSync(d.baseFile).subarray(trailerOffset)
  const trailer = decodeBaseTrailerV2(bytes)
  if (typeof trailer === "string") throw new Error(trailer)
  return trailer
}
const writeTrailer = (d: Disk, patch: Partial<ReturnType<typeof readTrailer>>) => {
  const fd = fs.openSync(d.baseFile, "r+")
  fs.writeSync(
    fd,
    encodeBaseTrailerV2({ ...readTrailer(d), ...patch }),
    0,
    BASE_TRAILER_V2_BYTES,
    trailerOffset
  )
  fs.closeSync(fd)
}

interface Expected {
  readonly file: (d: Disk) => string
  readonly offset: (d: Disk) => number
  readonly reason: RegExp
}

interface Row {
  readonly name: string
  readonly damage: (d: Disk) => void
  /** The hello after a restart: served (welcomed with the last seq) or refused (log-failed) with this error. */
  readonly open: "served" | Expected
  /** `restore --at latest`: the model's image, the forger's image (undetectable), or this error. */
  readonly restore: "model" | "forged" | Expected
  /** `verifyBaseImage` (with `disk.json`'s geometry, or `meta`): the damage it lists, by file and offset. */
  readonly verify: ReadonlyArray<Omit<Expected, "reason">> | "no disk.json"
  readonly meta?: (d: Disk) => DiskMeta
}

const base = (d: Disk) => d.baseFile
const metaFile = (d: Disk) => d.metaFile
const at =
  (n: number) =>
  (_: Disk): number =>
    n

const rows: ReadonlyArray<Row> = [
  {
    name: "image: a byte flipped in a unit that holds data",
    damage: (d) => flipByte(d.baseFile, 5000),
    open: "served",
    restore: { file: base, offset: at(0), reason: /image bytes 0\.\.65535 do not match their CRC32C/ },
    verify: [{ file: base, offset: at(0) }]
  },
  {
    name: "image: a byte flipped in a hole",
    damage: (d) => flipByte(d.baseFile, 10 * UNIT + 77),
    open: "served",
    restore: { file: base, offset: at(10 * UNIT), reason: /do not match their CRC32C/ },
    verify: [{ file: base, offset: at(10 * UNIT) }]
  },
  {
    name: "checksum table: a byte flipped",
    damage: (d) => flipByte(d.baseFile, tableOffset + 3 * 4 + 2),
    open: "served",
    restore: { file: base, offset: at(tableOffset), reason: /checksum table .* does not match its CRC32C/ },
    // The table's CRC fails, and the entry names its unit (which may be the one damaged).
    verify: [
      { file: base, offset: at(tableOffset) },
      { file: base, offset: at(3 * UNIT) }
    ]
  },
  {
    name: "trailer: a byte of the seq flipped",
    damage: (d) => flipByte(d.baseFile, trailerOffset + 8),
    open: { file: base, offset: at(trailerOffset), reason: /base trailer CRC32C mismatch/ },
    restore: { file: base, offset: at(trailerOffset), reason: /base trailer CRC32C mismatch/ },
    verify: [{ file: base, offset: at(trailerOffset) }]
  },
  {
    name: "trailer: its magic flipped",
    damage: (d) => flipByte(d.baseFile, trailerOffset),
    open: { file: base, offset: at(trailerOffset), reason: /no base trailer at the end of the file/ },
    restore: { file: base, offset: at(trailerOffset), reason: /no base trailer/ },
    verify: [{ file: base, offset: at(trailerOffset) }]
  },
  {
    name: "truncated by one byte",
    damage: (d) => fs.truncateSync(d.baseFile, fileBytes - 1),
    open: { file: base, offset: at(fileBytes - 1 - 64), reason: /no base trailer/ },
    restore: { file: base, offset: at(fileBytes - 1 - 64), reason: /no base trailer/ },
    verify: [{ file: base, offset: at(fileBytes - 1 - 64) }]
  },
  {
    name: "truncated to the image (table and trailer cut off)",
    damage: (d) => fs.truncateSync(d.baseFile, diskBytes),
    open: { file: base, offset: at(diskBytes - 64), reason: /no base trailer/ },
    restore: { file: base, offset: at(diskBytes - 64), reason: /no base trailer/ },
    verify: [{ file: base, offset: at(diskBytes - 64) }]
  },
  {
    name: "extended by 4 KiB of zeros",
    damage: (d) => fs.truncateSync(d.baseFile, fileBytes + 4096),
    open: { file: base, offset: at(fileBytes + 4096 - 64), reason: /no base trailer/ },
    restore: { file: base, offset: at(fileBytes + 4096 - 64), reason: /no base trailer/ },
    verify: [{ file: base, offset: at(fileBytes + 4096 - 64) }]
  },
  {
    name: "deleted",
    damage: (d) => fs.rmSync(d.baseFile),
    open: { file: base, offset: at(0), reason: /missing/ },
    restore: { file: base, offset: at(0), reason: /missing/ },
    verify: [{ file: base, offset: at(0) }]
  },
  {
    // A CRC is no signature: whoever rewrites the data, its unit's CRC, the table's CRC and the
    // trailer consistently is not detected. Checksums catch damage, not a forger.
    name: "forged: image bytes changed with their unit's CRC, the table's CRC and the trailer recomputed",
    damage: (d) => {
      const bytes = fs.readFileSync(d.baseFile)
      bytes.fill(0xee, 100, 200)
      bytes.writeUInt32LE(crc32c(bytes.subarray(0, UNIT)), tableOffset)
      fs.writeFileSync(d.baseFile, bytes)
      writeTrailer(d, { tableCrc: crc32c(bytes.subarray(tableOffset, trailerOffset)) })
    },
    open: "served",
    restore: "forged",
    verify: []
  },
  {
    name: "forged: the trailer's seq one lower, its CRC recomputed",
    damage: (d) => writeTrailer(d, { seq: d.baseSeq - 1 }),
    open: { file: base, offset: at(trailerOffset + 8), reason: /is not the one it was folded to/ },
    restore: { file: base, offset: at(trailerOffset + 8), reason: /is not the one it was folded to/ },
    verify: [{ file: base, offset: at(trailerOffset + 8) }]
  },
  {
    name: "forged: the trailer's seq one higher, its CRC recomputed",
    damage: (d) => writeTrailer(d, { seq: d.baseSeq + 1 }),
    open: { file: base, offset: at(trailerOffset + 8), reason: /is not the one it was folded to/ },
    restore: { file: base, offset: at(trailerOffset + 8), reason: /is not the one it was folded to/ },
    verify: [{ file: base, offset: at(trailerOffset + 8) }]
  },
  {
    // The old receiver took every segment for folded and deleted the whole log.
    name: "forged: the trailer's seq beyond the log, its CRC recomputed",
    damage: (d) => writeTrailer(d, { seq: d.lastSeq + 1000 }),
    open: { file: base, offset: at(trailerOffset + 8), reason: /which would hold that record, skips it/ },
    restore: { file: base, offset: at(trailerOffset + 8), reason: /skips it/ },
    verify: [{ file: base, offset: at(trailerOffset + 8) }]
  },
  {
    name: "forged: the trailer's geometry, its CRC recomputed",
    damage: (d) => writeTrailer(d, { blockCount: 255 }),
    open: {
      file: base,
      offset: at(trailerOffset + 24),
      reason: /the trailer says 255 blocks of 4096 bytes, disk\.json says 256 blocks/
    },
    restore: { file: base, offset: at(trailerOffset + 24), reason: /the trailer says 255 blocks/ },
    verify: [{ file: base, offset: at(trailerOffset + 24) }]
  },
  {
    name: "disk.json: the geometry edited",
    damage: (d) => {
      const json = JSON.parse(fs.readFileSync(d.metaFile, "utf8"))
      fs.writeFileSync(d.metaFile, JSON.stringify({ ...json, blockCount: 512 }))
    },
    open: { file: metaFile, offset: at(0), reason: /CRC32C mismatch: the file was edited or damaged/ },
    restore: { file: metaFile, offset: at(0), reason: /CRC32C mismatch/ },
    // A scrub that took the edited geometry anyway: base.img's trailer disagrees.
    meta: (d) => ({ ...d.meta, blockCount: 512 }),
    verify: [{ file: base, offset: at(trailerOffset + 24) }]
  },
  {
    name: "disk.json: the geometry forged with a valid CRC",
    damage: (d) => fs.writeFileSync(d.metaFile, encodeMeta({ ...d.meta, blockCount: 128 })),
    open: { file: base, offset: at(trailerOffset + 24), reason: /disk\.json says 128 blocks of 4096 bytes/ },
    restore: { file: base, offset: at(trailerOffset + 24), reason: /disk\.json says 128 blocks/ },
    meta: (d) => ({ ...d.meta, blockCount: 128 }),
    verify: [{ file: base, offset: at(trailerOffset + 24) }]
  },
  {
    // Same byte count: only the trailer's geometry (format 2) tells.
    name: "disk.json: format 1 (no checksum) with another geometry of the same size",
    damage: (d) =>
      fs.writeFileSync(
        d.metaFile,
        JSON.stringify({ ...d.meta, format: 1, blockSize: 8192, blockCount: 128 })
      ),
    open: { file: base, offset: at(trailerOffset + 24), reason: /disk\.json says 128 blocks of 8192 bytes/ },
    restore: { file: base, offset: at(trailerOffset + 24), reason: /disk\.json says 128 blocks of 8192/ },
    meta: (d) => ({ ...d.meta, format: 1, blockSize: 8192, blockCount: 128 }),
    verify: [{ file: base, offset: at(trailerOffset + 24) }]
  },
  {
    name: "disk.json: deleted",
    damage: (d) => fs.rmSync(d.metaFile),
    open: {
      file: metaFile,
      offset: at(0),
      reason: /missing, but the directory holds .* segment and index files/
    },
    restore: { file: metaFile, offset: at(0), reason: /missing, but the directory holds/ },
    verify: "no disk.json"
  },
  {
    name: "disk.json: garbage",
    damage: (d) => fs.writeFileSync(d.metaFile, "{ not json"),
    open: { file: metaFile, offset: at(0), reason: /unreadable/ },
    restore: { file: metaFile, offset: at(0), reason: /unreadable/ },
    verify: "no disk.json"
  }
]

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
const describeExpected = (d: Disk, e: Expected) =>
  new RegExp(`log corrupt: ${escapeRegExp(e.file(d))} at byte ${e.offset(d)}: .*${e.reason.source}`)

describe("base.img and disk.json corruption matrix", () => {
  it.each(rows)("$name", async (row) => {
    const d = await setUp()
    row.damage(d)
    const before = snapshot(d.diskDir)
    const latest = imageAt(geometry, d.changes, d.lastSeq)

    // The receiver, restarted: the hello.
    const opened = await withStore(d.dir, (store) =>
      Effect.map(store.disk({ diskId: "vm", ...geometry, watermark: d.lastSeq }), (disk) => disk.durable)
    )
    if (row.open === "served") expect(opened).toEqual(Exit.succeed(d.lastSeq))
    else {
      const refused = failureOf(opened)
      expect(refused).toBeInstanceOf(LogStore.HelloRefused)
      expect(refused).toMatchObject({ reason: "log-failed" })
      expect((refused as LogStore.HelloRefused).detail).toMatch(describeExpected(d, row.open))
      expect(captured.join("\n")).toMatch(/ERROR vm: cannot open the log/)
    }

    // restore.
    const out = path.join(tempDir("cdp-base-matrix-out-"), "vm.img")
    const restored = await Effect.runPromiseExit(
      Restore.restore({ dir: d.dir, diskId: "vm", at: "latest", out })
    )
    if (row.restore === "model" || row.restore === "forged") {
      expect(Exit.isSuccess(restored)).toBe(true)
      expect(fs.readFileSync(out).equals(latest)).toBe(row.restore === "model")
    } else {
      const error = failureOf(restored)
      expect(error).toMatchObject({
        _tag: "LogCorrupt",
        file: row.restore.file(d),
        offset: row.restore.offset(d)
      })
      expect((error as Error).message).toMatch(row.restore.reason)
      expect(fs.readdirSync(path.dirname(out))).toEqual([])
    }

    // verifyBaseImage (what scrub runs).
    if (row.verify === "no disk.json") expect((await inspectDiskDir(d.diskDir))._tag).toBe("Refused")
    else {
      const damage = await verifyBaseImage(d.diskDir, row.meta?.(d) ?? d.meta)
      expect(damage.map((e) => ({ file: e.file, offset: e.offset }))).toEqual(
        row.verify.map((e) => ({ file: e.file(d), offset: e.offset(d) }))
      )
      for (const e of damage) expect(e._tag).toBe("LogCorrupt")
    }

    // Nothing was deleted or changed by any of them.
    expect(snapshot(d.diskDir)).toEqual(before)
  })

  it("a fold refuses a damaged base and leaves everything as it was", async () => {
    const d = await setUp()
    flipByte(d.baseFile, 7)
    const more = makeChanges(geometry, 40, { seed: 22, firstSeq: d.lastSeq + 1, limit: dataLimit })
    const exit = await withStore(
      d.dir,
      (store) =>
        Effect.gen(function* () {
          const disk = yield* store.disk({ diskId: "vm", ...geometry, watermark: d.lastSeq })
          for (const c of more) disk.append(c.record, true)
          yield* disk.flushed
          const before = snapshot(d.diskDir)
          const fold = Effect.tryPromise(() => disk.foldTo(disk.segments.at(-2)!.lastSeq))
          const folded = yield* Effect.either(fold)
          // Refused from then on without reading the base again: even once it is mended.
          flipByte(d.baseFile, 7)
          const again = yield* Effect.either(fold)
          return { folded, again, before, baseSeq: disk.base.seq }
        }),
      { segmentBytes: 8 * 1024 }
    )
    if (Exit.isFailure(exit)) throw new Error(String(exit.cause))
    const { folded, again, before, baseSeq } = exit.value
    expect(baseSeq).toBe(d.baseSeq)
    expect(folded._tag).toBe("Left")
    expect(String(folded._tag === "Left" && folded.left.cause)).toMatch(
      new RegExp(`${escapeRegExp(d.baseFile)} at byte 0: image bytes 0\\.\\.65535 do not match`)
    )
    expect(again._tag === "Left" && again.left.cause).toBe(folded._tag === "Left" && folded.left.cause)
    // Only the fold's temporary file differs (removed on the next start), and the flip was undone.
    const after = snapshot(d.diskDir)
    delete after["base.img.tmp"]
    flipByte(d.baseFile, 7)
    expect({ ...after, "base.img": snapshot(d.diskDir)["base.img"] }).toEqual(before)
  })
})

describe("a format-1 base (no checksums)", () => {
  it("is still read, said to be unverified, and the next fold writes format 2", async () => {
    const d = await setUp()
    const { seq, time } = readTrailer(d)
    const image = fs.readFileSync(d.baseFile).subarray(0, diskBytes)
    fs.writeFileSync(d.baseFile, Buffer.concat([image, encodeBaseTrailer({ seq, time })]))
    expect(await inspectBaseImage(d.diskDir, d.meta)).toMatchObject({
      format: 1,
      verified: false,
      damage: []
    })
    const out = path.join(tempDir("cdp-base-matrix-out-"), "vm.img")
    await Effect.runPromise(Restore.restore({ dir: d.dir, diskId: "vm", at: "latest", out }))
    expect(fs.readFileSync(out).equals(imageAt(geometry, d.changes, d.lastSeq))).toBe(true)

    const more = makeChanges(geometry, 40, { seed: 23, firstSeq: d.lastSeq + 1, limit: dataLimit })
    const exit = await withStore(
      d.dir,
      (store) =>
        Effect.gen(function* () {
          const disk = yield* store.disk({ diskId: "vm", ...geometry, watermark: d.lastSeq })
          for (const c of more) disk.append(c.record, true)
          yield* disk.flushed
          yield* Effect.promise(() => disk.foldTo(disk.segments.at(-2)!.lastSeq - 1))
          return disk.base.seq
        }),
      { segmentBytes: 8 * 1024 }
    )
    expect(captured.join("\n")).toMatch(/WARN vm: base\.img is format 1, without data checksums/)
    if (Exit.isFailure(exit)) throw new Error(String(exit.cause))
    const report = await inspectBaseImage(d.diskDir, d.meta)
    expect(report).toMatchObject({ format: 2, verified: true, damage: [], seq: exit.value })
    const all = [...d.changes, ...more]
    await Effect.runPromise(Restore.restore({ dir: d.dir, diskId: "vm", at: exit.value, out }))
    expect(fs.readFileSync(out).equals(imageAt(geometry, all, exit.value))).toBe(true)
  })
})

describe("a missing disk.json, against the receiver process (issue 13, finding 2)", () => {
  it("after a restart the hello is refused with the reason, and every acked record stays", async () => {
    const dir = tempDir("cdp-base-process-")
    const small = { blockSize: 4096, blockCount: 64 }
    const hello = { diskId: "vm1", ...small, watermark: 0 }
    const plan = Proc.makePlan({ seed: 31, records: 316, ...small, resyncChance: 0.03 })
    const first = await Proc.start(dir, ["--segment-bytes", "64KiB"])
    try {
      const result = await Proc.streamPlan({ host: first.host, port: first.port, hello, plan })
      expect(result).toMatchObject({ outcome: "complete", lastAck: 316 })
    } finally {
      await first.kill()
    }
    const diskDir = path.join(dir, "vm1")
    const metaBytes = fs.readFileSync(path.join(diskDir, "disk.json"))
    fs.rmSync(path.join(diskDir, "disk.json"))
    const before = snapshot(diskDir)

    const second = await Proc.start(dir, ["--segment-bytes", "64KiB"])
    try {
      expect(second.stderr()).toMatch(
        /level=ERROR .*message="vm1: cannot open the log; its connections are refused" error=".*disk\.json at byte 0: missing, but the directory holds/
      )
      const refused = await Proc.streamPlan({
        host: second.host,
        port: second.port,
        hello: { ...hello, watermark: 316 },
        plan
      })
      expect(refused.outcome).toBe("refused")
      expect(refused.error).toMatchObject({ reason: "log-failed" })
      expect((refused.error as { detail: string }).detail).toMatch(
        /disk\.json at byte 0: missing, but the directory holds .*write disk\.json again/
      )
    } finally {
      await second.kill()
    }
    expect(snapshot(diskDir)).toEqual(before)

    // disk.json written back: the disk is served again with every acked record.
    fs.writeFileSync(path.join(diskDir, "disk.json"), metaBytes)
    const third = await Proc.start(dir, ["--segment-bytes", "64KiB"])
    try {
      const again = await Proc.streamPlan({
        host: third.host,
        port: third.port,
        hello: { ...hello, watermark: 316 },
        plan
      })
      expect(again).toMatchObject({ outcome: "complete", welcome: 316 })
    } finally {
      await third.kill()
    }
    const { records } = await Proc.readLog(dir, "vm1")
    expect(records.map((r) => r.seq)).toEqual(plan.map((p) => p.record.seq))
    for (let i = 0; i < plan.length; i++) expect(Proc.compare(records[i]!, plan[i]!)).toBeUndefined()
  })
})

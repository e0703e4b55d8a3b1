/**
 * The log receiver's on-disk formats: records, the segment scan (a torn tail is cut off,
 * damage before the tail is a typed error naming the offset), the index, the base
 * trailer, and opening a chain in recover and read modes.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Effect, Exit, Option } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import { diskDirName, type DiskMeta, META_FILE, openChain } from "../../src/receiver/internal/chain.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import {
  decodeBaseTrailer,
  decodeIndex,
  encodeBaseTrailer,
  encodeIndex,
  encodeRecordHeader,
  encodeSegmentHeader,
  FLAG_BATCH_START,
  FLAG_RECOVERY_POINT,
  type IndexEntry,
  Kind,
  parseRecord,
  RECORD_HEADER_BYTES,
  type RecordHeader,
  SEGMENT_HEADER_BYTES,
  segmentName
} from "../../src/receiver/internal/format.js"
import { isTorn, scanSegment } from "../../src/receiver/internal/segment.js"
import * as LogStore from "../../src/receiver/LogStore.js"
import * as Restore from "../../src/receiver/Restore.js"

const tempDir = tempDirs("cdp-receiver-unit-", "each")

const record = (seq: number, flags: number, fill = seq): Buffer => {
  const payload = Buffer.alloc(100 + (seq % 7) * 13, fill)
  const header: RecordHeader = {
    length: payload.length,
    kind: Kind.Write,
    flags,
    epoch: 0,
    seq,
    position: seq * 512,
    time: 1_700_000_000_000 + seq
  }
  return Buffer.concat([encodeRecordHeader(header, payload), payload])
}

/** A segment of commits: each inner array is one commit (its first record starts a batch). */
const segment = (firstSeq: number, commits: ReadonlyArray<number>) => {
  const parts: Array<Buffer> = [encodeSegmentHeader({ firstSeq, created: 1 })]
  const offsets: Array<number> = []
  let seq = firstSeq
  let at = SEGMENT_HEADER_BYTES
  for (const count of commits)
    for (let i = 0; i < count; i++) {
      const bytes = record(seq++, FLAG_RECOVERY_POINT | (i === 0 ? FLAG_BATCH_START : 0))
      offsets.push(at)
      at += bytes.length
      parts.push(bytes)
    }
  return { bytes: Buffer.concat(parts), offsets }
}

const scan = async (bytes: Buffer, firstSeq = 1) => {
  const file = path.join(tempDir(), segmentName(firstSeq))
  fs.writeFileSync(file, bytes)
  const handle = await fs.promises.open(file, "r")
  try {
    return await scanSegment(handle, bytes.length, { firstSeq, prevSeq: undefined })
  } finally {
    await handle.close()
  }
}

describe("records", () => {
  it("round-trip and every single-bit flip is caught", () => {
    const bytes = record(42, FLAG_RECOVERY_POINT)
    const parsed = parseRecord(bytes, 0)
    expect(parsed._tag).toBe("Record")
    if (parsed._tag !== "Record") return
    expect(parsed.header).toMatchObject({ seq: 42, kind: Kind.Write, position: 42 * 512, flags: 1 })
    expect(parsed.size).toBe(bytes.length)
    for (let bit = 0; bit < bytes.length * 8; bit += 7) {
      const flipped = Buffer.from(bytes)
      flipped[bit >> 3]! ^= 1 << (bit & 7)
      expect(parseRecord(flipped, 0)._tag).not.toBe("Record")
    }
  })

  it("a short buffer asks for more", () => {
    const bytes = record(3, 0)
    expect(parseRecord(bytes.subarray(0, 10), 0)).toEqual({ _tag: "Short", need: RECORD_HEADER_BYTES })
    expect(parseRecord(bytes.subarray(0, bytes.length - 1), 0)).toEqual({ _tag: "Short", need: bytes.length })
  })

  it("the base trailer and the index round-trip", () => {
    expect(decodeBaseTrailer(encodeBaseTrailer({ seq: 2 ** 40 + 3, time: 5 }))).toEqual({
      seq: 2 ** 40 + 3,
      time: 5
    })
    const entries: Array<IndexEntry> = [
      {
        offset: 32,
        length: 9,
        kind: Kind.Write,
        flags: 3,
        epoch: 1,
        seq: 7,
        position: 4096,
        time: 11,
        crc: 5
      },
      {
        offset: 81,
        length: 0,
        kind: Kind.ResyncEnd,
        flags: 1,
        epoch: 2,
        seq: 8,
        position: 0,
        time: 12,
        crc: 2 ** 32 - 1
      }
    ]
    expect(decodeIndex(encodeIndex(121, entries), 121, 7)).toEqual(entries)
    // An index that describes another size of segment (it grew after) is refused.
    expect(decodeIndex(encodeIndex(121, entries), 122, 7)).toHaveProperty("offset", 8)
    const damaged = encodeIndex(121, entries)
    damaged[40]! ^= 1
    expect(decodeIndex(damaged, 121, 7)).toMatchObject({ reason: "index CRC32C mismatch" })
  })
})

describe("segment scan", () => {
  it("reads a clean segment", async () => {
    const { bytes } = segment(5, [3, 1, 4])
    const result = await scan(bytes, 5)
    expect(result.damage).toBeUndefined()
    expect(result.entries.map((e) => e.seq)).toEqual([5, 6, 7, 8, 9, 10, 11, 12])
    expect(result.end).toBe(bytes.length)
  })

  it("a record cut short at the end is a torn tail", async () => {
    const { bytes, offsets } = segment(1, [2, 3])
    const result = await scan(bytes.subarray(0, bytes.length - 5))
    expect(result.damage?.offset).toBe(offsets[4])
    expect(isTorn(result.damage!)).toBe(true)
    expect(result.end).toBe(offsets[4])
    expect(result.entries).toHaveLength(4)
  })

  it("a zero-filled tail is torn", async () => {
    const { bytes } = segment(1, [2, 2])
    const result = await scan(Buffer.concat([bytes, Buffer.alloc(5000)]))
    expect(isTorn(result.damage!)).toBe(true)
    expect(result.end).toBe(bytes.length)
  })

  it("damage inside the last commit is torn even with whole records after it (pages persist in any order)", async () => {
    const { bytes, offsets } = segment(1, [2, 4])
    const damaged = Buffer.from(bytes)
    damaged[offsets[3]! + RECORD_HEADER_BYTES + 3]! ^= 0xff
    const result = await scan(damaged)
    expect(result.damage?.offset).toBe(offsets[3])
    expect(isTorn(result.damage!)).toBe(true)
    expect(result.damage?.validAfter).toBe(2)
  })

  it("damage followed by a later commit is corruption", async () => {
    const { bytes, offsets } = segment(1, [2, 3, 2])
    const damaged = Buffer.from(bytes)
    damaged[offsets[1]! + RECORD_HEADER_BYTES]! ^= 0x01
    const result = await scan(damaged)
    expect(result.damage?.offset).toBe(offsets[1])
    expect(result.damage?.laterCommitAt).toBe(offsets[2])
    expect(isTorn(result.damage!)).toBe(false)
  })

  it("a seq that does not follow is damage", async () => {
    const parts = [
      encodeSegmentHeader({ firstSeq: 1, created: 1 }),
      record(1, FLAG_BATCH_START),
      record(3, 0)
    ]
    const result = await scan(Buffer.concat(parts))
    expect(result.damage?.reason).toMatch(/seq 3 does not follow 1/)
  })
})

// ---------------------------------------------------------------------------------------------
// Through the store: write real records, then damage the files and reopen.

const geometry = { blockSize: 4096, blockCount: 16 }
const hello = { diskId: "disk-a", ...geometry, watermark: 0 }

/** Appends `count` writes in commits of `perCommit` records; returns the disk directory. */
const writeLog = (dir: string, count: number, perCommit: number, segmentBytes = 1 << 20) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const store = yield* LogStore.open({ dir, segmentBytes })
        const disk = yield* store.disk(hello)
        for (let seq = 1; seq <= count; seq++) {
          disk.append(
            {
              _tag: "Write",
              seq,
              epoch: 0,
              offset: (seq * 512) % 60000,
              data: new Uint8Array(700).fill(seq)
            },
            true
          )
          if (seq % perCommit === 0 || seq === count) yield* disk.flushed
        }
        return disk.diskDir
      })
    )
  )

const meta = (diskDir: string): DiskMeta => JSON.parse(fs.readFileSync(path.join(diskDir, META_FILE), "utf8"))
const segmentsOf = (diskDir: string) =>
  fs
    .readdirSync(diskDir)
    .filter((n) => n.endsWith(".seg"))
    .sort()

describe("opening a chain", () => {
  it("cuts off a torn tail (and notes it), and the store carries on from there", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir, 20, 5)
    expect(path.basename(diskDir)).toBe(diskDirName("disk-a"))
    const file = path.join(diskDir, segmentsOf(diskDir).at(-1)!)
    const size = fs.statSync(file).size
    fs.truncateSync(file, size - 300)
    const chain = await openChain(diskDir, meta(diskDir), "recover")
    expect(chain.lastSeq).toBe(19)
    expect(chain.notes.map((n) => n.message)).toContain("cut off a torn tail")
    expect(fs.statSync(file).size).toBe(chain.segments.at(-1)!.bytes)
    // Reopening through the store: the durable seq is 19 and appends continue at 20.
    const again = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* LogStore.open({ dir })
          const disk = yield* store.disk(hello)
          const before = disk.durable
          disk.append({ _tag: "Write", seq: 20, epoch: 0, offset: 0, data: new Uint8Array(10) }, true)
          yield* disk.flushed
          return [before, disk.durable]
        })
      )
    )
    expect(again).toEqual([19, 20])
  })

  it("read mode ignores a torn tail without touching the file", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir, 10, 10)
    const file = path.join(diskDir, segmentsOf(diskDir).at(-1)!)
    fs.appendFileSync(file, Buffer.from([1, 2, 3]))
    const size = fs.statSync(file).size
    const chain = await openChain(diskDir, meta(diskDir), "read")
    expect(chain.lastSeq).toBe(10)
    expect(fs.statSync(file).size).toBe(size)
  })

  it("corruption before the tail is a LogCorrupt naming the file and the offset", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir, 12, 3)
    const file = path.join(diskDir, segmentsOf(diskDir).at(-1)!)
    const bytes = fs.readFileSync(file)
    // The payload of the second record (seq 2): commit 1 holds seqs 1..3, later commits follow.
    const second = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 700
    bytes[second + RECORD_HEADER_BYTES + 10]! ^= 0x40
    fs.writeFileSync(file, bytes)
    const error = await openChain(diskDir, meta(diskDir), "recover").catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LogCorrupt)
    expect(error).toMatchObject({ file, offset: second })
    expect((error as LogCorrupt).message).toMatch(
      new RegExp(`at byte ${second}: CRC32C mismatch, yet a later commit follows`)
    )
    // Nothing was cut: the damage is left for an operator.
    expect(fs.statSync(file).size).toBe(bytes.length)
    // Read mode (points, restore) stops at the damage: the points before it stay available.
    const readable = await openChain(diskDir, meta(diskDir), "read")
    expect(readable.lastSeq).toBe(1)
    expect(readable.damaged).toMatchObject({ file, offset: second })
    const [listed] = await Effect.runPromise(Restore.points(dir, "disk-a"))
    expect(listed!.points.map((p) => p.seq)).toEqual([0, 1])
    expect(listed!.warnings.join("\n")).toMatch(/the log is damaged/)
    const beyond = await Effect.runPromiseExit(Restore.restore({ dir, at: 3, out: path.join(dir, "x.img") }))
    expect(String(Exit.isFailure(beyond) && Cause.squash(beyond.cause))).toMatch(
      /readable only through seq 1/
    )
    // The store opens the directory but refuses the disk, naming the damage.
    const exit = await Effect.runPromiseExit(
      Effect.scoped(Effect.flatMap(LogStore.open({ dir }), (store) => store.disk(hello)))
    )
    const refused = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
    expect(refused).toBeInstanceOf(LogStore.HelloRefused)
    expect(refused).toMatchObject({ reason: "log-failed" })
    expect((refused as LogStore.HelloRefused).detail).toMatch(new RegExp(`log corrupt: .* at byte ${second}`))
  })

  it("a sealed segment with a damaged end is corruption, and a bad index is rebuilt", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir, 30, 1, 4 * (RECORD_HEADER_BYTES + 700))
    const names = segmentsOf(diskDir)
    expect(names.length).toBeGreaterThan(3)
    // A missing index is rebuilt from the segment.
    fs.rmSync(path.join(diskDir, names[1]!.replace(".seg", ".idx")))
    const chain = await openChain(diskDir, meta(diskDir), "recover")
    expect(chain.lastSeq).toBe(30)
    expect(fs.existsSync(path.join(diskDir, names[1]!.replace(".seg", ".idx")))).toBe(true)
    // A sealed segment cut short is not a torn tail: only the last segment may have one.
    const sealed = path.join(diskDir, names[1]!)
    fs.truncateSync(sealed, fs.statSync(sealed).size - 10)
    const error = await openChain(diskDir, meta(diskDir), "recover").catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LogCorrupt)
    expect((error as LogCorrupt).file).toBe(sealed)
  })
})

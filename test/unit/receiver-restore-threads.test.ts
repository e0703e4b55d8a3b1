/**
 * Issue 17, session 13: the log's part of a restore made by worker threads
 * (`restoreThreads.ts`), each reading, checking and writing whole reads of the plan. Through
 * one to four threads the image equals the replay whatever the reads' sizes; damage in a
 * record the point keeps (a flipped payload byte, a header forged with a valid CRC, a record
 * cut short), wherever it falls in the threads' slices, is refused with the same typed error,
 * naming the same file and offset, as without the threads; and no byte of a refused record
 * reaches the image. A kept mutant (a thread writing a record's extents before checking it)
 * is caught, and so is one whose record check skips the entry's epoch (the threads run the
 * check of `checkSource`, test/properties/receiver-record-check.test.ts's).
 */
import * as fs from "node:fs"
import * as fsp from "node:fs/promises"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { crc32c } from "../../src/internal/crc32c.js"
import { type Chain, openChain, tableOf } from "../../src/receiver/internal/chain.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import { indexEntryOffset, RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import { openPointMap } from "../../src/receiver/internal/point.js"
import { replayPoint } from "../../src/receiver/internal/replay.js"
import { threadRestores } from "../../src/receiver/internal/restoreThreads.js"
import { threadTuning, tuning, writePoint } from "../../src/receiver/internal/writePoint.js"
import { flipByte, imageAt, makeChanges, readMetaFile, writeDisk } from "../support/receiverDisk.js"
import { restoredBeside, tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-receiver-restore-threads-", "each")

const geometry = { blockSize: 4096, blockCount: 512 }
const diskBytes = geometry.blockSize * geometry.blockCount
const defaults = { ...tuning }
const defaultThreads = threadTuning.threads

afterEach(() => {
  Object.assign(tuning, defaults)
  threadTuning.threads = defaultThreads
  ReceiverMutants.restoreThreadWritesBeforeCheck = false
  ReceiverMutants.restoreThreadCheckSkipsEpoch = false
})

const makeLog = async (dir: string) => {
  const changes = makeChanges(geometry, 150, { seed: 43 })
  const written = await writeDisk(dir, "vm", geometry, changes, { segmentBytes: 64 * 1024 })
  const chain = await openChain(written.diskDir, readMetaFile(written.diskDir), "read")
  return { ...written, changes, chain }
}

/**
 * Restores `seq` through `writePoint` with `threads` threads (0: none) into a new sparse file:
 * the image, or what was thrown and the file as it was left; whether the threads ran.
 */
const restoreWith = async (chain: Chain, seq: number, out: string, threads: number) => {
  threadTuning.threads = threads
  const map = await openPointMap(chain, seq, false)
  const before = threadRestores.started
  const image = await fsp.open(out, "w+")
  let error: unknown
  try {
    await image.truncate(diskBytes)
    await writePoint(map, image, false)
  } catch (e) {
    error = e
  } finally {
    await image.close()
  }
  return { error, image: fs.readFileSync(out), byThreads: threadRestores.started - before }
}

/** A record the last point keeps bytes of: where, one byte of its payload it keeps, and that extent's place in the image. */
const keptRecord = async (chain: Chain, seq: number, fraction: number) => {
  const t = (await openPointMap(chain, seq, false)).table
  const x = Math.floor(t.count * fraction)
  const segment = chain.segments[t.segment[x]!]!
  const table = tableOf(segment)
  const k = table.indexOf(t.seq[x]!)
  return {
    file: path.join(chain.diskDir, segment.name),
    indexFile: segment.indexFile,
    offset: table.offset[k]!,
    length: table.length[k]!,
    seq: t.seq[x]!,
    keptByte: t.fileOffset[x]!,
    extent: [t.start[x]!, t.end[x]!] as const
  }
}

/** The typed error with threads and without, which must be the same: its file, offset and reason. */
const sameRefusal = async (chain: Chain, seq: number, dir: string) => {
  const via = await restoreWith(chain, seq, restoredBeside(dir, "via"), 3)
  const main = await restoreWith(chain, seq, restoredBeside(dir, "main"), 0)
  expect(via.byThreads).toBe(1)
  expect(via.error).toBeInstanceOf(LogCorrupt)
  expect(main.error).toBeInstanceOf(LogCorrupt)
  const { file, offset, reason } = via.error as LogCorrupt
  const m = main.error as LogCorrupt
  expect({ file, offset, reason }).toEqual({ file: m.file, offset: m.offset, reason: m.reason })
  return { file, offset, reason, image: via.image }
}

const zeros = (bytes: Buffer) => bytes.every((b) => b === 0)

/** Flips a bit of header byte `at` of record `r` and makes its CRC right again; gives a function putting the record back. */
const forgeHeader = (
  r: { readonly file: string; readonly offset: number; readonly length: number },
  at: number
) => {
  const record = Buffer.alloc(RECORD_HEADER_BYTES + r.length)
  const fd = fs.openSync(r.file, "r+")
  try {
    fs.readSync(fd, record, 0, record.length, r.offset)
    const forged = Buffer.from(record)
    forged[at]! ^= 1
    forged.writeUInt32LE(crc32c(forged.subarray(RECORD_HEADER_BYTES), crc32c(forged.subarray(0, 36))), 36)
    fs.writeSync(fd, forged, 0, forged.length, r.offset)
  } finally {
    fs.closeSync(fd)
  }
  return () => {
    const back = fs.openSync(r.file, "r+")
    fs.writeSync(back, record, 0, record.length, r.offset)
    fs.closeSync(back)
  }
}

describe("restore's threads", () => {
  it("equal the replay with one to four threads, whatever the reads' sizes", async () => {
    const dir = tempDir()
    const { chain, lastSeq, changes } = await makeLog(dir)
    expect(chain.segments.length).toBeGreaterThan(3)
    const replayed = restoredBeside(dir, "replayed")
    await replayPoint(chain, lastSeq, { _tag: "File", path: replayed })
    const expected = fs.readFileSync(replayed)
    expect(expected.equals(imageAt(geometry, changes, lastSeq))).toBe(true)
    const shapes: ReadonlyArray<readonly [number, Partial<typeof tuning>]> = [
      [1, {}],
      [2, { runBytes: 4096, recordBytes: 4096, runGap: 0 }],
      [3, { runBytes: 20_000, runGap: 4096, direct: false }],
      [4, { runBytes: 1 << 20, runGap: 1 << 20 }]
    ]
    for (const [threads, shape] of shapes) {
      Object.assign(tuning, defaults, shape)
      const got = await restoreWith(chain, lastSeq, restoredBeside(dir, `threads-${threads}`), threads)
      if (got.error !== undefined) throw got.error
      expect(got.byThreads).toBe(1)
      expect(got.image.equals(expected)).toBe(true)
    }
  })

  it("damage anywhere in the threads' slices (a flipped payload byte, a forged header, a record cut short): the same typed error as without them, nothing of the record written", async () => {
    const dir = tempDir()
    const { chain, lastSeq } = await makeLog(dir)
    // Small reads: the plan has many, shared among the threads; damage early, midway and late.
    tuning.runBytes = 8192
    for (const fraction of [0.05, 0.5, 0.95]) {
      const r = await keptRecord(chain, lastSeq, fraction)
      flipByte(r.file, r.keptByte)
      const flipped = await sameRefusal(chain, lastSeq, dir)
      expect(flipped).toMatchObject({
        file: r.file,
        offset: r.offset,
        reason: `record ${r.seq}: CRC32C mismatch`
      })
      expect(zeros(flipped.image.subarray(r.extent[0], r.extent[1]))).toBe(true)
      flipByte(r.file, r.keptByte)
    }
    const r = await keptRecord(chain, lastSeq, 0.5)
    // The record's time (header bytes 28..35) changed and its CRC made again: the index disagrees.
    const restore = forgeHeader(r, 28)
    const forged = await sameRefusal(chain, lastSeq, dir)
    expect(forged.file).toBe(r.indexFile ?? r.file)
    expect(forged.reason).toMatch(/time/)
    expect(zeros(forged.image.subarray(r.extent[0], r.extent[1]))).toBe(true)
    restore()
    // The newest segment cut inside its last record the point keeps.
    const last = chain.segments.at(-1)!
    const lastFile = path.join(chain.diskDir, last.name)
    const table = tableOf(last)
    fs.truncateSync(lastFile, table.offset[table.count - 1]! + RECORD_HEADER_BYTES + 1)
    const cut = await sameRefusal(chain, lastSeq, dir)
    expect(cut).toMatchObject({ file: lastFile, offset: table.offset[table.count - 1]! })
  })

  it("catches a thread that writes a record's extents before checking it (mutant)", async () => {
    const dir = tempDir()
    const { chain, lastSeq } = await makeLog(dir)
    const r = await keptRecord(chain, lastSeq, 0.5)
    flipByte(r.file, r.keptByte)
    ReceiverMutants.restoreThreadWritesBeforeCheck = true
    const got = await restoreWith(chain, lastSeq, restoredBeside(dir, "mutant"), 3)
    // Still refused, but the refused record's bytes are in the image.
    expect(got.error).toBeInstanceOf(LogCorrupt)
    expect(zeros(got.image.subarray(r.extent[0], r.extent[1]))).toBe(false)
  })

  it("run the check of checkSource: a thread whose check skips the entry's epoch (mutant) takes a record its index entry disagrees with", async () => {
    const dir = tempDir()
    const { chain, lastSeq, diskDir } = await makeLog(dir)
    const r = await keptRecord(chain, lastSeq, 0.5)
    // The record's index entry says another epoch (its CRC made right): only the check against the entry tells.
    expect(r.indexFile).toBeDefined()
    const index = fs.readFileSync(r.indexFile!)
    const k = tableOf(chain.segments.find((s) => s.indexFile === r.indexFile)!).indexOf(r.seq)
    index.writeUInt32LE(index.readUInt32LE(indexEntryOffset(k) + 36) ^ 1, indexEntryOffset(k) + 36)
    index.writeUInt32LE(crc32c(index.subarray(0, index.length - 4)), index.length - 4)
    fs.writeFileSync(r.indexFile!, index)
    const forged = await openChain(diskDir, readMetaFile(diskDir), "read")
    const refused = await sameRefusal(forged, lastSeq, dir)
    expect(refused).toMatchObject({ file: r.indexFile, offset: indexEntryOffset(k) })
    expect(refused.reason).toMatch(/epoch/)
    ReceiverMutants.restoreThreadCheckSkipsEpoch = true
    const got = await restoreWith(forged, lastSeq, restoredBeside(dir, "mutant"), 3)
    expect(got.byThreads).toBe(1)
    expect(got.error).toBeUndefined()
  })
})

/**
 * Issue 13, finding 3 (segment and index parts): an index is a cache of its segment's record
 * headers and is never trusted blindly. Opening a chain checks every segment's header and the
 * form of every index, and spot-checks it against the segment; restore and fold check every
 * record they read against the entry that listed it. These tests fail on the code before.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Effect, Either, Exit } from "effect"
import { describe, expect, it } from "vitest"
import { restoredBeside, tempDirs } from "../support/tempDirs.js"
import { openChain } from "../../src/receiver/internal/chain.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import {
  decodeIndex,
  encodeIndex,
  FLAG_RECOVERY_POINT,
  indexName,
  Kind
} from "../../src/receiver/internal/format.js"
import * as LogStore from "../../src/receiver/LogStore.js"
import * as Restore from "../../src/receiver/Restore.js"
import {
  diskId,
  flip,
  forgeIndexEntry,
  forgeRecord,
  hello,
  imageAt,
  locate,
  meta,
  SEGMENT_BYTES,
  segmentFiles,
  writeLog
} from "../support/receiverLog.js"

const tempDir = tempDirs("cdp-receiver-index-", "each")

const failure = async <A, E>(effect: Effect.Effect<A, E>): Promise<unknown> => {
  const exit = await Effect.runPromiseExit(effect)
  return Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
}

const restoreAt = (dir: string, at: number) =>
  Restore.restore({ dir, diskId, at, out: restoredBeside(dir, at) })

describe("restore checks every record it applies against its index entry", () => {
  it("an index forged with a valid CRC (a write inside the resync made a recovery point) is refused, naming the index", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const inside = locate(diskDir, 11)
    expect(inside.file).not.toBe(segmentFiles(diskDir).at(-1))
    expect(inside.position).toBe(1)
    const indexFile = indexName(inside.file)
    const at = forgeIndexEntry(indexFile, inside.position, (e) => {
      e[41]! |= FLAG_RECOVERY_POINT
    })
    // points reads indexes only (the documented limit): it lists the forged point…
    const [listed] = await Effect.runPromise(Restore.points(dir, diskId))
    expect(listed!.points.map((p) => p.seq)).toContain(11)
    // …but restore reads the record and finds the index lying about it.
    const error = await failure(restoreAt(dir, 11))
    expect(error).toBeInstanceOf(LogCorrupt)
    expect(error).toMatchObject({ file: indexFile, offset: at })
    expect((error as LogCorrupt).reason).toMatch(
      /flags 3 \(index\) vs 2 \(record\)|flags 1 \(index\) vs 0 \(record\)/
    )
    expect(fs.existsSync(restoredBeside(dir, 11))).toBe(false)
    // A point before the forged entry restores, and is right.
    const ok = await Effect.runPromise(restoreAt(dir, 8))
    expect(fs.readFileSync(ok.out).equals(imageAt(8))).toBe(true)
  })

  it("a sealed segment's record forged with a valid record CRC disagrees with the CRC its index keeps", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const forged = locate(diskDir, 6)
    expect(forged.file).not.toBe(segmentFiles(diskDir).at(-1))
    forgeRecord(forged, 100)
    const error = await failure(restoreAt(dir, 8))
    expect(error).toBeInstanceOf(LogCorrupt)
    expect(error).toMatchObject({ file: indexName(forged.file) })
    expect((error as LogCorrupt).reason).toMatch(/crc \d+ \(index\) vs \d+ \(record\)/)
  })
})

describe("opening a chain checks every segment header and every index", () => {
  it("a flipped segment-header magic of a sealed (indexed) segment is refused, naming the segment and byte 0", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const sealed = segmentFiles(diskDir)[1]!
    expect(fs.existsSync(indexName(sealed))).toBe(true)
    flip(sealed, 3)
    const error = await openChain(diskDir, meta(diskDir), "recover").catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LogCorrupt)
    expect(error).toMatchObject({ file: sealed, offset: 0 })
    expect((error as LogCorrupt).reason).toMatch(/bad segment magic/)
    const readable = await openChain(diskDir, meta(diskDir), "read")
    expect(readable.damaged).toMatchObject({ file: sealed, offset: 0 })
  })

  it("an index whose marker entry is forged (resync-end made a begin): the receiver refuses it, readers scan instead", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const end = locate(diskDir, 14)
    const indexFile = indexName(end.file)
    expect(fs.existsSync(indexFile)).toBe(true)
    const at = forgeIndexEntry(indexFile, end.position, (e) => {
      e[40] = Kind.ResyncBegin
    })
    const forged = fs.readFileSync(indexFile)
    const read = await openChain(diskDir, meta(diskDir), "read")
    expect(read.damaged).toBeUndefined()
    expect(read.inResync).toBe(false)
    expect(read.lastSeq).toBe(24)
    expect(read.notes.map((n) => n.message).join("\n")).toMatch(
      /scanned a segment whose index is at odds with it \(the receiver refuses the disk\)/
    )
    // Both files pass their own checks: the receiver does not guess which one to believe.
    const error = await openChain(diskDir, meta(diskDir), "recover").catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LogCorrupt)
    expect(error).toMatchObject({ file: indexFile, offset: at })
    expect((error as LogCorrupt).reason).toMatch(/kind 5 \(index\) vs 6 \(record\)/)
    expect(fs.readFileSync(indexFile).equals(forged)).toBe(true)
  })

  it("an index of format 1 is rebuilt (format 2 keeps each record's CRC)", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const sealed = segmentFiles(diskDir)[0]!
    const indexFile = indexName(sealed)
    const original = fs.readFileSync(indexFile)
    const v1 = Buffer.from(original)
    v1.write("CDPSIDX1", 0, "latin1")
    fs.writeFileSync(indexFile, v1)
    const chain = await openChain(diskDir, meta(diskDir), "recover")
    expect(chain.lastSeq).toBe(24)
    expect(fs.readFileSync(indexFile).equals(original)).toBe(true)
  })
})

describe("an index must describe a well-formed segment", () => {
  const entry = (seq: number, offset: number, length: number, kind: Kind = Kind.Write, flags = 1) => ({
    offset,
    length,
    kind,
    flags,
    epoch: 0,
    seq,
    position: 0,
    time: 1,
    crc: 0
  })
  const good = [entry(5, 32, 10, Kind.Write, 3), entry(6, 82, 0, Kind.ResyncEnd), entry(7, 122, 3)]
  const size = 122 + 40 + 3

  it("accepts the right one and names the defect of each wrong one", () => {
    expect(decodeIndex(encodeIndex(size, good), size, 5)).toEqual(good)
    const defect = (entries: ReturnType<typeof entry>[], bytes = size, first = 5) =>
      decodeIndex(encodeIndex(bytes, entries), bytes, first)
    expect(defect(good, size, 4)).toMatchObject({ offset: 24, reason: /first entry has seq 5/ })
    expect(defect([entry(5, 32, 10, Kind.Write, 1), ...good.slice(1)])).toMatchObject({
      reason: "first entry does not start a commit"
    })
    expect(defect([good[0]!, entry(6, 83, 0, Kind.ResyncEnd), good[2]!])).toMatchObject({ offset: 72 })
    expect(defect([good[0]!, entry(7, 82, 0, Kind.ResyncEnd), entry(8, 122, 3)])).toMatchObject({
      reason: "seq 7 does not follow 5"
    })
    expect(defect([good[0]!, entry(6, 82, 4, Kind.ResyncEnd), entry(7, 126, 3)], size + 4)).toMatchObject({
      reason: /implausible payload length 4/
    })
    expect(defect(good.slice(0, 2), size)).toMatchObject({ reason: /last entry ends at byte 122/ })
    expect(defect([], size)).toMatchObject({ reason: "an index without entries" })
  })
})

describe("a fold checks the records it reads against the index that chose its target", () => {
  it("an index forged to make a resync write a recovery point: the fold refuses, base and segments untouched", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const inside = locate(diskDir, 11)
    const indexFile = indexName(inside.file)
    const at = forgeIndexEntry(indexFile, inside.position, (e) => {
      e[41]! |= FLAG_RECOVERY_POINT
    })
    const base = fs.readFileSync(path.join(diskDir, "base.img"))
    const error = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* LogStore.open({ dir, segmentBytes: SEGMENT_BYTES })
          const disk = yield* store.disk(hello)
          return yield* Effect.promise(() =>
            disk.foldTo(11).then(
              () => undefined,
              (e: unknown) => e
            )
          )
        })
      )
    )
    expect(error).toBeInstanceOf(LogCorrupt)
    expect(error).toMatchObject({ file: indexFile, offset: at })
    // The base is untouched and no segment is gone.
    expect(fs.readFileSync(path.join(diskDir, "base.img")).equals(base)).toBe(true)
    expect(fs.existsSync(inside.file)).toBe(true)
  })

  it("retention meeting that forgery fails the disk's log (refused until a restart), deleting nothing", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const inside = locate(diskDir, 11)
    forgeIndexEntry(indexName(inside.file), inside.position, (e) => {
      e[41]! |= FLAG_RECOVERY_POINT
    })
    const before = fs.readdirSync(diskDir).sort()
    const refused = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* LogStore.open({
            dir,
            segmentBytes: SEGMENT_BYTES,
            retain: { _tag: "Size", bytes: 1 },
            retentionInterval: "20 millis"
          })
          const disk = yield* store.disk(hello)
          // Retention runs at once and on its timer; wait (without a deadline) for its verdict.
          while (disk.failure === undefined && disk.base.seq === 0) yield* Effect.sleep("20 millis")
          const hello2 = yield* Effect.either(store.disk(hello))
          return Either.isLeft(hello2) ? hello2.left : "served"
        })
      )
    )
    expect(refused).toMatchObject({ _tag: "HelloRefused", reason: "log-failed" })
    expect((refused as LogStore.HelloRefused).detail).toMatch(/\.idx at byte \d+: the index disagrees/)
    // (The fold's temporary base is left for the next start to remove, as after any failed fold.)
    expect(
      fs
        .readdirSync(diskDir)
        .filter((n) => !n.endsWith(".tmp"))
        .sort()
    ).toEqual(before)
  })
})

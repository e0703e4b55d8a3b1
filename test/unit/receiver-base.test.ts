/**
 * The receiver's disk metadata and its creation: the format-2 base trailer, the
 * checksummed `disk.json`, a missing `disk.json` (refused, nothing deleted — it used to
 * wipe the log), creations cut short (recognised, moved aside, never deleted with data),
 * a directory whose `disk.json` names another disk, and the index/segment order of a
 * fold's clean-up (no orphan index).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { readBase, writeEmptyBase } from "../../src/receiver/internal/base.js"
import { encodeMeta, inspectDiskDir, openChain, readMeta } from "../../src/receiver/internal/chain.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import {
  BASE_TRAILER_V2_BYTES,
  decodeBaseTrailerV2,
  encodeBaseTrailer,
  encodeBaseTrailerV2
} from "../../src/receiver/internal/format.js"
import * as LogStore from "../../src/receiver/LogStore.js"
import {
  captured,
  failureOf,
  makeChanges,
  readMetaFile,
  removeTempDirs,
  snapshot,
  tempDir,
  withStore,
  writeDisk
} from "../support/receiverDisk.js"

afterEach(() => {
  removeTempDirs()
  captured.length = 0
})

const geometry = { blockSize: 4096, blockCount: 64 }
const hello = (diskId: string, watermark = 0) => ({ diskId, ...geometry, watermark })

/** Opens the store on `dir` and says hello for `diskId`: the disk's durable seq, or the refusal. */
const helloOutcome = async (dir: string, diskId: string) => {
  const exit = await withStore(dir, (store) => Effect.map(store.disk(hello(diskId)), (d) => d.durable))
  return Exit.isSuccess(exit) ? exit.value : failureOf(exit)
}

describe("base trailer, format 2", () => {
  it("round-trips, and every single-bit flip is refused", () => {
    const trailer = {
      seq: 2 ** 40 + 3,
      time: 1_700_000_000_123,
      blockSize: 65536,
      blockCount: 2 ** 30,
      unitBytes: 65536,
      tableCrc: 0xdeadbeef,
      anchor: 0x12345678
    }
    const bytes = encodeBaseTrailerV2(trailer)
    expect(bytes.length).toBe(BASE_TRAILER_V2_BYTES)
    expect(decodeBaseTrailerV2(bytes)).toEqual(trailer)
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const flipped = Buffer.from(bytes)
      flipped[bit >> 3]! ^= 1 << (bit & 7)
      expect(decodeBaseTrailerV2(flipped), `bit ${bit}`).toBeTypeOf("string")
    }
  })
})

describe("disk.json", () => {
  const meta = { diskId: "vm1", blockSize: 4096, blockCount: 64, createdAt: "2024-01-01T00:00:00.000Z" }

  it("format 2 carries a CRC32C of its fields: an edit is refused naming the file", async () => {
    const diskDir = path.join(tempDir(), "vm1")
    fs.mkdirSync(diskDir)
    const file = path.join(diskDir, "disk.json")
    fs.writeFileSync(file, encodeMeta(meta))
    expect(await readMeta(diskDir)).toEqual({ format: 2, ...meta })
    // Reformatted (whitespace, key order) is the same content.
    const parsed = JSON.parse(fs.readFileSync(file, "utf8"))
    fs.writeFileSync(file, JSON.stringify({ crc32c: parsed.crc32c, ...meta, format: 2 }, null, 2))
    expect(await readMeta(diskDir)).toEqual({ format: 2, ...meta })
    // An edited geometry is not.
    fs.writeFileSync(file, JSON.stringify({ ...parsed, blockCount: 65 }))
    const edited = await readMeta(diskDir).catch((e: unknown) => e)
    expect(edited).toBeInstanceOf(LogCorrupt)
    expect(edited).toMatchObject({ file, offset: 0 })
    expect((edited as LogCorrupt).reason).toMatch(/CRC32C mismatch.*restore disk.json/)
    // Without its checksum, format 2 is unreadable.
    fs.writeFileSync(file, JSON.stringify({ ...meta, format: 2 }))
    expect(await readMeta(diskDir).catch((e: unknown) => e)).toBeInstanceOf(LogCorrupt)
  })

  it("format 1 (no checksum) still reads; garbage and impossible geometries are refused", async () => {
    const diskDir = path.join(tempDir(), "vm1")
    fs.mkdirSync(diskDir)
    const file = path.join(diskDir, "disk.json")
    fs.writeFileSync(file, JSON.stringify({ format: 1, ...meta }))
    expect(await readMeta(diskDir)).toEqual({ format: 1, ...meta })
    for (const bad of ["{", "null", JSON.stringify({ format: 1, ...meta, blockSize: 1000 })]) {
      fs.writeFileSync(file, bad)
      const error = await readMeta(diskDir).catch((e: unknown) => e)
      expect(error, bad).toBeInstanceOf(LogCorrupt)
      expect(error).toMatchObject({ file, offset: 0 })
    }
  })
})

describe("fuzz", () => {
  const meta = { diskId: "vm1", blockSize: 4096, blockCount: 64, createdAt: "2024-01-01T00:00:00.000Z" }
  const good = encodeMeta(meta).toString("utf8")
  const crc = JSON.parse(good).crc32c as number

  /** Hand-picked disk.json texts: every one refused with a LogCorrupt naming the file. */
  const corpus = [
    "",
    `\uFEFF${good}`,
    "[]",
    "{}",
    '{"format":2}',
    good.replace('"blockCount":64', '"blockCount":64.5'),
    good.replace('"blockCount":64', '"blockCount":-64'),
    good.replace('"blockCount":64', '"blockCount":1e400'),
    good.replace('"blockCount":64', '"blockCount":"64"'),
    good.replace('"diskId":"vm1"', '"diskId":""'),
    good.replace(`"crc32c":${crc}`, `"crc32c":${crc},"blockCount":128`),
    good.replace(`"crc32c":${crc}`, `"crc32c":${crc + 1}`),
    good.replace(`"crc32c":${crc}`, `"crc32c":-1`),
    good.replace('"format":2', '"format":3'),
    JSON.stringify({ format: 1, ...meta, blockSize: 0 }),
    JSON.stringify({ format: 1, ...meta, blockCount: 2 ** 31 }),
    JSON.stringify({ format: 1, ...meta, blockSize: 3000 }),
    good.slice(0, good.length - 3)
  ]

  it("a corpus of hostile disk.json files is refused, each with a LogCorrupt naming the file", async () => {
    const diskDir = path.join(tempDir(), "vm1")
    fs.mkdirSync(diskDir)
    const file = path.join(diskDir, "disk.json")
    for (const text of corpus) {
      fs.writeFileSync(file, text)
      const outcome = await readMeta(diskDir).catch((e: unknown) => e)
      expect(outcome, text).toBeInstanceOf(LogCorrupt)
      expect(outcome).toMatchObject({ file, offset: 0 })
    }
  })

  it("one mutation of a disk.json is refused, or reads the same disk", async () => {
    const diskDir = path.join(tempDir(), "vm1")
    fs.mkdirSync(diskDir)
    const file = path.join(diskDir, "disk.json")
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: good.length - 1 }),
        fc.constantFrom("flip", "delete", "insert"),
        fc.integer({ min: 32, max: 126 }),
        async (at, how, char) => {
          const c = String.fromCharCode(char)
          const text =
            how === "delete"
              ? good.slice(0, at) + good.slice(at + 1)
              : how === "insert"
                ? good.slice(0, at) + c + good.slice(at)
                : good.slice(0, at) + (good[at] === c ? "!" : c) + good.slice(at + 1)
          fs.writeFileSync(file, text)
          const outcome = await readMeta(diskDir).catch((e: unknown) => e)
          if (outcome instanceof LogCorrupt) return
          // Accepted: the same disk (a whitespace change; or the format turned to 1, whose
          // geometry base.img's trailer still cross-checks).
          expect(outcome).toMatchObject(meta)
        }
      ),
      { numRuns: 500 }
    )
  })

  it("readBase over mutated and random files: the same trailer, or a LogCorrupt naming the file and an offset in it", async () => {
    const dir = tempDir()
    const file = path.join(dir, "base.img")
    const small = { blockSize: 4096, blockCount: 3 }
    await writeEmptyBase(file, small)
    const pristine = fs.readFileSync(file)
    const handleOf = async (bytes: Buffer) => {
      fs.writeFileSync(file, bytes)
      const handle = await fs.promises.open(file, "r")
      try {
        return await readBase(handle, file, small).catch((e: unknown) => e)
      } finally {
        await handle.close()
      }
    }
    const expected = await handleOf(pristine)
    expect(expected).toMatchObject({ format: 2, seq: 0 })
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          // A flip anywhere in the last 100 bytes (the table's end and the trailer).
          fc
            .record({ at: fc.integer({ min: 1, max: 100 }), mask: fc.integer({ min: 1, max: 255 }) })
            .map(({ at, mask }) => {
              const b = Buffer.from(pristine)
              b[b.length - at]! ^= mask
              return b
            }),
          // Cut or extended.
          fc
            .integer({ min: -200, max: 200 })
            .filter((n) => n !== 0)
            .map((n) =>
              n < 0 ? pristine.subarray(0, pristine.length + n) : Buffer.concat([pristine, Buffer.alloc(n)])
            ),
          // Anything at all.
          fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a))
        ),
        async (bytes) => {
          const outcome = await handleOf(bytes)
          if (outcome instanceof LogCorrupt) {
            expect(outcome.file).toBe(file)
            expect(outcome.offset).toBeGreaterThanOrEqual(0)
            expect(outcome.offset).toBeLessThanOrEqual(bytes.length)
          } else {
            // Only a flip outside the trailer (in the table) leaves the trailer readable.
            expect(outcome).toEqual(expected)
            expect(bytes.length).toBe(pristine.length)
          }
        }
      ),
      { numRuns: 400 }
    )
  })
})

describe("a missing disk.json", () => {
  it("refuses the disk with the reason and the way to recover, and deletes nothing", async () => {
    const dir = tempDir()
    const changes = makeChanges(geometry, 120, { seed: 3 })
    const { diskDir, lastSeq } = await writeDisk(dir, "vm1", geometry, changes, { segmentBytes: 16 * 1024 })
    expect(lastSeq).toBe(120)
    fs.rmSync(path.join(diskDir, "disk.json"))
    const before = snapshot(diskDir)
    expect(Object.keys(before).filter((n) => n.endsWith(".seg")).length).toBeGreaterThan(2)

    const refused = await helloOutcome(dir, "vm1")
    expect(refused).toBeInstanceOf(LogStore.HelloRefused)
    expect(refused).toMatchObject({ reason: "log-failed" })
    const detail = (refused as LogStore.HelloRefused).detail
    expect(detail).toMatch(
      /disk\.json at byte 0: missing, but the directory holds \d+ segment and index files/
    )
    expect(detail).toMatch(/write disk\.json again.*or move the directory out of DIR/)
    // Logged at ERROR when the directory was opened.
    expect(captured.join("\n")).toMatch(/ERROR vm1: cannot open the log.*missing, but the directory holds/)
    // Nothing was deleted or changed.
    expect(snapshot(diskDir)).toEqual(before)

    // The message holds a disk.json to write back (the geometry from base.img's trailer).
    const suggested = /e\.g\. (\{.*?\}) and restart/.exec(detail)?.[1]
    expect(suggested).toBeDefined()
    fs.writeFileSync(path.join(diskDir, "disk.json"), suggested!)
    expect(await helloOutcome(dir, "vm1")).toBe(120)
  })

  it("a disk whose trailer is unreadable and disk.json missing is refused, not recreated", async () => {
    const dir = tempDir()
    const diskDir = path.join(dir, "vm1")
    fs.mkdirSync(diskDir)
    fs.writeFileSync(path.join(diskDir, "base.img"), Buffer.alloc(5000, 7))
    const before = snapshot(diskDir)
    const refused = await helloOutcome(dir, "vm1")
    expect(refused).toMatchObject({ reason: "log-failed" })
    expect((refused as LogStore.HelloRefused).detail).toMatch(/an unreadable base image/)
    expect(snapshot(diskDir)).toEqual(before)
  })
})

describe("creating a disk", () => {
  it("appears whole: base.img and a checksummed disk.json, no staging directory left", async () => {
    const dir = tempDir()
    expect(await helloOutcome(dir, "vm1")).toBe(0)
    expect(fs.readdirSync(dir).sort()).toEqual(["vm1"])
    expect(fs.readdirSync(path.join(dir, "vm1")).sort()).toEqual(["base.img", "disk.json"])
    expect(readMetaFile(path.join(dir, "vm1"))).toMatchObject({ format: 2, diskId: "vm1", ...geometry })
    expect(JSON.parse(fs.readFileSync(path.join(dir, "vm1", "disk.json"), "utf8")).crc32c).toBeTypeOf(
      "number"
    )
  })

  it("a directory left by an old creation cut short (base at seq 0, no disk.json) is moved aside, not deleted", async () => {
    const dir = tempDir()
    const diskDir = path.join(dir, "vm1")
    fs.mkdirSync(diskDir)
    // The old creation order: base.img (format 1, seq 0), then disk.json — cut before it.
    const base = Buffer.alloc(4096 * 64 + 32)
    encodeBaseTrailer({ seq: 0, time: 0 }).copy(base, 4096 * 64)
    fs.writeFileSync(path.join(diskDir, "base.img"), base)
    expect(await inspectDiskDir(diskDir)).toMatchObject({ _tag: "Unfinished" })
    expect(await helloOutcome(dir, "vm1")).toBe(0)
    const aside = fs.readdirSync(dir).filter((n) => n.startsWith(".aside-vm1-"))
    expect(aside).toHaveLength(1)
    expect(fs.readFileSync(path.join(dir, aside[0]!, "base.img")).equals(base)).toBe(true)
    expect(captured.join("\n")).toMatch(/WARN vm1: .* held a disk creation cut short .*moved aside/)
    expect(readMetaFile(diskDir).diskId).toBe("vm1")
  })

  it("an empty directory is taken; a stale staging directory is cleared, or moved aside when it holds more", async () => {
    const dir = tempDir()
    fs.mkdirSync(path.join(dir, "vm1"))
    fs.mkdirSync(path.join(dir, ".creating-vm1"))
    await writeEmptyBase(path.join(dir, ".creating-vm1", "base.img.tmp"), geometry)
    expect(await helloOutcome(dir, "vm1")).toBe(0)
    expect(fs.readdirSync(dir).sort()).toEqual(["vm1"])

    fs.mkdirSync(path.join(dir, ".creating-vm2"))
    fs.writeFileSync(path.join(dir, ".creating-vm2", "notes.txt"), "mine")
    expect(await helloOutcome(dir, "vm2")).toBe(0)
    const aside = fs.readdirSync(dir).filter((n) => n.startsWith(".aside-.creating-vm2-"))
    expect(aside).toHaveLength(1)
    expect(fs.readFileSync(path.join(dir, aside[0]!, "notes.txt"), "utf8")).toBe("mine")
  })

  it("a directory without disk.json that holds a segment, or anything unexpected, is refused", async () => {
    const dir = tempDir()
    const changes = makeChanges(geometry, 10, { seed: 5 })
    const { diskDir } = await writeDisk(dir, "vm1", geometry, changes)
    fs.rmSync(path.join(diskDir, "disk.json"))
    // Only the segment is evidence here: the base is at seq 0.
    expect(await inspectDiskDir(diskDir)).toMatchObject({ _tag: "Refused" })
    const other = path.join(dir, "vm2")
    fs.mkdirSync(other)
    fs.writeFileSync(path.join(other, "keep.me"), "x")
    const refused = await helloOutcome(dir, "vm2")
    expect((refused as LogStore.HelloRefused).detail).toMatch(/other files \(keep\.me\)/)
    expect(fs.readdirSync(other)).toEqual(["keep.me"])
  })
})

describe("a directory whose disk.json names another disk", () => {
  it("is ignored (a copy moved aside inside DIR), and the disk's own directory is served", async () => {
    const dir = tempDir()
    const changes = makeChanges(geometry, 20, { seed: 8 })
    await writeDisk(dir, "vm", geometry, changes.slice(0, 10))
    fs.cpSync(path.join(dir, "vm"), path.join(dir, "vm.old"), { recursive: true })
    await writeDisk(dir, "vm", geometry, changes.slice(10))
    expect(await helloOutcome(dir, "vm")).toBe(20)
    expect(captured.join("\n")).toMatch(/WARN vm\.old: holds disk "vm", whose directory is vm: ignored/)
  })
})

describe("a fold's clean-up (issue 13, finding 8)", () => {
  const setUp = async () => {
    const dir = tempDir()
    const changes = makeChanges(geometry, 80, { seed: 11 })
    const { diskDir } = await writeDisk(dir, "vm", geometry, changes.slice(0, 60), { segmentBytes: 6000 })
    return { dir, diskDir, changes }
  }

  it("removes each index before its segment: a failure in between leaves the segment, not an orphan index", async () => {
    const { dir, diskDir, changes } = await setUp()
    const first = fs
      .readdirSync(diskDir)
      .filter((n) => n.endsWith(".seg"))
      .sort()[0]!
    const index = path.join(diskDir, first.replace(".seg", ".idx"))
    const exit = await withStore(dir, (store) =>
      Effect.gen(function* () {
        const disk = yield* store.disk(hello("vm", 60))
        for (const c of changes.slice(60)) disk.append(c.record, true)
        yield* disk.flushed
        // An index that cannot be unlinked (a directory) stands for a kill between the two unlinks.
        fs.rmSync(index)
        fs.mkdirSync(index)
        fs.writeFileSync(path.join(index, "x"), "")
        const seq = disk.segments.at(-2)!.lastSeq
        return yield* Effect.tryPromise(() => disk.foldTo(seq))
      })
    )
    const failure = failureOf(exit) as { cause?: unknown }
    expect(String(failure.cause)).toMatch(/EISDIR|EPERM/)
    expect(fs.existsSync(path.join(diskDir, first))).toBe(true)
  })

  it("an index whose segment a fold removed is removed when the chain is opened (one after the base is evidence: the matrix keeps it)", async () => {
    const dir = tempDir()
    const changes = makeChanges(geometry, 60, { seed: 12 })
    const { diskDir, baseSeq } = await writeDisk(dir, "vm", geometry, changes, {
      segmentBytes: 6000,
      fold: true
    })
    expect(baseSeq).toBeGreaterThan(0)
    // The fold removed segment 1; a kill between the unlinks of the old order left its index.
    expect(fs.existsSync(path.join(diskDir, "0000000000000001.seg"))).toBe(false)
    fs.writeFileSync(path.join(diskDir, "0000000000000001.idx"), "what a folded segment held")
    const chain = await openChain(diskDir, readMetaFile(diskDir), "recover")
    expect(chain.lastSeq).toBe(60)
    expect(chain.notes.map((n) => n.message)).toContain("removed an index whose segment a fold removed")
    const left = fs.readdirSync(diskDir)
    for (const name of left.filter((n) => n.endsWith(".idx")))
      expect(left, `orphan ${name}`).toContain(name.replace(".idx", ".seg"))
    expect(await helloOutcome(dir, "vm")).toBe(60)
  })
})

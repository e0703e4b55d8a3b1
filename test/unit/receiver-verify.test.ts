/**
 * Issue 13, finding 3: "damage inside a sealed segment goes unnoticed by the running
 * receiver". Opening a disk trusts a sealed segment's index once it passes its checks, so the
 * receiver verifies every sealed segment in the background at a bounded rate: damage fails
 * the disk's log (an ERROR naming the file and offset; nothing deleted), an index that fails
 * its own checks is rebuilt from its verified segment.
 */
import * as fs from "node:fs"
import { Effect, Either, HashMap, Logger } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import type { Segment } from "../../src/receiver/internal/chain.js"
import { openChain } from "../../src/receiver/internal/chain.js"
import type { LogError } from "../../src/receiver/internal/errors.js"
import { indexName, RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import { verifyDisk, verifySealed } from "../../src/receiver/internal/verify.js"
import * as LogStore from "../../src/receiver/LogStore.js"
import {
  flip,
  forgeIndexEntry,
  hello,
  locate,
  meta,
  SEGMENT_BYTES,
  segmentFiles,
  snapshot,
  writeLog
} from "../support/receiverLog.js"

const tempDir = tempDirs("cdp-receiver-verify-", "each")

interface Logged {
  readonly level: string
  readonly message: string
  readonly annotations: Record<string, unknown>
}

/** Runs `effect` with its log lines collected. */
const logged = <A, E>(effect: Effect.Effect<A, E>) => {
  const lines: Array<Logged> = []
  const logger = Logger.make(({ logLevel, message, annotations }) => {
    lines.push({
      level: logLevel.label,
      message: String(Array.isArray(message) ? message.join(" ") : message),
      annotations: Object.fromEntries(HashMap.toEntries(annotations))
    })
  })
  return Effect.runPromise(
    Effect.either(effect).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
  ).then((result) => ({ result, lines }))
}

/** The sealed segments of a freshly written log, as the chain knows them. */
const sealedOf = async (diskDir: string): Promise<Array<Segment>> =>
  (await openChain(diskDir, meta(diskDir), "read")).segments.slice(0, -1)

const noPause = async () => {}

/** A disk for `verifyDisk`: the chain's segments, and what the verification does to it. */
const diskFor = (diskDir: string, segments: ReadonlyArray<Segment>) => {
  const failures: Array<LogError> = []
  const disk = {
    diskId: "vm-damage",
    diskDir,
    segments: [...segments, segments[0]!],
    failure: undefined as LogError | undefined,
    fail(error: LogError) {
      failures.push(error)
      disk.failure = error
    },
    maintenance: Effect.unsafeMakeSemaphore(1)
  }
  return { disk, failures }
}

describe("verifying a sealed segment", () => {
  it("a good one, read at the pace asked: every byte of it through the pacer", async () => {
    const diskDir = await writeLog(tempDir())
    const [first] = await sealedOf(diskDir)
    let paced = 0
    const verdict = await verifySealed(diskDir, first!, async (bytes) => {
      paced += bytes
    })
    expect(verdict).toEqual({ _tag: "Good" })
    expect(paced).toBe(first!.bytes)
  })

  it("a flipped payload byte: damage naming the segment and the record's offset", async () => {
    const diskDir = await writeLog(tempDir())
    const r = locate(diskDir, 5)
    flip(r.file, r.offset + RECORD_HEADER_BYTES + 3)
    const [first] = await sealedOf(diskDir)
    expect(await verifySealed(diskDir, first!, noPause)).toMatchObject({
      _tag: "Damaged",
      error: { file: r.file, offset: r.offset, reason: expect.stringMatching(/CRC32C mismatch/) }
    })
  })

  it("a well-formed index at odds with its segment: damage naming the index entry", async () => {
    const diskDir = await writeLog(tempDir())
    const r = locate(diskDir, 3)
    const at = forgeIndexEntry(indexName(r.file), r.position, (e) => {
      e[16]! ^= 1
    })
    const [first] = await sealedOf(diskDir)
    expect(await verifySealed(diskDir, first!, noPause)).toMatchObject({
      _tag: "Damaged",
      error: { file: indexName(r.file), offset: at, reason: expect.stringMatching(/position/) }
    })
  })

  it("a missing index: rebuilt from the verified segment; a removed segment: gone", async () => {
    const diskDir = await writeLog(tempDir())
    const sealed = await sealedOf(diskDir)
    const indexFile = indexName(segmentFiles(diskDir)[0]!)
    const original = fs.readFileSync(indexFile)
    fs.rmSync(indexFile)
    const { disk, failures } = diskFor(diskDir, sealed)
    const stats = { verified: 0 }
    const { lines } = await logged(verifyDisk(disk, 1 << 30, stats))
    expect(failures).toEqual([])
    expect(stats.verified).toBe(sealed.length)
    expect(fs.readFileSync(indexFile).equals(original)).toBe(true)
    expect(lines.map((l) => `${l.level} ${l.message}`)).toContain(
      "WARN vm-damage: rebuilt an index that disagreed with its segment"
    )
    fs.rmSync(segmentFiles(diskDir)[0]!)
    expect(await verifySealed(diskDir, sealed[0]!, noPause)).toEqual({ _tag: "Gone" })
  })

  it("damage fails the disk's log with an ERROR naming the file and offset, and deletes nothing", async () => {
    const diskDir = await writeLog(tempDir())
    const r = locate(diskDir, 11)
    flip(r.file, r.offset + 2)
    const before = snapshot(diskDir)
    const { disk, failures } = diskFor(diskDir, await sealedOf(diskDir))
    const { lines } = await logged(verifyDisk(disk, 1 << 30, { verified: 0 }))
    expect(failures).toHaveLength(1)
    expect(failures[0]).toMatchObject({ _tag: "LogCorrupt", file: r.file, offset: r.offset })
    const error = lines.find((l) => l.level === "ERROR")
    expect(error?.message).toMatch(/the background verification found damage; the log failed/)
    expect(error?.annotations).toMatchObject({ file: r.file, at: r.offset })
    expect(snapshot(diskDir)).toEqual(before)
  })
})

describe("the running receiver", () => {
  it("refuses a disk once its background verification finds damage inside a sealed segment", async () => {
    const dir = tempDir()
    const diskDir = await writeLog(dir)
    const r = locate(diskDir, 6)
    flip(r.file, r.offset + RECORD_HEADER_BYTES + 300)
    const before = snapshot(diskDir)
    const { result } = await logged(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* LogStore.open({ dir, segmentBytes: SEGMENT_BYTES, verifyRate: 1 << 30 })
          // The disk opens (its index stands in for the segment): it is served at first.
          const first = yield* Effect.either(store.disk(hello))
          // No deadline: the first pass starts at once.
          while (store.stats.verifyPasses === 0) yield* Effect.sleep("5 millis")
          const second = yield* Effect.either(store.disk(hello))
          return { first: Either.isRight(first), second: Either.isLeft(second) ? second.left : undefined }
        })
      )
    )
    const outcome = Either.getOrThrow(result)
    expect(outcome.first).toBe(true)
    expect(outcome.second).toMatchObject({ _tag: "HelloRefused", reason: "log-failed" })
    expect((outcome.second as LogStore.HelloRefused).detail).toContain(
      `${r.file} at byte ${r.offset}: CRC32C mismatch`
    )
    expect(snapshot(diskDir)).toEqual(before)
  })
})

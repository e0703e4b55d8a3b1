/**
 * The corruption matrix of the receiver's segment and index files (issue 13, deliverable:
 * "every byte on the receiver's disk is verifiable"). Each row damages a real log — a flipped
 * byte (a record header, a payload, a segment header's magic), a cut (inside a record, at a
 * record boundary), a deleted file, a forgery with a valid checksum — in a sealed segment,
 * the active one or an index, and states the outcome for each reader:
 *
 * - the receiver (`LogStore.open`: recovery, then one pass of the background verification,
 *   then a hello): served with the durable seq, or refused with a `LogCorrupt` naming the file
 *   and byte offset;
 * - `points` (read mode): the last seq listed, and where the readable log stops;
 * - `restore`: the image at a seq — compared byte for byte with the image the records make —
 *   or a refusal naming the file and offset;
 * - `scrub`: every damage (file, offset, reason), or clean.
 *
 * Never wrong data (an image that differs from the one the records make), and never a file
 * deleted or changed because something is damaged: the only repairs are a torn tail of the
 * last commit (cut) and an index that fails its own checks (rebuilt from its verified
 * segment), plus dropping the index of the segment that is the active one again. The one
 * documented limit is a forgery of the active segment with a valid CRC (no index to compare):
 * a CRC is no MAC.
 *
 * The log (test/support/receiverLog.ts): sealed segments 1..9, 10..12, 13..21 (with
 * indexes), the active segment 22..24; one commit per record; a resync from 9 to 14.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Effect, Either, Exit } from "effect"
import { describe, expect, it } from "vitest"
import { restoredBeside, tempDirs } from "../support/tempDirs.js"
import { openChain } from "../../src/receiver/internal/chain.js"
import { LogCorrupt } from "../../src/receiver/internal/errors.js"
import {
  INDEX_ENTRY_BYTES,
  INDEX_HEADER_BYTES,
  indexName,
  Kind,
  RECORD_HEADER_BYTES
} from "../../src/receiver/internal/format.js"
import * as LogStore from "../../src/receiver/LogStore.js"
import * as Restore from "../../src/receiver/Restore.js"
import * as Scrub from "../../src/receiver/Scrub.js"
import {
  diskId,
  flip,
  forgeIndexEntry,
  forgeRecord,
  hello,
  imageAt,
  locate,
  meta,
  points as truePoints,
  SEGMENT_BYTES,
  segmentFiles,
  snapshot,
  writeLog
} from "../support/receiverLog.js"

const root = tempDirs("cdp-corruption-")()
let dirs = 0

// ---------------------------------------------------------------------------------------------
// Expectations

/** A damage: the file (by name), its byte offset, the reason. */
interface At {
  readonly file: string
  readonly offset: number
  readonly reason: RegExp
}

type ReceiverOutcome =
  /** Opened (repairs noted), verified, the hello welcomed at `durable`. */
  | { readonly served: number }
  /** Refused (at open, or by the background verification), naming `at`. */
  | { readonly refused: At }

type RestoreOutcome =
  /** The image the records make at this seq, exactly. */
  | { readonly image: number }
  /** Refused, naming the damage (a LogCorrupt, or a NotARecoveryPoint whose reason names it). */
  | { readonly refused: At }
  /** The documented limit: the forged record is applied (the image differs from the true one). */
  | { readonly forged: number }

/** What may change in the disk's directory when the receiver opens it (nothing else may). */
type Repair =
  | { readonly _tag: "none" }
  /** A torn tail cut off the active segment, down to `bytes`. */
  | { readonly _tag: "cut"; readonly file: string; readonly bytes: number }
  /** An index rebuilt: it must then equal the one the store wrote. */
  | { readonly _tag: "index"; readonly file: string }
  /** The index of the segment that is the active one again, removed. */
  | { readonly _tag: "tail-index"; readonly file: string }

interface Row {
  readonly name: string
  /** Damages the log; what each reader must do. */
  readonly damage: (diskDir: string) => Expected
}

interface Expected {
  readonly receiver: ReceiverOutcome
  readonly repair: Repair
  readonly points: { readonly lastSeq: number; readonly stopsAt?: At }
  readonly restore: ReadonlyArray<readonly [at: number | string, outcome: RestoreOutcome]>
  /** Every damage scrub must report (and no other); `[]`: clean. */
  readonly scrub: ReadonlyArray<At>
  readonly scrubNotes?: RegExp
}

// ---------------------------------------------------------------------------------------------
// The log's landmarks

const base = (file: string) => path.basename(file)
const seg = (diskDir: string, n: 0 | 1 | 2 | 3) => segmentFiles(diskDir)[n]!
const entryAt = (position: number) => INDEX_HEADER_BYTES + position * INDEX_ENTRY_BYTES
const cut = (file: string, bytes: number) => fs.truncateSync(file, bytes)
const at = (file: string, offset: number, reason: RegExp): At => ({ file: base(file), offset, reason })

/** Every record whole and listed: what the receiver serves when nothing is lost. */
const all = { lastSeq: 24 } as const
const fine = [
  [8, { image: 8 }],
  ["latest", { image: 24 }]
] as const

// ---------------------------------------------------------------------------------------------
// The rows

const rows: ReadonlyArray<Row> = [
  // --- a sealed segment (13..21, indexed) -----------------------------------------------------
  {
    name: "sealed segment: a flipped byte in a record header",
    damage: (d) => {
      const r = locate(d, 16)
      flip(r.file, r.offset + 20)
      const damage = at(r.file, r.offset, /CRC32C mismatch/)
      return {
        // Opening trusts the index; the background verification reads the segment and refuses.
        receiver: { refused: damage },
        repair: { _tag: "none" },
        points: all,
        restore: [
          [14, { image: 14 }],
          ["latest", { refused: damage }]
        ],
        scrub: [damage]
      }
    }
  },
  {
    name: "sealed segment: a flipped payload byte",
    damage: (d) => {
      const r = locate(d, 18)
      flip(r.file, r.offset + RECORD_HEADER_BYTES + 100)
      const damage = at(r.file, r.offset, /CRC32C mismatch/)
      return {
        receiver: { refused: damage },
        repair: { _tag: "none" },
        points: all,
        restore: [
          [17, { image: 17 }],
          [18, { refused: damage }]
        ],
        scrub: [damage]
      }
    }
  },
  {
    name: "sealed segment: a flipped segment-header magic",
    damage: (d) => {
      const file = seg(d, 2)
      flip(file, 2)
      const damage = at(file, 0, /bad segment magic/)
      return {
        receiver: { refused: damage },
        repair: { _tag: "none" },
        points: { lastSeq: 12, stopsAt: damage },
        restore: [
          [8, { image: 8 }],
          // Damage before the end: "latest" cannot be told, and is refused naming the damage.
          ["latest", { refused: damage }],
          [21, { refused: damage }]
        ],
        scrub: [damage]
      }
    }
  },
  {
    name: "sealed segment: cut inside its last record",
    damage: (d) => {
      const r = locate(d, 21)
      cut(r.file, r.offset + r.size - 10)
      const damage = at(r.file, r.offset, /short record/)
      return {
        receiver: { refused: damage },
        repair: { _tag: "none" },
        points: { lastSeq: 20, stopsAt: damage },
        restore: [
          [20, { image: 20 }],
          // Damage before the end: "latest" cannot be told, and is refused naming the damage.
          ["latest", { refused: damage }],
          [21, { refused: damage }]
        ],
        scrub: [damage, at(indexName(r.file), 8, /describes a segment of \d+ bytes/)]
      }
    }
  },
  {
    name: "sealed segment: cut at a record boundary (its last record gone)",
    damage: (d) => {
      const r = locate(d, 21)
      cut(r.file, r.offset)
      const damage = at(seg(d, 3), 32, /seq 22 does not follow 20/)
      return {
        receiver: { refused: damage },
        repair: { _tag: "none" },
        points: { lastSeq: 20, stopsAt: damage },
        restore: [
          [20, { image: 20 }],
          // Damage before the end: "latest" cannot be told, and is refused naming the damage.
          ["latest", { refused: damage }],
          [22, { refused: damage }]
        ],
        scrub: [at(indexName(r.file), 8, /describes a segment of \d+ bytes/), damage]
      }
    }
  },
  {
    name: "sealed segment: deleted",
    damage: (d) => {
      const file = seg(d, 2)
      fs.rmSync(file)
      const damage = at(seg(d, 2), 32, /seq 22 does not follow 12/)
      return {
        receiver: { refused: damage },
        repair: { _tag: "none" },
        points: { lastSeq: 12, stopsAt: damage },
        restore: [
          [8, { image: 8 }],
          // Damage before the end: "latest" cannot be told, and is refused naming the damage.
          ["latest", { refused: damage }],
          // Nor can a time (a point beyond the damage may be older than it).
          ["-1s", { refused: damage }],
          [14, { refused: damage }]
        ],
        scrub: [at(indexName(file), 0, /its segment is missing/), damage]
      }
    }
  },
  {
    name: "sealed segment: a record forged with a valid record CRC",
    damage: (d) => {
      const r = locate(d, 16)
      forgeRecord(r, 5)
      const damage = at(indexName(r.file), entryAt(r.position), /crc \d+ \(index\) vs \d+ \(record\)/)
      return {
        receiver: { refused: damage },
        repair: { _tag: "none" },
        points: all,
        restore: [
          [15, { image: 15 }],
          ["latest", { refused: damage }]
        ],
        scrub: [damage]
      }
    }
  },
  // --- an index (of 13..21 unless said) ---------------------------------------------------------
  {
    name: "index: a flipped byte in an entry",
    damage: (d) => {
      const file = indexName(seg(d, 2))
      flip(file, entryAt(3) + 9)
      return {
        receiver: { served: 24 },
        repair: { _tag: "index", file: base(file) },
        points: all,
        restore: fine,
        scrub: [at(file, fs.statSync(file).size - 4, /index CRC32C mismatch/)]
      }
    }
  },
  {
    name: "index: a flipped magic",
    damage: (d) => {
      const file = indexName(seg(d, 2))
      flip(file, 1)
      return {
        receiver: { served: 24 },
        repair: { _tag: "index", file: base(file) },
        points: all,
        restore: fine,
        scrub: [at(file, 0, /bad index magic/)]
      }
    }
  },
  {
    name: "index: cut inside an entry",
    damage: (d) => {
      const file = indexName(seg(d, 2))
      cut(file, entryAt(4) + 20)
      return {
        receiver: { served: 24 },
        repair: { _tag: "index", file: base(file) },
        points: all,
        restore: fine,
        scrub: [at(file, 16, /index length does not match its entry count/)]
      }
    }
  },
  {
    name: "index: cut at an entry boundary",
    damage: (d) => {
      const file = indexName(seg(d, 2))
      cut(file, entryAt(4))
      return {
        receiver: { served: 24 },
        repair: { _tag: "index", file: base(file) },
        points: all,
        restore: fine,
        scrub: [at(file, 16, /index length does not match its entry count/)]
      }
    }
  },
  {
    name: "index: deleted",
    damage: (d) => {
      const file = indexName(seg(d, 2))
      fs.rmSync(file)
      return {
        receiver: { served: 24 },
        repair: { _tag: "index", file: base(file) },
        points: all,
        restore: fine,
        scrub: [at(file, 0, /missing/)]
      }
    }
  },
  {
    name: "index: forged with a valid CRC (a resync write made a recovery point)",
    damage: (d) => {
      const r = locate(d, 11)
      const file = indexName(r.file)
      const offset = forgeIndexEntry(file, r.position, (e) => {
        e[41]! |= 1
      })
      const damage = at(file, offset, /flags 3 \(index\) vs 2 \(record\)/)
      return {
        // The open's spot check reads the first, last and marker entries only; the verification finds it.
        receiver: { refused: damage },
        repair: { _tag: "none" },
        // points lists what the index says (the documented limit); restore refuses to use it.
        points: all,
        restore: [
          [8, { image: 8 }],
          [11, { refused: damage }],
          ["latest", { refused: damage }]
        ],
        scrub: [damage]
      }
    }
  },
  {
    name: "index: forged with a valid CRC (a marker's kind changed)",
    damage: (d) => {
      const r = locate(d, 14)
      const file = indexName(r.file)
      const offset = forgeIndexEntry(file, r.position, (e) => {
        e[40] = Kind.ResyncBegin
      })
      const damage = at(file, offset, /kind 5 \(index\) vs 6 \(record\)/)
      return {
        receiver: { refused: damage },
        repair: { _tag: "none" },
        // Readers scan the segment instead of an index that is at odds with it.
        points: all,
        restore: fine,
        scrub: [damage]
      }
    }
  },
  {
    name: "index: forged with a valid CRC (the first entry's seq)",
    damage: (d) => {
      const file = indexName(seg(d, 2))
      forgeIndexEntry(file, 0, (e) => {
        e[8] = 99
      })
      return {
        // It fails its own checks (the name says 13): a damaged cache, rebuilt.
        receiver: { served: 24 },
        repair: { _tag: "index", file: base(file) },
        points: all,
        restore: fine,
        scrub: [at(file, entryAt(0), /first entry has seq 99, the segment starts at 13/)]
      }
    }
  },
  // --- the active segment (22..24, three commits) -------------------------------------------
  {
    name: "active segment: a flipped byte in a record header (a later commit follows)",
    damage: (d) => {
      const r = locate(d, 23)
      flip(r.file, r.offset + 13)
      const damage = at(r.file, r.offset, /CRC32C mismatch, yet a later commit follows/)
      return {
        receiver: { refused: damage },
        repair: { _tag: "none" },
        points: { lastSeq: 22, stopsAt: damage },
        restore: [
          [22, { image: 22 }],
          // Damage before the end: "latest" cannot be told, and is refused naming the damage.
          ["latest", { refused: damage }],
          [24, { refused: damage }]
        ],
        scrub: [damage]
      }
    }
  },
  {
    name: "active segment: a flipped payload byte in the last commit (cut as a torn tail: the limit)",
    damage: (d) => {
      const r = locate(d, 24)
      flip(r.file, r.offset + RECORD_HEADER_BYTES + 7)
      return {
        receiver: { served: 23 },
        repair: { _tag: "cut", file: base(r.file), bytes: r.offset },
        points: { lastSeq: 23 },
        restore: [["latest", { image: 23 }]],
        scrub: [],
        scrubNotes: /torn tail at byte \d+ \(CRC32C mismatch\)/
      }
    }
  },
  {
    name: "active segment: a flipped segment-header magic",
    damage: (d) => {
      const file = seg(d, 3)
      flip(file, 0)
      const damage = at(file, 0, /bad segment magic, yet a later commit follows at byte 32/)
      return {
        receiver: { refused: damage },
        repair: { _tag: "none" },
        points: { lastSeq: 21, stopsAt: damage },
        restore: [
          [21, { image: 21 }],
          // Damage before the end: "latest" cannot be told, and is refused naming the damage.
          ["latest", { refused: damage }],
          [24, { refused: damage }]
        ],
        scrub: [damage]
      }
    }
  },
  {
    name: "active segment: cut inside the last record (a torn tail)",
    damage: (d) => {
      const r = locate(d, 24)
      cut(r.file, r.offset + 50)
      return {
        receiver: { served: 23 },
        repair: { _tag: "cut", file: base(r.file), bytes: r.offset },
        points: { lastSeq: 23 },
        restore: [["latest", { image: 23 }]],
        scrub: [],
        scrubNotes: /torn tail at byte \d+ \(short record payload\)/
      }
    }
  },
  {
    name: "active segment: cut at a record boundary (indistinguishable from never written)",
    damage: (d) => {
      const r = locate(d, 24)
      cut(r.file, r.offset)
      return {
        receiver: { served: 23 },
        repair: { _tag: "none" },
        points: { lastSeq: 23 },
        restore: [["latest", { image: 23 }]],
        scrub: []
      }
    }
  },
  {
    name: "active segment: deleted (the filter learns the durable seq from the welcome and resyncs)",
    damage: (d) => {
      const file = seg(d, 3)
      fs.rmSync(file)
      return {
        receiver: { served: 21 },
        repair: { _tag: "tail-index", file: base(indexName(seg(d, 2))) },
        points: { lastSeq: 21 },
        restore: [["latest", { image: 21 }]],
        scrub: [],
        scrubNotes: /the last segment has an index/
      }
    }
  },
  {
    name: "active segment: a record forged with a valid CRC (no index to compare: the documented limit)",
    damage: (d) => {
      const r = locate(d, 23)
      forgeRecord(r, 0)
      return {
        receiver: { served: 24 },
        repair: { _tag: "none" },
        points: all,
        restore: [
          [22, { image: 22 }],
          ["latest", { forged: 24 }]
        ],
        scrub: []
      }
    }
  }
]

// ---------------------------------------------------------------------------------------------
// Running a row

const matches = (actual: { file: string; offset: number; reason: string }, expected: At) =>
  base(actual.file) === expected.file &&
  actual.offset === expected.offset &&
  expected.reason.test(actual.reason)

/** A refusal names the damage: a LogCorrupt for it, or a refusal whose message carries it. */
const names = (error: unknown, expected: At): boolean => {
  if (error instanceof LogCorrupt) return matches(error, expected)
  const message = error instanceof Error ? error.message : String(error)
  return (
    new RegExp(`${expected.file.replace(/\./g, "\\.")} at byte ${expected.offset}: `).test(message) &&
    expected.reason.test(message)
  )
}

const failure = async <A, E>(effect: Effect.Effect<A, E>): Promise<Either.Either<A, unknown>> => {
  const exit = await Effect.runPromiseExit(effect)
  return Exit.isSuccess(exit) ? Either.right(exit.value) : Either.left(Cause.squash(exit.cause))
}

/** Opens the store (recovery), lets one verification pass run, says hello. */
const receiver = (dir: string) =>
  failure(
    Effect.scoped(
      Effect.gen(function* () {
        const store = yield* LogStore.open({ dir, segmentBytes: SEGMENT_BYTES, verifyRate: 1 << 30 })
        // No deadline: the pass starts at once and its pace is a fraction of a millisecond here.
        while (store.stats.verifyPasses === 0) yield* Effect.sleep("5 millis")
        const disk = yield* store.disk(hello)
        return disk.durable
      })
    )
  )

const check = async (row: Row) => {
  const dir = path.join(root, `row-${dirs++}`)
  const diskDir = await writeLog(dir)
  const pristine = snapshot(diskDir)
  const expected = row.damage(diskDir)
  const damaged = snapshot(diskDir)

  // points: the readable log, never a point that is not one (but for the documented index forgery).
  const listed = await failure(Restore.points(dir, diskId))
  expect(Either.isRight(listed), `points: ${Either.isLeft(listed) && listed.left}`).toBe(true)
  const disk = Either.getOrThrow(listed)[0]!
  expect(disk.lastSeq).toBe(expected.points.lastSeq)
  const chain = await openChain(diskDir, meta(diskDir), "read")
  if (expected.points.stopsAt === undefined) expect(chain.damaged).toBeUndefined()
  else
    expect(
      chain.damaged !== undefined && matches(chain.damaged, expected.points.stopsAt),
      String(chain.damaged)
    ).toBe(true)
  const honest = row.name.includes("recovery point")
  for (const p of disk.points) if (!honest || p.seq !== 11) expect(truePoints).toContain(p.seq)

  // restore: the exact image, or a refusal naming the damage.
  for (const [target, outcome] of expected.restore) {
    const out = restoredBeside(dir, target)
    const restored = await failure(Restore.restore({ dir, diskId, at: target, out }))
    if ("refused" in outcome) {
      expect(Either.isLeft(restored), `restore ${target} must be refused`).toBe(true)
      const error = Either.isLeft(restored) ? restored.left : undefined
      expect(names(error, outcome.refused), `restore ${target}: ${String(error)}`).toBe(true)
      expect(fs.existsSync(out)).toBe(false)
    } else {
      expect(Either.isRight(restored), `restore ${target}: ${Either.isLeft(restored) && restored.left}`).toBe(
        true
      )
      const r = Either.getOrThrow(restored)
      const seq = "image" in outcome ? outcome.image : outcome.forged
      expect(r.seq).toBe(seq)
      const image = fs.readFileSync(out)
      if ("image" in outcome)
        expect(image.equals(imageAt(seq)), `restore ${target}: the image at ${seq}`).toBe(true)
      else expect(image.equals(imageAt(seq))).toBe(false)
      fs.rmSync(out)
    }
  }

  // scrub: exactly the damage expected.
  const report = Either.getOrThrow(await failure(Scrub.scrub(dir, diskId)))
  const found = report.disks[0]!.damage
  expect(
    found.map((e) => `${base(e.file)}@${e.offset}: ${e.reason}`),
    "scrub's damage"
  ).toHaveLength(expected.scrub.length)
  for (const [i, e] of expected.scrub.entries())
    expect(matches(found[i]!, e), `scrub: ${found[i]?.message} ≠ ${e.file}@${e.offset}`).toBe(true)
  expect(report.clean).toBe(expected.scrub.length === 0)
  if (expected.scrubNotes !== undefined)
    expect(report.disks[0]!.notes.join("\n")).toMatch(expected.scrubNotes)

  // The readers changed nothing.
  expect(snapshot(diskDir)).toEqual(damaged)

  // The receiver: served or refused, and only the allowed repair.
  const opened = await receiver(dir)
  if ("served" in expected.receiver) {
    expect(Either.isRight(opened), `receiver: ${Either.isLeft(opened) && opened.left}`).toBe(true)
    expect(Either.getOrThrow(opened)).toBe(expected.receiver.served)
  } else {
    expect(Either.isLeft(opened), "the receiver must refuse the disk").toBe(true)
    const refusal = Either.isLeft(opened) ? opened.left : undefined
    expect(refusal).toMatchObject({ _tag: "HelloRefused", reason: "log-failed" })
    expect(names((refusal as LogStore.HelloRefused).detail, expected.receiver.refused), String(refusal)).toBe(
      true
    )
  }
  const after = snapshot(diskDir)
  const repair = expected.repair
  const changed = [...new Set([...damaged.keys(), ...after.keys()])].filter(
    (n) => !(damaged.get(n)?.equals(after.get(n) ?? Buffer.alloc(0)) ?? false) || !after.has(n)
  )
  if (repair._tag === "none") expect(changed).toEqual([])
  else {
    // A segment's block index (.bix) is a cache derived from it: it goes with its .idx.
    const blockIndexOfRepaired = (n: string) =>
      n.endsWith(".bix") && n.replace(/\.bix$/, ".idx") === repair.file
    expect(changed.filter((n) => !blockIndexOfRepaired(n))).toEqual([repair.file])
    if (repair._tag === "cut") expect(after.get(repair.file)!.length).toBe(repair.bytes)
    if (repair._tag === "index") expect(after.get(repair.file)!.equals(pristine.get(repair.file)!)).toBe(true)
    if (repair._tag === "tail-index") expect(after.has(repair.file)).toBe(false)
    // Repaired: nothing left to find.
    const again = Either.getOrThrow(await failure(Scrub.scrub(dir, diskId)))
    expect(again.disks[0]!.damage.map((e) => e.message)).toEqual([])
  }
}

describe("corruption matrix: segments and indexes", () => {
  for (const row of rows) it(row.name, () => check(row))
})

/**
 * The snapshot's log anchor: opening a journal whose snapshot records where the entry
 * after its position starts scans only from there. It must give exactly what the full
 * scan gives (positions, events from 0 and from anywhere, snapshot, torn tail cut),
 * and any anchor that does not check against the log — past the end, inside a record,
 * at another record, of another log, garbage, missing — falls back to the full scan.
 * A mutant that trusts the anchor without checking the log there must be caught.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Logger, LogLevel, Option, Stream } from "effect"
import fc from "fast-check"
import * as Config from "../../src/domain/Config.js"
import * as Event from "../../src/domain/Event.js"
import * as State from "../../src/domain/State.js"
import * as Trace from "../../src/domain/Trace.js"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as journalFile from "../../src/adapters/internal/journalFile.js"
import { crc32c } from "../../src/internal/crc32c.js"

const numRuns = Math.max(1, Math.round(40 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1)))

const config = Either.getOrThrow(
  Config.make({ blockCount: 64, blockSize: 4096, window: 8, congestionLimit: 65536 })
)
/** The journal does not fold: any snapshot will do, one that tells positions apart. */
const snapshotOf = (n: number) => State.toSnapshot(State.make({ ...State.initial(config), nextSeq: n }))

// Events whose encodings differ in length (records straddle every read chunk edge) and repeat.
const eventArb: fc.Arbitrary<Event.Event> = fc.oneof(
  fc.nat({ max: 40 }).map((seq): Event.Event => ({ type: "Acked", seq })),
  fc
    .tuple(fc.nat({ max: 1 << 20 }), fc.integer({ min: 1, max: 64 }))
    .map(([s, n]): Event.Event => ({ type: "WriteTracked", offset: s * 512, length: n * 512 })),
  fc.string({ minLength: 1, maxLength: 300 }).map((reason): Event.Event => ({ type: "LinkLost", reason })),
  // Trace version 3's runs: records from a few dozen bytes to a few KiB.
  fc
    .tuple(
      fc.nat({ max: 1 << 16 }),
      fc.uniqueArray(fc.nat({ max: 1 << 20 }), { minLength: 1, maxLength: 200 })
    )
    .map(([id, blocks]): Event.Event => ({ type: "RunCompared", id, blocks: blocks.sort((a, b) => a - b) })),
  fc.tuple(fc.nat({ max: 1 << 16 }), fc.integer({ min: 1, max: Event.MAX_RUN_BLOCKS }), fc.nat()).map(
    ([id, count, pick]): Event.Event => ({
      type: "RunMatched",
      id,
      count,
      except: count > 1 && pick % 2 === 0 ? [id + (pick % count)] : []
    })
  )
)

const recordOf = (event: Event.Event): Buffer => {
  const payload = Buffer.from(Trace.encodeEvent(event), "utf8")
  const out = Buffer.alloc(8 + payload.length)
  out.writeUInt32LE(payload.length, 0)
  out.writeUInt32LE(crc32c(payload), 4)
  payload.copy(out, 8)
  return out
}

const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> =>
  Effect.runPromise(effect.pipe(Logger.withMinimumLogLevel(LogLevel.Error)))

const tempDir = () => fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-anchor-"))
const logOf = (dir: string) => path.join(dir, EventJournal.LOG_FILE)
const snapshotFileOf = (dir: string) => path.join(dir, EventJournal.SNAPSHOT_FILE)

/** Writes `before`, a snapshot at `at` (≤ before.length), then `after`. */
const writeJournal = (
  dir: string,
  before: ReadonlyArray<Event.Event>,
  at: number,
  after: ReadonlyArray<Event.Event>
) =>
  run(
    Effect.scoped(
      Effect.gen(function* () {
        const journal = yield* journalFile.make({ directory: dir })
        for (let i = 0; i < before.length; i += 500) yield* journal.append(before.slice(i, i + 500))
        yield* journal.saveSnapshot(snapshotOf(at), at)
        if (after.length > 0) yield* journal.append(after)
      })
    )
  )

type Outcome = Seen | { readonly failed: string; readonly report: journalFile.OpenReport | undefined }

interface Seen {
  readonly report: journalFile.OpenReport | undefined
  readonly position: number
  readonly recovery: EventJournal.Recovery | undefined
  readonly all: ReadonlyArray<EventJournal.Entry>
  readonly fromSnapshot: ReadonlyArray<EventJournal.Entry>
  readonly fromProbe: ReadonlyArray<EventJournal.Entry>
  readonly snapshot: Option.Option<EventJournal.SavedSnapshot>
  /** The log after opening, an append and a snapshot at the end. */
  readonly log: Buffer
  readonly snapshotText: string
}

/** Opens the journal, reads it every way, appends one event and snapshots the end. */
const observe = async (
  dir: string,
  knobs: Partial<journalFile.FileTestOptions>,
  probe: (position: number) => number
): Promise<Outcome> => {
  let report: journalFile.OpenReport | undefined
  const outcome = await run(
    Effect.either(
      Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* journalFile.make({
            directory: dir,
            ...knobs,
            onOpen: (r) => {
              report = r
            }
          })
          const position = yield* journal.position
          const snapshot = yield* journal.loadSnapshot
          const at = Option.match(snapshot, { onNone: () => 0, onSome: (s) => s.position })
          const read = (from: number) => Effect.map(Stream.runCollect(journal.read(from)), Chunk.toArray)
          const seen = {
            position,
            recovery: journal.recovery,
            all: yield* read(0),
            fromSnapshot: yield* read(at),
            fromProbe: yield* read(probe(position)),
            snapshot
          }
          yield* journal.append([{ type: "Acked", seq: 7 }])
          // Below the end: the anchor is walked to from the (possibly sparse) index.
          yield* journal.saveSnapshot(snapshotOf(probe(position)), probe(position))
          return seen
        })
      )
    )
  )
  if (outcome._tag === "Left") return { failed: outcome.left._tag, report }
  // Reopened from that snapshot's anchor, then a snapshot at the end (the writer's own anchor).
  let reopenReport: journalFile.OpenReport | undefined
  const reopened = await run(
    Effect.scoped(
      Effect.gen(function* () {
        const journal = yield* journalFile.make({ directory: dir, onOpen: (r) => (reopenReport = r) })
        const position = yield* journal.position
        const events = (yield* Stream.runCollect(journal.read(0))).length
        yield* journal.saveSnapshot(snapshotOf(position), position)
        return { position, events }
      })
    )
  )
  expect(reopened).toEqual({ position: outcome.right.position + 1, events: outcome.right.position + 1 })
  expect(reopenReport?.scan).toBe(probe(outcome.right.position) === 0 ? "full" : "anchored")
  return {
    ...outcome.right,
    report,
    log: await fs.readFile(logOf(dir)),
    snapshotText: await fs.readFile(snapshotFileOf(dir), "utf8")
  }
}

/** Opens a copy of `dir` as given and another copy with the full scan; both must see the same. */
const compare = async (
  dir: string,
  knobs: Partial<journalFile.FileTestOptions>,
  probe = (p: number) => p >> 1
) => {
  const a = `${dir}-a`
  const b = `${dir}-b`
  await fs.cp(dir, a, { recursive: true })
  await fs.cp(dir, b, { recursive: true })
  try {
    const tested = await observe(a, knobs, probe)
    const reference = await observe(b, { ignoreAnchor: true }, probe)
    const strip = (s: Outcome) => ({ ...s, report: undefined })
    return { tested, reference, same: strip(tested), expected: strip(reference) }
  } finally {
    await fs.rm(a, { recursive: true, force: true })
    await fs.rm(b, { recursive: true, force: true })
  }
}

const reportOf = (s: Outcome) => s.report

describe("EventJournal layerFile: the snapshot's log anchor", () => {
  it("an open from the anchor sees what the full scan sees (random journals, snapshots, torn tails)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(eventArb, { minLength: 1, maxLength: 2600 }),
        fc.nat(),
        fc.array(eventArb, { maxLength: 40 }),
        fc.option(fc.tuple(eventArb, fc.nat()), { nil: undefined }),
        fc.nat(),
        async (before, at0, after, torn, probe0) => {
          const at = at0 % (before.length + 1)
          const dir = await tempDir()
          try {
            await writeJournal(dir, before, at, after)
            if (torn !== undefined) {
              // A crash inside an append leaves a prefix of its record at the end.
              const bytes = recordOf(torn[0])
              await fs.appendFile(logOf(dir), bytes.subarray(0, 1 + (torn[1] % (bytes.length - 1))))
            }
            const { tested, reference, same, expected } = await compare(dir, {}, (p) => probe0 % (p + 1))
            expect(same).toEqual(expected)
            expect(reportOf(reference)).toEqual({ scan: "full", from: 0 })
            const offset = before.slice(0, at).reduce((n, e) => n + recordOf(e).length, 0)
            expect(reportOf(tested)).toEqual(
              at === 0
                ? { scan: "full", from: 0, fallback: "it is at position 0" }
                : torn !== undefined && after.length === 0 && at === before.length
                  ? // A torn record right at the anchor: no checked record starts there.
                    { scan: "full", from: 0, fallback: `no checked record starts at its offset ${offset}` }
                  : { scan: "anchored", from: offset }
            )
            if (!("failed" in tested)) {
              expect(tested.all.map((e) => e.event)).toEqual([...before, ...after])
              expect(tested.recovery !== undefined).toBe(torn !== undefined)
            }
          } finally {
            await fs.rm(dir, { recursive: true, force: true })
          }
        }
      ),
      { numRuns }
    )
  }, 120_000)

  // 1200 distinct events, a snapshot at 900, 20 more after it: the anchor is offset[900].
  const events = Array.from({ length: 1220 }, (_, i): Event.Event => ({ type: "Acked", seq: i }))
  const offsets = [0]
  for (const e of events) offsets.push(offsets[offsets.length - 1]! + recordOf(e).length)
  const crcOf = (i: number) => recordOf(events[i]!).readUInt32LE(4)
  const check = (position: number, offset: number, previous: number, crc: number) =>
    crc32c(Buffer.from(JSON.stringify([position, offset, previous, crc]), "utf8"))
  const anchor = (offset: number, previous: number, crc: number) => ({
    offset,
    previous,
    crc32c: crc,
    check: check(900, offset, previous, crc)
  })
  const valid = anchor(offsets[900]!, offsets[899]!, crcOf(899))

  /** [case, the snapshot's log field (undefined: none), how the open must scan]. */
  const matrix: ReadonlyArray<readonly [string, unknown, "anchored" | "full"]> = [
    ["valid", valid, "anchored"],
    ["missing (a snapshot written before anchors)", undefined, "full"],
    ["offset past the end", anchor(offsets[1220]! + 40, offsets[1220]!, crcOf(1219)), "full"],
    [
      "offset past the end, after the whole log's last record",
      anchor(offsets[1220]! + 1, offsets[1219]!, crcOf(1219)),
      "full"
    ],
    ["offset inside a record", anchor(offsets[900]! + 3, offsets[899]! + 3, crcOf(899)), "full"],
    ["previous inside a record", anchor(offsets[900]!, offsets[899]! + 1, crcOf(899)), "full"],
    [
      "offset at another record, everything forged to match but the check",
      { ...valid, offset: offsets[600]!, previous: offsets[599]!, crc32c: crcOf(599) },
      "full"
    ],
    [
      "offset at another record, check forged, the previous record's CRC kept",
      anchor(offsets[600]!, offsets[599]!, crcOf(899)),
      "full"
    ],
    [
      "a CRC that is not the previous record's (check valid)",
      anchor(offsets[900]!, offsets[899]!, crcOf(899) ^ 1),
      "full"
    ],
    ["a flipped bit in the check", { ...valid, check: valid.check ^ 0x100 }, "full"],
    ["offset as a string", { ...valid, offset: String(valid.offset) }, "full"],
    ["negative offset", { ...valid, offset: -1 }, "full"],
    ["fractional offset", { ...valid, offset: valid.offset + 0.5 }, "full"],
    ["field missing", { offset: valid.offset, previous: valid.previous, check: valid.check }, "full"],
    ["an array", [valid.offset, valid.previous, valid.crc32c, valid.check], "full"],
    ["null", null, "full"],
    ["a number", valid.offset, "full"]
  ]

  const withAnchor = async (dir: string, log: unknown) => {
    const saved = JSON.parse(await fs.readFile(snapshotFileOf(dir), "utf8")) as Record<string, unknown>
    const { log: _, ...rest } = saved
    await fs.writeFile(snapshotFileOf(dir), JSON.stringify(log === undefined ? rest : { ...rest, log }))
  }

  it("corruption matrix: every anchor that does not check falls back to the full scan, same state", async () => {
    const dir = await tempDir()
    try {
      await writeJournal(dir, events.slice(0, 1200), 900, events.slice(1200))
      const written = JSON.parse(await fs.readFile(snapshotFileOf(dir), "utf8")) as { log: unknown }
      expect(written.log).toEqual(valid)
      for (const [name, log, scan] of matrix) {
        await withAnchor(dir, log)
        const { tested, same, expected } = await compare(dir, {})
        expect(same, name).toEqual(expected)
        expect(reportOf(tested)?.scan, name).toBe(scan)
        if (scan === "full") expect(reportOf(tested)?.fallback, name).toBeDefined()
        expect("failed" in tested ? tested.failed : tested.position, name).toBe(1220)
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  }, 60_000)

  it("fuzz: any log field (JSON values, anchors near record edges with their check) opens as the full scan", async () => {
    const dir = await tempDir()
    try {
      await writeJournal(dir, events.slice(0, 1200), 900, events.slice(1200))
      const near = fc
        .tuple(fc.constantFrom(0, 1, 599, 600, 899, 900, 901, 1219, 1220), fc.integer({ min: -9, max: 9 }))
        .map(([i, d]) => Math.max(0, offsets[i]! + d))
      const forged = fc
        .tuple(
          near,
          near,
          fc.oneof(fc.constant(crcOf(899)), fc.nat({ max: 1219 }).map(crcOf), fc.nat({ max: 0xffffffff }))
        )
        .map(([offset, previous, crc]) => anchor(offset, previous, crc))
      await fc.assert(
        fc.asyncProperty(fc.oneof(fc.jsonValue(), forged), async (log) => {
          await withAnchor(dir, log)
          const { tested, same, expected } = await compare(dir, {})
          expect(same).toEqual(expected)
          // Only the true anchor is scanned from (these events are all distinct).
          if (reportOf(tested)?.scan === "anchored") expect(log).toEqual(valid)
        }),
        { numRuns: Math.max(1, Math.round(numRuns / 2)) }
      )
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  }, 120_000)

  it("an anchor of another journal's log (same length, other events) falls back", async () => {
    const dir = await tempDir()
    const other = await tempDir()
    try {
      await writeJournal(dir, events.slice(0, 1200), 900, events.slice(1200))
      const shifted = events.map((_, i): Event.Event => ({ type: "Acked", seq: 5000 + i }))
      await writeJournal(other, shifted.slice(0, 1200), 900, shifted.slice(1200))
      await fs.copyFile(logOf(other), logOf(dir))
      const { tested, same, expected } = await compare(dir, {})
      expect(same).toEqual(expected)
      expect(reportOf(tested)).toMatchObject({ scan: "full" })
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
      await fs.rm(other, { recursive: true, force: true })
    }
  })

  it("damage after the anchor is named by the full scan, as without an anchor", async () => {
    const dir = await tempDir()
    try {
      await writeJournal(dir, events.slice(0, 1200), 900, events.slice(1200))
      const bytes = await fs.readFile(logOf(dir))
      bytes[offsets[1000]! + 10]! ^= 1
      await fs.writeFile(logOf(dir), bytes)
      const { tested, same, expected } = await compare(dir, {})
      expect(same).toEqual(expected)
      expect(same).toEqual({ failed: "JournalCorrupt", report: undefined })
      expect(reportOf(tested)).toMatchObject({ scan: "full", fallback: expect.stringContaining("damaged") })
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  })

  it("mutant: an open that trusts the anchor without checking the log there is caught", async () => {
    const dir = await tempDir()
    try {
      await writeJournal(dir, events.slice(0, 1200), 900, events.slice(1200))
      const caught: Array<string> = []
      for (const [name, log] of matrix) {
        await withAnchor(dir, log)
        const { same, expected } = await compare(dir, { trustAnchor: true })
        if (JSON.stringify(same) !== JSON.stringify(expected)) caught.push(name)
      }
      // Trusted, an anchor whose check holds but whose log does not lands on the wrong position.
      // (Inside a record, the scan from it meets damage and falls back; a wrong `previous` or
      // CRC only misleads the next anchor, which the append after the open replaces.)
      expect(caught).toEqual([
        "offset past the end",
        "offset past the end, after the whole log's last record",
        "offset at another record, check forged, the previous record's CRC kept"
      ])
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  }, 60_000)
})

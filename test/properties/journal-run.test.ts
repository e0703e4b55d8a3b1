/**
 * The journal's run file (`journal.json`): the geometry its events fold from and
 * whether the last run closed cleanly.
 * - a property over its boundaries (every geometry edge, positions up to 2^53 − 1):
 *   what is written reads back, through the codec and through the file layer;
 * - a corruption matrix (flip, truncate, delete, forge with a valid CRC, a stale temp
 *   file, an oversized file), each with its expected outcome: refused with
 *   `JournalCorrupt` naming the file and an offset, or read as what it says — never
 *   a wrong geometry, never a clean close the log contradicts;
 * - a fuzz corpus and random bytes: the decoder never throws, and accepts only what
 *   the encoder writes.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Effect, Either, Layer, Logger, LogLevel } from "effect"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import { crc32c } from "../../src/internal/crc32c.js"
import {
  decodeRunMark,
  encodeRunMark,
  type Header,
  MAX_RUN_FILE,
  RUN_TEMP,
  type RunMark
} from "../../src/adapters/internal/journalRun.js"
import type * as Event from "../../src/domain/Event.js"
import * as Geometry from "../../src/domain/Geometry.js"

const numRuns = (n: number) => Math.max(1, Math.round(n * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1)))

const header: Header = { blockSize: 4096, blockCount: 64, initial: "in-sync" }
const acks = (from: number, count: number): Array<Event.Event> =>
  Array.from({ length: count }, (_, i) => ({ type: "Acked", seq: from + i }))

const dirs: Array<string> = []
const tempDir = async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-run-"))
  dirs.push(dir)
  return dir
}
afterEach(async () => {
  for (const dir of dirs.splice(0)) await fs.rm(dir, { recursive: true, force: true })
})

const run = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.runPromise(Effect.either(effect).pipe(Logger.withMinimumLogLevel(LogLevel.None)))

const open = (directory: string) =>
  Effect.map(Layer.build(EventJournal.layerFile({ directory })), (ctx) =>
    Context.get(ctx, EventJournal.EventJournal)
  )

/** Opens the journal and begins a run: how the last one ended, or why it cannot. */
const begin = (directory: string, h: Header = header) =>
  run(Effect.scoped(Effect.flatMap(open(directory), (j) => j.beginRun(h))))

const runFile = (dir: string) => path.join(dir, EventJournal.RUN_FILE)

/** A journal of 10 events whose run closed cleanly; the run file's bytes. */
const cleanJournal = async () => {
  const dir = await tempDir()
  const written = await run(
    Effect.scoped(
      Effect.gen(function* () {
        const journal = yield* open(dir)
        yield* journal.beginRun(header)
        yield* journal.append(acks(1, 10))
        yield* journal.endRun
      })
    )
  )
  expect(Either.isRight(written)).toBe(true)
  return { dir, bytes: await fs.readFile(runFile(dir)) }
}

/** A run file with a valid CRC for any content (a forgery). */
const forge = (fields: Record<string, unknown>): string => {
  const body = JSON.stringify(fields)
  return `${body.slice(0, -1)},"crc32c":"${crc32c(Buffer.from(body, "utf8")).toString(16).padStart(8, "0")}"}\n`
}
const fieldsOf = (mark: RunMark) => ({
  format: "cdp-sync-journal",
  version: 1,
  blockSize: mark.header.blockSize,
  blockCount: mark.header.blockCount,
  initial: mark.header.initial,
  run: mark.run,
  closedAt: mark.closedAt
})

// ---------------------------------------------------------------------------

const powerOfTwo = fc.integer({ min: 12, max: 20 }).map((k) => 2 ** k)
const blockCount = fc.oneof(
  fc.constantFrom(1, 2, Geometry.MAX_BLOCK_COUNT - 1, Geometry.MAX_BLOCK_COUNT),
  fc.integer({ min: 1, max: Geometry.MAX_BLOCK_COUNT })
)
const position = fc.oneof(
  fc.constantFrom(0, 1, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER),
  fc.nat({ max: Number.MAX_SAFE_INTEGER })
)
const markArb: fc.Arbitrary<RunMark> = fc
  .record({
    header: fc.record({
      blockSize: powerOfTwo,
      blockCount,
      initial: fc.constantFrom("in-sync" as const, "full-sync" as const)
    }),
    closedAt: fc.option(position, { nil: null })
  })
  .map(({ header, closedAt }) => ({ header, run: closedAt === null ? "open" : "closed", closedAt }))

describe("the journal's run file: boundaries", () => {
  it("every mark, at every geometry edge, reads back as written (and fits the size limit)", () => {
    fc.assert(
      fc.property(markArb, (mark) => {
        const text = encodeRunMark(mark)
        expect(Buffer.byteLength(text)).toBeLessThan(MAX_RUN_FILE)
        expect(decodeRunMark(Buffer.from(text), "f")).toEqual(Either.right(mark))
      }),
      { numRuns: numRuns(500) }
    )
  })

  it("through the file layer: the header a run begins with is what the next run checks", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          blockSize: powerOfTwo,
          blockCount,
          initial: fc.constantFrom("in-sync" as const, "full-sync" as const)
        }),
        fc.nat({ max: 40 }),
        fc.boolean(),
        async (h, events, clean) => {
          const dir = await tempDir()
          await run(
            Effect.scoped(
              Effect.gen(function* () {
                const journal = yield* open(dir)
                yield* journal.beginRun(h)
                yield* journal.append(acks(1, events))
                if (clean) yield* journal.endRun
              })
            )
          )
          const decoded = decodeRunMark(await fs.readFile(runFile(dir)), runFile(dir))
          expect(decoded).toEqual(
            Either.right({ header: h, run: clean ? "closed" : "open", closedAt: clean ? events : null })
          )
          expect(await begin(dir, h)).toEqual(
            Either.right(clean ? { _tag: "Clean" } : expect.objectContaining({ _tag: "Unclean" }))
          )
          const other = await begin(dir, { ...h, blockCount: h.blockCount === 1 ? 2 : h.blockCount - 1 })
          expect(Either.isLeft(other) && other.left._tag).toBe("JournalGeometryMismatch")
        }
      ),
      { numRuns: numRuns(25) }
    )
  })
})

describe("the journal's run file: corruption matrix", () => {
  it("flip: any flipped bit of any byte is refused with JournalCorrupt naming the run file", async () => {
    const { dir, bytes } = await cleanJournal()
    for (let at = 0; at < bytes.length; at++) {
      for (const bit of [0x01, 0x20, 0x80]) {
        const damaged = Buffer.from(bytes)
        damaged[at]! ^= bit
        // A trailing newline turned into another whitespace-free byte is damage too.
        await fs.writeFile(runFile(dir), damaged)
        const opened = await begin(dir)
        expect(Either.isLeft(opened), `byte ${at} ^ ${bit} was accepted`).toBe(true)
        if (Either.isLeft(opened)) {
          expect(opened.left).toMatchObject({ _tag: "JournalCorrupt", file: runFile(dir) })
          const offset = (opened.left as EventJournal.JournalCorrupt).offset
          expect(offset).toBeGreaterThanOrEqual(0)
          expect(offset).toBeLessThanOrEqual(bytes.length)
        }
      }
    }
    // Refusing to open changed nothing, and the undamaged file still reads as clean.
    await fs.writeFile(runFile(dir), bytes)
    expect(await begin(dir)).toEqual(Either.right({ _tag: "Clean" }))
  })

  it("truncate: every cut is refused, but for the optional trailing newline", async () => {
    const { dir, bytes } = await cleanJournal()
    for (let length = 0; length < bytes.length; length++) {
      await fs.writeFile(runFile(dir), bytes.subarray(0, length))
      const opened = await begin(dir)
      if (length === bytes.length - 1) expect(opened).toEqual(Either.right({ _tag: "Clean" }))
      else
        expect(opened, `cut at ${length}`).toEqual(
          Either.left(expect.objectContaining({ _tag: "JournalCorrupt", file: runFile(dir) }))
        )
      await fs.writeFile(runFile(dir), bytes)
    }
  })

  it("delete: the journal reads as one older than run files: unclean (a resync), events kept", async () => {
    const { dir } = await cleanJournal()
    await fs.rm(runFile(dir))
    const opened = await begin(dir)
    expect(opened).toEqual(Either.right(expect.objectContaining({ _tag: "Unclean" })))
    const position = await run(Effect.scoped(Effect.flatMap(open(dir), (j) => j.position)))
    expect(position).toEqual(Either.right(10))
  })

  it("forge with a valid CRC: a geometry or a clean close the log contradicts is refused", async () => {
    const { dir } = await cleanJournal()
    const logEnd = (await fs.stat(path.join(dir, EventJournal.LOG_FILE))).size
    const clean: RunMark = { header, run: "closed", closedAt: 10 }
    const cases: ReadonlyArray<readonly [string, string, (o: Either.Either<unknown, unknown>) => void]> = [
      [
        "another geometry",
        forge(fieldsOf({ ...clean, header: { ...header, blockCount: 128 } })),
        (o) => expect(o).toEqual(Either.left(expect.objectContaining({ _tag: "JournalGeometryMismatch" })))
      ],
      [
        "a clean close beyond the log (events lost)",
        forge(fieldsOf({ ...clean, closedAt: 11 })),
        (o) =>
          expect(o).toEqual(
            Either.left(
              expect.objectContaining({
                _tag: "JournalCorrupt",
                file: path.join(dir, EventJournal.LOG_FILE),
                offset: logEnd
              })
            )
          )
      ],
      [
        "a clean close before the log's end",
        forge(fieldsOf({ ...clean, closedAt: 9 })),
        (o) => expect(o).toEqual(Either.right(expect.objectContaining({ _tag: "Unclean" })))
      ],
      [
        "an invalid geometry",
        forge(fieldsOf({ ...clean, header: { ...header, blockSize: 1000 } })),
        (o) => expect(o).toEqual(Either.left(expect.objectContaining({ _tag: "JournalCorrupt" })))
      ],
      [
        "a closed run without its position",
        forge({ ...fieldsOf(clean), closedAt: null }),
        (o) => expect(o).toEqual(Either.left(expect.objectContaining({ _tag: "JournalCorrupt" })))
      ],
      [
        "an extra field",
        forge({ ...fieldsOf(clean), note: "x" }),
        (o) => expect(o).toEqual(Either.left(expect.objectContaining({ _tag: "JournalCorrupt" })))
      ],
      [
        "another version",
        forge({ ...fieldsOf(clean), version: 2 }),
        (o) => expect(o).toEqual(Either.left(expect.objectContaining({ _tag: "JournalCorrupt" })))
      ],
      [
        // Indistinguishable from the real thing: the one forgery the file cannot refuse.
        "an open run marked closed at the log's end",
        forge(fieldsOf(clean)),
        (o) => expect(o).toEqual(Either.right({ _tag: "Clean" }))
      ]
    ]
    for (const [name, text, expected] of cases) {
      await fs.writeFile(runFile(dir), text)
      const opened = await begin(dir)
      try {
        expected(opened)
      } catch (e) {
        throw new Error(`${name}: ${JSON.stringify(opened)}`, { cause: e })
      }
    }
  })

  it("a stale temp file (a crash before the rename) is removed; the old run file holds", async () => {
    const { dir, bytes } = await cleanJournal()
    await fs.writeFile(path.join(dir, RUN_TEMP), "half a fi")
    expect(await begin(dir)).toEqual(Either.right({ _tag: "Clean" }))
    expect((await fs.readdir(dir)).includes(RUN_TEMP)).toBe(false)
    expect(decodeRunMark(bytes, "f")).toEqual(Either.right({ header, run: "closed", closedAt: 10 }))
  })

  it("an oversized run file is refused without reading it all", async () => {
    const { dir, bytes } = await cleanJournal()
    await fs.writeFile(runFile(dir), Buffer.concat([bytes, Buffer.alloc(10 * MAX_RUN_FILE, 0x20)]))
    expect(await begin(dir)).toEqual(
      Either.left(expect.objectContaining({ _tag: "JournalCorrupt", offset: MAX_RUN_FILE }))
    )
  })
})

describe("the journal's run file: fuzz", () => {
  const valid = encodeRunMark({ header, run: "closed", closedAt: 10 })
  const corpus: ReadonlyArray<string | Uint8Array> = [
    "",
    "\n",
    "{}",
    "null",
    "[]",
    "42",
    valid.replace(/"crc32c":"[0-9a-f]{8}"/, '"crc32c":"XXXXXXXX"'),
    valid.replace(/"crc32c":"([0-9a-f]{8})"/, (_, h: string) => `"crc32c":"${h.toUpperCase()}"`),
    valid.replace(/,"crc32c":"[0-9a-f]{8}"\}\n$/, "}\n"),
    `\uFEFF${valid}`,
    `${valid}${valid}`,
    `${valid.trimEnd()} \n`,
    `${valid.trimEnd()}\n\n`,
    valid.replace("}\n", ',"crc32c":"00000000"}\n'),
    forge({ ...JSON.parse(valid.replace(/,"crc32c":"[0-9a-f]{8}"/, "")), closedAt: -1 }),
    forge({ ...JSON.parse(valid.replace(/,"crc32c":"[0-9a-f]{8}"/, "")), closedAt: 1.5 }),
    forge({ ...JSON.parse(valid.replace(/,"crc32c":"[0-9a-f]{8}"/, "")), blockCount: 2 ** 31 }),
    forge({ ...JSON.parse(valid.replace(/,"crc32c":"[0-9a-f]{8}"/, "")), run: "opened" }),
    new Uint8Array([0xff, 0xfe, 0x7b, 0x7d]),
    new Uint8Array(MAX_RUN_FILE + 1).fill(0x41)
  ]

  /** Decoding never throws; it accepts only the encoder's own bytes (the newline optional). */
  const check = (bytes: Uint8Array) => {
    const decoded = decodeRunMark(bytes, "fuzz")
    if (Either.isLeft(decoded)) {
      expect(decoded.left._tag).toBe("JournalCorrupt")
      expect(decoded.left.file).toBe("fuzz")
      return
    }
    const canonical = encodeRunMark(decoded.right)
    const text = Buffer.from(bytes).toString("utf8")
    expect(text === canonical || `${text}\n` === canonical).toBe(true)
  }

  it("the corpus is refused (each with a typed error), never thrown on", () => {
    for (const input of corpus) {
      const bytes = typeof input === "string" ? Buffer.from(input, "utf8") : input
      expect(Either.isLeft(decodeRunMark(bytes, "fuzz")), JSON.stringify(String(input).slice(0, 80))).toBe(
        true
      )
      check(bytes)
    }
  })

  it("random bytes and random damage to a valid file", () => {
    const base = Buffer.from(valid, "utf8")
    const damaged = fc
      .array(fc.tuple(fc.nat({ max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 4
      })
      .map((edits) => {
        const out = Buffer.from(base)
        for (const [at, value] of edits) out[at] = value
        return out
      })
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          damaged,
          markArb.map((m) => Buffer.from(encodeRunMark(m)))
        ),
        (bytes) => {
          check(bytes)
        }
      ),
      { numRuns: numRuns(2000) }
    )
  })
})

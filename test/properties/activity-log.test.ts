/**
 * Properties of the ActivityLog (src/adapters/ActivityLog.ts): random commit
 * sequences reopen to the model set on both layers; a damaged slot file falls back
 * to exactly the previous committed set and never to anything else (and a mutant
 * that skips the CRC is caught); the slot decoder is total and agrees with the
 * format's rules; widening to another extent size never loses a byte.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Effect, Either, Exit, Layer, Logger, LogLevel, Option, Scope } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as ActivityLog from "../../src/adapters/ActivityLog.js"
import { crc32c } from "../../src/internal/crc32c.js"
import { decodeSlot, encodeSlot, MAGIC, type Slot, widen } from "../../src/adapters/internal/activityLog.js"
import * as activityLogFile from "../../src/adapters/internal/activityLogFile.js"
import { numRuns } from "../support/arbitraries.js"

type Log = ActivityLog.ActivityLog.Service
type Open = () => Effect.Effect<Log, ActivityLog.ActivityLogIoError, Scope.Scope>

const ascending = (set: Iterable<number>) => [...set].sort((a, b) => a - b)

/** Runs an effect with the logs off (damaged slots are logged, as they should be). */
const run = <A, E>(self: Effect.Effect<A, E>) =>
  Effect.runPromise(self.pipe(Logger.withMinimumLogLevel(LogLevel.None)))

const withTempDir = async <A>(f: (directory: string) => Promise<A>): Promise<A> => {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-al-"))
  try {
    return await f(directory)
  } finally {
    await fs.rm(directory, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------
// Generators

type Step =
  | {
      readonly _tag: "Commit"
      readonly activate: ReadonlyArray<number>
      readonly retire: ReadonlyArray<number>
    }
  | { readonly _tag: "Reopen" }

const extent = fc.nat({ max: 63 })
const commit: fc.Arbitrary<Step> = fc
  .record({
    activate: fc.array(extent, { maxLength: 6 }),
    retire: fc.array(extent, { maxLength: 6 })
  })
  // Valid requests only: refusals are the contract's business.
  .map(({ activate, retire }) => ({
    _tag: "Commit",
    activate,
    retire: retire.filter((e) => !activate.includes(e))
  }))
const steps = fc.array(
  fc.oneof({ weight: 6, arbitrary: commit }, { weight: 1, arbitrary: fc.constant<Step>({ _tag: "Reopen" }) }),
  { maxLength: 24 }
)

/** Commits that change the set at least once, so a slot is written. */
const commits = fc
  .tuple(fc.array(extent, { minLength: 1, maxLength: 6 }), fc.array(commit, { maxLength: 10 }))
  .map(([first, rest]) => [{ _tag: "Commit" as const, activate: first, retire: [] }, ...rest])

type Damage =
  | { readonly _tag: "Flip"; readonly at: number; readonly mask: number }
  | { readonly _tag: "Truncate"; readonly at: number }
  | { readonly _tag: "Zero"; readonly at: number; readonly length: number }

/** Positions are fractions of the slot's length, so one damage fits any slot. */
const damage: fc.Arbitrary<Damage> = fc.oneof(
  fc.record({
    _tag: fc.constant("Flip" as const),
    at: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
    mask: fc.integer({ min: 1, max: 255 })
  }),
  fc.record({
    _tag: fc.constant("Truncate" as const),
    at: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })
  }),
  fc.record({
    _tag: fc.constant("Zero" as const),
    at: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
    length: fc.integer({ min: 1, max: 64 })
  })
)

const applyDamage = (bytes: Uint8Array, d: Damage): Uint8Array => {
  const at = Math.floor(d.at * bytes.length)
  const out = new Uint8Array(bytes)
  switch (d._tag) {
    case "Flip":
      out[at]! ^= d.mask
      return out
    case "Truncate":
      return out.subarray(0, at)
    case "Zero":
      return out.fill(0, at, at + d.length)
  }
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0

// ---------------------------------------------------------------------------
// (1) Commits and reopens against the model.

/** Applies the steps, reopening where asked and at the end; every open recovers the model set. */
const modelProperty = (open: Open, steps: ReadonlyArray<Step>) =>
  Effect.gen(function* () {
    const model = new Set<number>()
    let scope = yield* Scope.make()
    let log = yield* Scope.extend(open(), scope)
    const reopen = Effect.gen(function* () {
      yield* Scope.close(scope, Exit.void)
      scope = yield* Scope.make()
      log = yield* Scope.extend(open(), scope)
      expect(log.recovered).toEqual(Option.some(ascending(model)))
    })
    for (const step of steps) {
      if (step._tag === "Reopen") {
        yield* reopen
        continue
      }
      yield* log.commit(step.activate, step.retire)
      for (const e of step.activate) model.add(e)
      for (const e of step.retire) model.delete(e)
      expect(yield* log.active).toEqual(ascending(model))
    }
    yield* reopen
    yield* Scope.close(scope, Exit.void)
  })

const build = <E>(layer: Layer.Layer<ActivityLog.ActivityLog, E>) =>
  Effect.map(Layer.build(layer), (ctx) => Context.get(ctx, ActivityLog.ActivityLog))

describe("ActivityLog: random commits reopen to the model set", () => {
  it("layerMemory", async () => {
    await fc.assert(
      fc.asyncProperty(steps, (s) => {
        const store = ActivityLog.makeMemoryStore()
        return run(modelProperty(() => build(ActivityLog.layerMemory({ store, extentBytes: 512 })), s))
      }),
      { numRuns: numRuns() }
    )
  })

  it("layerFile", async () => {
    await fc.assert(
      fc.asyncProperty(steps, (s) =>
        withTempDir((directory) =>
          run(modelProperty(() => build(ActivityLog.layerFile({ directory, extentBytes: 512 })), s))
        )
      ),
      { numRuns: numRuns(40) }
    )
  })
})

// ---------------------------------------------------------------------------
// (2) A damaged slot file: the newest surviving set, or none.

type Target = "newest" | "older" | "both"

/**
 * After random commits, damages the newest slot file, the older one or both, and
 * reopens: the last committed set when the newest slot is intact, else the set the
 * older slot holds (the previous committed set), else none. `unsafeSkipCrc` reopens
 * with the mutant decoder.
 */
const damageProperty = (unsafeSkipCrc: boolean) =>
  fc.asyncProperty(
    commits,
    fc.constantFrom<Target>("newest", "older", "both"),
    damage,
    damage,
    (cs, target, first, second) =>
      withTempDir((directory) =>
        run(
          Effect.gen(function* () {
            // The distinct sets written, in order: a commit that changes nothing writes nothing.
            const written: Array<ReadonlyArray<number>> = []
            yield* Effect.scoped(
              Effect.gen(function* () {
                const log = yield* activityLogFile.make({ directory })
                const model = new Set<number>()
                for (const c of cs) {
                  if (c._tag !== "Commit") continue
                  yield* log.commit(c.activate, c.retire)
                  const before = written.at(-1) ?? []
                  for (const e of c.activate) model.add(e)
                  for (const e of c.retire) model.delete(e)
                  const after = ascending(model)
                  if (after.length !== before.length || after.some((e, i) => e !== before[i]))
                    written.push(after)
                }
              })
            )
            // The first write goes to slot 0, then they alternate.
            const newest = (written.length - 1) % 2
            const files = [0, 1].map((i) => path.join(directory, activityLogFile.SLOT_FILES[i]!))
            const survives = [false, false]
            for (const slot of [0, 1]) {
              const exists = slot === newest || written.length >= 2
              if (!exists) continue
              const hit = target === "both" || (target === "newest") === (slot === newest)
              const bytes = new Uint8Array(yield* Effect.promise(() => fs.readFile(files[slot]!)))
              if (!hit) {
                survives[slot] = true
                continue
              }
              const damaged = applyDamage(bytes, slot === newest ? first : second)
              yield* Effect.promise(() => fs.writeFile(files[slot]!, damaged))
              // CRC32C catches any change a flip, a cut or a zeroed run makes to bytes this short.
              survives[slot] = sameBytes(damaged, bytes)
            }
            const expected = survives[newest]
              ? Option.some(written.at(-1)!)
              : survives[1 - newest]
                ? Option.some(written.at(-2)!)
                : Option.none()
            const log = yield* Effect.scoped(activityLogFile.make({ directory, unsafeSkipCrc }))
            expect(log.recovered).toEqual(expected)
          })
        )
      )
  )

describe("ActivityLog layerFile: a damaged slot", () => {
  it("recovers the last set if the newest slot survived, else the previous one, else none", async () => {
    await fc.assert(damageProperty(false), { numRuns: numRuns(100) })
  })

  it("MUTANT: a decoder that skips the CRC is caught by the damage property", async () => {
    // A run finds the mutant about one time in 25 (an extent or extentBytes changed, yet
    // still in order and plausible); the search ends at the first, so many runs cost little.
    await expect(
      fc.assert(damageProperty(true), { numRuns: numRuns(500), endOnFailure: true })
    ).rejects.toThrow()
  })
})

// ---------------------------------------------------------------------------
// (3) The slot codec.

const slot: fc.Arbitrary<Slot> = fc.record({
  seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  extentBytes: fc.integer({ min: 1, max: ActivityLog.MAX_EXTENT_BYTES / 512 }).map((k) => k * 512),
  extents: fc.uniqueArray(fc.nat({ max: 0xffff_ffff }), { maxLength: 40 }).map(ascending)
})

/** A slot with any header values and extents, CRC and length made right. */
const rawSlot = (extentBytes: number, seq: number, extents: ReadonlyArray<number>): Uint8Array => {
  const out = new Uint8Array(28 + 4 * extents.length)
  const view = new DataView(out.buffer)
  out.set(MAGIC)
  view.setUint32(12, extentBytes, true)
  view.setFloat64(16, seq, true)
  view.setUint32(24, extents.length, true)
  for (let i = 0; i < extents.length; i++) view.setUint32(28 + 4 * i, extents[i]!, true)
  view.setUint32(8, crc32c(out.subarray(12)), true)
  return out
}

describe("ActivityLog slot codec", () => {
  it("never throws on arbitrary bytes, nor on damaged slots, with or without the CRC check", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          fc.tuple(slot, damage).map(([s, d]) => applyDamage(encodeSlot(s), d))
        ),
        fc.boolean(),
        (bytes, unsafeSkipCrc) => {
          const decoded = decodeSlot(bytes, { unsafeSkipCrc })
          if (Either.isRight(decoded)) {
            const { seq, extentBytes, extents } = decoded.right
            expect(Number.isSafeInteger(seq) && seq >= 1).toBe(true)
            expect(extentBytes > 0 && extentBytes % 512 === 0).toBe(true)
            expect(extents.every((e, i) => i === 0 || e > extents[i - 1]!)).toBe(true)
          }
        }
      ),
      { numRuns: numRuns(1000) }
    )
  })

  it("round-trips every valid slot", () => {
    fc.assert(
      fc.property(slot, (s) => {
        expect(decodeSlot(encodeSlot(s))).toEqual(Either.right(s))
      }),
      { numRuns: numRuns(500) }
    )
  })

  it("accepts a slot with a right CRC exactly when its seq, extentBytes and order are valid", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.nat({ max: 0xffff_ffff }),
          fc.integer({ min: 0, max: 64 }).map((k) => k * 512)
        ),
        fc.oneof(fc.double(), fc.integer({ min: -5, max: Number.MAX_SAFE_INTEGER }), fc.constant(2 ** 53)),
        fc.array(fc.nat({ max: 0xffff_ffff }), { maxLength: 8 }),
        (extentBytes, seq, extents) => {
          const valid =
            extentBytes > 0 &&
            extentBytes % 512 === 0 &&
            Number.isSafeInteger(seq) &&
            seq >= 1 &&
            extents.every((e, i) => i === 0 || e > extents[i - 1]!)
          const decoded = decodeSlot(rawSlot(extentBytes, seq, extents))
          expect(Either.isRight(decoded)).toBe(valid)
          if (valid) expect(decoded).toEqual(Either.right({ seq, extentBytes, extents }))
        }
      ),
      { numRuns: numRuns(1000) }
    )
  })
})

// ---------------------------------------------------------------------------
// (4) Widening.

const sectors = fc.integer({ min: 1, max: 64 }).map((k) => k * 512)

describe("ActivityLog widening", () => {
  it("covers every stored byte, with only extents that overlap stored bytes, ascending", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.nat({ max: 2000 }), { maxLength: 30 }).map(ascending),
        sectors,
        sectors,
        (stored, from, to) => {
          const widened = widen(stored, from, to)!
          expect(widened).toBeDefined()
          expect(widened.every((e, i) => i === 0 || e > widened[i - 1]!)).toBe(true)
          // Byte ranges [start, end) of the widened extents, merged where they touch.
          const covered: Array<[number, number]> = []
          for (const e of widened) {
            const last = covered.at(-1)
            if (last !== undefined && last[1] === e * to) last[1] = (e + 1) * to
            else covered.push([e * to, (e + 1) * to])
          }
          // Never less: every stored byte range lies inside a covered range.
          for (const s of stored) {
            const [start, end] = [s * from, (s + 1) * from]
            expect(covered.some(([a, b]) => a <= start && end <= b)).toBe(true)
          }
          // No more than needed: each widened extent overlaps some stored range.
          for (const e of widened)
            expect(stored.some((s) => e * to < (s + 1) * from && s * from < (e + 1) * to)).toBe(true)
        }
      ),
      { numRuns: numRuns(500) }
    )
  })

  it("is the identity at the same size, and narrowing back after splitting is exact", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.nat({ max: 0xffff_ffff }), { maxLength: 20 }).map(ascending),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 4 }),
        (stored, k, split) => {
          const from = k * 512 * split
          expect(widen(stored, from, from)).toEqual(stored)
          const small = from / split
          const back = widen(widen(stored, from, small) ?? [], small, from)
          // Splitting maps extent s to split ones; they fit u32 only while s · split does.
          if (stored.every((s) => (s + 1) * split - 1 <= 0xffff_ffff)) expect(back).toEqual(stored)
          else expect(widen(stored, from, small)).toBeUndefined()
        }
      ),
      { numRuns: numRuns(300) }
    )
  })
})

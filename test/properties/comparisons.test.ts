/**
 * `Comparisons` (src/domain/Comparisons.ts): the comparisons waiting for their outcome, a
 * persistent queue whose versions share one append-only array. Every version must keep
 * holding exactly what it held, whatever is done later from it or from any other version
 * (the decider keeps the state before each event: `decideFolded`'s `before`). Checked
 * against plain arrays over random programs; the mutant that appends in place from an
 * older version must be caught.
 */
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { type Comparison, Comparisons } from "../../src/domain/Comparisons.js"
import { ComparisonsMutants } from "../../src/domain/internal/comparisonsMutants.js"

type Op =
  | { readonly op: "push"; readonly from: number; readonly block: number }
  | { readonly op: "without"; readonly from: number; readonly pick: number }
  | { readonly op: "filter"; readonly from: number; readonly odd: boolean }

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ op: fc.constant("push" as const), from: fc.nat(), block: fc.nat(99) })
  },
  // `pick` 0: the oldest (the common case); otherwise any id, present or not.
  {
    weight: 4,
    arbitrary: fc.record({ op: fc.constant("without" as const), from: fc.nat(), pick: fc.nat(12) })
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("filter" as const), from: fc.nat(), odd: fc.boolean() })
  }
)

/** Runs `ops` over a pool of versions, each beside the array it must equal; throws on the first difference. */
const check = (ops: ReadonlyArray<Op>): void => {
  const versions: Array<Comparisons> = [Comparisons.none]
  const models: Array<ReadonlyArray<Comparison>> = [[]]
  let nextId = 0
  const same = (i: number) => {
    const v = versions[i]!
    const m = models[i]!
    expect(v.toArray()).toEqual(m)
    expect([...v]).toEqual(m)
    expect(v.length).toBe(m.length)
    for (const c of m) expect(v.find(c.id)).toEqual(c)
  }
  for (const o of ops) {
    const from = o.from % versions.length
    const v = versions[from]!
    const m = models[from]!
    if (o.op === "push") {
      const c = { id: nextId++, block: o.block, after: o.block + 1 }
      versions.push(v.push(c))
      models.push([...m, c])
    } else if (o.op === "without") {
      const id =
        o.pick === 0 && m.length > 0
          ? m[0]!.id
          : o.pick === 1
            ? nextId + 5
            : (m[o.pick % Math.max(1, m.length)]?.id ?? 0)
      versions.push(v.without(id))
      models.push(m.filter((c) => c.id !== id))
    } else {
      const keep = (c: Comparison) => (c.block % 2 === 1) === o.odd
      versions.push(v.filter(keep))
      models.push(m.filter(keep))
    }
    // Every version, old and new, still holds what it held.
    for (let i = 0; i < versions.length; i++) same(i)
  }
}

describe("Comparisons: a persistent queue", () => {
  afterEach(() => {
    ComparisonsMutants.pushInPlace = false
  })

  it("every version equals its array, after any program of appends, answers and filters from any version", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => check(ops)),
      { numRuns: 300 }
    )
  })

  it("a long resync: answered oldest first past the compaction, with old versions kept and appended from", () => {
    let v = Comparisons.none
    const kept: Array<[Comparisons, number, number]> = []
    let oldest = 0
    for (let id = 0; id < 5000; id++) {
      v = v.push({ id, block: id, after: id })
      // A window of 1024: the oldest is answered once it is full.
      if (v.length > 1024) v = v.without(oldest++)
      if (id % 700 === 0) kept.push([v, oldest, id])
    }
    expect(v.length).toBe(1024)
    expect(v.toArray().map((c) => c.id)).toEqual(Array.from({ length: 1024 }, (_, i) => 5000 - 1024 + i))
    for (const [old, first, last] of kept) {
      expect(old.toArray().map((c) => c.id)).toEqual(
        Array.from({ length: last - first + 1 }, (_, i) => first + i)
      )
      // Appending from an old version leaves the newer ones alone, and the old one too.
      const branch = old.push({ id: 9999, block: 0, after: 0 })
      expect(branch.length).toBe(old.length + 1)
      expect(old.find(9999)).toBeUndefined()
      expect(v.find(9999)).toBeUndefined()
    }
  })

  it("answers are equal to toEqual whatever array versions share; the empty version is shared", () => {
    const a = Comparisons.none
      .push({ id: 0, block: 1, after: 0 })
      .push({ id: 1, block: 2, after: 0 })
      .without(0)
    const b = Comparisons.fromArray([{ id: 1, block: 2, after: 0 }])
    expect(a).toEqual(b)
    expect(a.without(1)).toBe(Comparisons.none)
    expect(a.without(7)).toBe(a)
  })

  it("catches the mutant that appends in place from an older version", () => {
    ComparisonsMutants.pushInPlace = true
    expect(() =>
      check([
        { op: "push", from: 0, block: 1 },
        { op: "push", from: 1, block: 2 },
        // From version 1 again: in place, the new version reads version 2's comparison, not its own.
        { op: "push", from: 1, block: 3 }
      ])
    ).toThrow()
  })
})

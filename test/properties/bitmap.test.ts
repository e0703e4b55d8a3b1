import * as Equal from "effect/Equal"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Bitmap from "../../src/domain/Bitmap.js"
import { LEAF_BITS, LEAF_MASK, type Leaf, SPARSE_MAX, withBit } from "../../src/domain/internal/bitmapLeaf.js"
import { CAP, FULL, K0, type Kid, type Node, SHIFT } from "../../src/domain/internal/bitmapTree.js"

const RUNS = 200 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1)

type Impl = typeof Bitmap
type Run = readonly [number, number]

// ---------------------------------------------------------------------------------------------
// Model: sorted, disjoint, non-adjacent inclusive runs (a Set<number> cannot hold 2^30 bits).

const normalize = (runs: ReadonlyArray<Run>): Array<Run> => {
  const sorted = [...runs].sort((x, y) => x[0] - y[0])
  const out: Array<[number, number]> = []
  for (const [a, b] of sorted) {
    const last = out[out.length - 1]
    if (last !== undefined && a <= last[1] + 1) last[1] = Math.max(last[1], b)
    else out.push([a, b])
  }
  return out
}
/** Index of the first run ending at or after i. */
const mFirstEndingAtOrAfter = (m: ReadonlyArray<Run>, i: number): number => {
  let lo = 0
  let hi = m.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (m[mid]![1] < i) lo = mid + 1
    else hi = mid
  }
  return lo
}
const mAdd = (m: ReadonlyArray<Run>, a: number, b: number): Array<Run> => {
  // Runs touching [a - 1, b + 1] merge with it; the rest stay.
  const from = mFirstEndingAtOrAfter(m, a - 1)
  let to = from
  let first = a
  let last = b
  while (to < m.length && m[to]![0] <= b + 1) {
    first = Math.min(first, m[to]![0])
    last = Math.max(last, m[to]![1])
    to++
  }
  return [...m.slice(0, from), [first, last], ...m.slice(to)]
}
const mRemove = (m: ReadonlyArray<Run>, a: number, b: number): Array<Run> => {
  const from = mFirstEndingAtOrAfter(m, a)
  let to = from
  const mid: Array<Run> = []
  while (to < m.length && m[to]![0] <= b) {
    const [x, y] = m[to]!
    if (x < a) mid.push([x, a - 1])
    if (y > b) mid.push([b + 1, y])
    to++
  }
  return [...m.slice(0, from), ...mid, ...m.slice(to)]
}
const mHas = (m: ReadonlyArray<Run>, i: number) => {
  const r = m[mFirstEndingAtOrAfter(m, i)]
  return r !== undefined && r[0] <= i
}
const mCount = (m: ReadonlyArray<Run>) => m.reduce((n, [x, y]) => n + y - x + 1, 0)
const mFindNext = (m: ReadonlyArray<Run>, i: number) => {
  const r = m[mFirstEndingAtOrAfter(m, i)]
  return r === undefined ? -1 : Math.max(r[0], i)
}
const mTake = (m: ReadonlyArray<Run>, from: number, k: number): Array<number> => {
  const out: Array<number> = []
  for (const [x, y] of m) {
    for (let i = Math.max(x, from); i <= y && out.length < k; i++) out.push(i)
    if (out.length >= k) break
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Generators: sizes around leaf/node boundaries and huge ones; indices clustered near boundaries.

const NODE1 = CAP[1]!
const NODE2 = CAP[2]!
const sizeArb: fc.Arbitrary<number> = fc.oneof(
  fc.integer({ min: 1, max: 130 }),
  fc
    .tuple(fc.integer({ min: 1, max: 40 }), fc.integer({ min: -2, max: 2 }))
    .map(([k, d]) => k * LEAF_BITS + d),
  fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: -1, max: 1 })).map(([k, d]) => k * NODE1 + d),
  fc.constantFrom(2 ** 30, 2 ** 30 - 1, NODE2, NODE2 + 1, 52, 53, 4095),
  fc.integer({ min: 1, max: 2 ** 30 })
)

const clamp = (size: number, i: number) => Math.min(size - 1, Math.max(0, i))

const indexArb = (size: number): fc.Arbitrary<number> => {
  const near = (unit: number) =>
    fc
      .tuple(fc.integer({ min: 0, max: Math.floor((size - 1) / unit) }), fc.integer({ min: -2, max: 2 }))
      .map(([k, d]) => clamp(size, k * unit + d))
  return fc.oneof(
    fc.integer({ min: 0, max: size - 1 }),
    fc.integer({ min: 0, max: Math.min(size - 1, 120) }),
    fc.integer({ min: Math.max(0, size - 120), max: size - 1 }),
    near(52),
    near(LEAF_BITS),
    near(NODE1),
    near(NODE2)
  )
}

const rangeArb = (size: number): fc.Arbitrary<Run> =>
  fc.oneof(
    fc.tuple(indexArb(size), indexArb(size)).map(([a, b]): Run => (a <= b ? [a, b] : [b, a])),
    fc
      .tuple(indexArb(size), fc.integer({ min: 0, max: 200 }))
      .map(([a, len]): Run => [a, clamp(size, a + len)])
  )

type PointOp = { readonly op: "set" | "clear"; readonly i: number }
type RangeOp = { readonly op: "setRange" | "clearRange"; readonly r: Run }
/** Many point ops in one leaf: crosses the sparse/dense leaf threshold one bit at a time. */
type BurstOp = {
  readonly op: "burst"
  readonly on: boolean
  readonly start: number
  readonly n: number
  readonly stride: number
}
type SimpleOp = PointOp | RangeOp | BurstOp
type Op =
  | SimpleOp
  | { readonly op: "union"; readonly fromCurrent: boolean; readonly ops: ReadonlyArray<SimpleOp> }
  | { readonly op: "batch"; readonly explicit: boolean; readonly ops: ReadonlyArray<SimpleOp> }

const simpleOpArb = (size: number): fc.Arbitrary<SimpleOp> =>
  fc.oneof(
    { weight: 4, arbitrary: indexArb(size).map((i): SimpleOp => ({ op: "set", i })) },
    { weight: 2, arbitrary: indexArb(size).map((i): SimpleOp => ({ op: "clear", i })) },
    { weight: 1, arbitrary: rangeArb(size).map((r): SimpleOp => ({ op: "setRange", r })) },
    { weight: 1, arbitrary: rangeArb(size).map((r): SimpleOp => ({ op: "clearRange", r })) },
    {
      weight: 1,
      arbitrary: fc
        .record({
          on: fc.boolean(),
          start: indexArb(size),
          n: fc.integer({ min: SPARSE_MAX - 4, max: SPARSE_MAX + 80 }),
          stride: fc.constantFrom(1, 2, 3, 7, 61)
        })
        .map((r): SimpleOp => ({ op: "burst", ...r }))
    }
  )

const burstPoints = (o: BurstOp, size: number): Array<number> => {
  const out: Array<number> = []
  for (let j = 0, i = o.start; j < o.n && i < size; j++, i += o.stride) out.push(i)
  return out
}

const opArb = (size: number): fc.Arbitrary<Op> =>
  fc.oneof(
    { weight: 8, arbitrary: simpleOpArb(size) },
    {
      weight: 1,
      arbitrary: fc
        .record({ fromCurrent: fc.boolean(), ops: fc.array(simpleOpArb(size), { maxLength: 6 }) })
        .map((u): Op => ({ op: "union", ...u }))
    },
    {
      weight: 1,
      arbitrary: fc
        .record({ explicit: fc.boolean(), ops: fc.array(simpleOpArb(size), { maxLength: 12 }) })
        .map((u): Op => ({ op: "batch", ...u }))
    }
  )

const scenarioArb = sizeArb.chain((size) =>
  fc.record({ size: fc.constant(size), ops: fc.array(opArb(size), { maxLength: 25 }) })
)

// ---------------------------------------------------------------------------------------------
// The property, parameterised by the implementation so a mutant runs through the same code.

const ensure = (cond: boolean, msg: () => string): void => {
  if (!cond) throw new Error(msg())
}

const applySimple = (B: Impl, b: Bitmap.Bitmap, o: SimpleOp): Bitmap.Bitmap => {
  switch (o.op) {
    case "burst":
      for (const i of burstPoints(o, b.size)) b = o.on ? B.set(b, i) : B.clear(b, i)
      return b
    case "set":
      return B.set(b, o.i)
    case "clear":
      return B.clear(b, o.i)
    case "setRange":
      return B.setRange(b, o.r[0], o.r[1])
    case "clearRange":
      return B.clearRange(b, o.r[0], o.r[1])
  }
}
const applyModel = (m: ReadonlyArray<Run>, o: SimpleOp, size: number): ReadonlyArray<Run> => {
  switch (o.op) {
    case "burst":
      for (const i of burstPoints(o, size)) m = o.on ? mAdd(m, i, i) : mRemove(m, i, i)
      return m
    case "set":
      return mAdd(m, o.i, o.i)
    case "clear":
      return mRemove(m, o.i, o.i)
    case "setRange":
      return mAdd(m, o.r[0], o.r[1])
    case "clearRange":
      return mRemove(m, o.r[0], o.r[1])
  }
}
const applyMutable = (mb: Bitmap.MutableBitmap, o: SimpleOp): void => {
  switch (o.op) {
    case "burst":
      for (const i of burstPoints(o, mb.size)) o.on ? mb.set(i) : mb.clear(i)
      break
    case "set":
      mb.set(o.i)
      break
    case "clear":
      mb.clear(o.i)
      break
    case "setRange":
      mb.setRange(o.r[0], o.r[1])
      break
    case "clearRange":
      mb.clearRange(o.r[0], o.r[1])
      break
  }
}

const checkAgainst = (
  B: Impl,
  size: number,
  b: Bitmap.Bitmap,
  m: ReadonlyArray<Run>,
  probes: ReadonlyArray<number>
): void => {
  ensure(b.size === size, () => `size ${b.size} !== ${size}`)
  ensure(b.count === mCount(m), () => `count ${b.count} !== ${mCount(m)}`)
  ensure(B.isEmpty(b) === (m.length === 0), () => "isEmpty")
  const runs = B.runs(b)
  ensure(
    JSON.stringify(runs) === JSON.stringify(m),
    () => `runs ${JSON.stringify(runs)} !== ${JSON.stringify(m)}`
  )
  const points = new Set<number>([0, size - 1, ...probes])
  // Run edges: all of them for few runs, else an even sample.
  const step = Math.max(1, Math.floor(m.length / 24))
  for (let r = 0; r < m.length; r += step) {
    const [x, y] = m[r]!
    for (const p of [x - 1, x, y, y + 1]) points.add(clamp(size, p))
  }
  for (const p of points) {
    ensure(B.has(b, p) === mHas(m, p), () => `has(${p})`)
    ensure(B.findNext(b, p) === mFindNext(m, p), () => `findNext(${p}) = ${B.findNext(b, p)}`)
  }
  const from = probes[0] ?? 0
  const got: Array<number> = []
  for (const i of B.values(b, from)) {
    got.push(i)
    if (got.length >= 40) break
  }
  ensure(JSON.stringify(got) === JSON.stringify(mTake(m, from, 40)), () => `values from ${from}`)
  if (b.count <= 20_000) {
    const all: Array<number> = []
    B.forEach(b, (i) => all.push(i))
    ensure(JSON.stringify(all) === JSON.stringify(mTake(m, 0, 20_000)), () => "forEach")
  }
  const rebuilt = B.fromRuns(size, m)
  ensure(B.equals(b, rebuilt) && B.equals(rebuilt, b), () => "equals(fromRuns(model))")
  if (m.length > 0) ensure(!B.equals(b, B.clear(b, m[0]![0])), () => "equals after clear")
  else ensure(!B.equals(b, B.set(b, clamp(size, probes[0] ?? 0))), () => "equals after set")
}

const probesOf = (o: Op): Array<number> => {
  switch (o.op) {
    case "set":
    case "clear":
      return [o.i]
    case "setRange":
    case "clearRange":
      return [o.r[0], o.r[1]]
    case "burst":
      return [o.start]
    default:
      return o.ops.flatMap(probesOf)
  }
}

/** Dense activity inside a few leaves: walks leaves through the sparse, runs and dense forms. */
const leafScenarioArb = fc.integer({ min: 1, max: 3 * LEAF_BITS }).chain((size) =>
  fc.record({
    size: fc.constant(size),
    ops: fc.array(
      fc.oneof(
        { weight: 3, arbitrary: simpleOpArb(size).filter((o) => o.op === "burst") },
        { weight: 2, arbitrary: opArb(size) }
      ),
      { minLength: 5, maxLength: 30 }
    )
  })
)

const modelProperty = (
  B: Impl,
  scenarios: fc.Arbitrary<{ size: number; ops: ReadonlyArray<Op> }> = scenarioArb
) =>
  fc.property(scenarios, ({ size, ops }) => {
    let b = B.empty(size)
    let m: ReadonlyArray<Run> = []
    const history: Array<{ b: Bitmap.Bitmap; m: ReadonlyArray<Run>; probes: Array<number> }> = []
    const allProbes: Array<number> = []
    for (const o of ops) {
      history.push({ b, m, probes: probesOf(o) })
      const probes = probesOf(o)
      allProbes.push(...probes)
      switch (o.op) {
        case "union": {
          let other = o.fromCurrent ? b : B.empty(size)
          let om = o.fromCurrent ? m : []
          for (const s of o.ops) {
            other = applySimple(B, other, s)
            om = applyModel(om, s, size)
          }
          history.push({ b: other, m: om, probes })
          const u = B.union(b, other)
          const um = normalize([...m, ...om])
          if (mCount(um) === mCount(m)) ensure(u === b, () => "union returns self when other adds nothing")
          else if (mCount(um) === mCount(om))
            ensure(u === other, () => "union returns that when self adds nothing")
          b = u
          m = um
          break
        }
        case "batch": {
          const before = b
          let bm = m
          if (o.explicit) {
            const mb = B.beginMutation(b)
            for (const s of o.ops) {
              applyMutable(mb, s)
              bm = applyModel(bm, s, size)
              ensure(mb.count === mCount(bm), () => "transient count")
              for (const p of probesOf(s)) ensure(mb.has(p) === mHas(bm, p), () => `transient has(${p})`)
            }
            b = B.endMutation(mb)
            ensure(mb.count === b.count, () => "count after end")
            let threw = false
            try {
              mb.set(0)
            } catch {
              threw = true
            }
            ensure(threw, () => "use after endMutation must throw")
          } else {
            b = B.mutate(b, (mb) => {
              for (const s of o.ops) applyMutable(mb, s)
            })
            for (const s of o.ops) bm = applyModel(bm, s, size)
          }
          m = bm
          // The version from before the batch is still intact right away.
          checkAgainst(B, size, before, history[history.length - 1]!.m, probes)
          break
        }
        default: {
          const next = applySimple(B, b, o)
          const nm = applyModel(m, o, size)
          if (o.op === "set" && mHas(m, o.i)) ensure(next === b, () => "set of a set bit returns self")
          if (o.op === "clear" && !mHas(m, o.i)) ensure(next === b, () => "clear of a clear bit returns self")
          b = next
          m = nm
        }
      }
      checkAgainst(B, size, b, m, probes)
    }
    history.push({ b, m, probes: [] })
    // Old versions never change.
    for (const h of history) checkAgainst(B, size, h.b, h.m, [...h.probes, ...allProbes.slice(0, 20)])
  })

// ---------------------------------------------------------------------------------------------
// Mutant: a `set` that also writes the bit into the old version's leaf, as if the leaf were mutated in
// place instead of copied (the classic path-copying bug).

const internals = (b: Bitmap.Bitmap) => b as unknown as { readonly root: Kid; readonly depth: number }

const leafOf = (b: Bitmap.Bitmap, index: number): Leaf | null => {
  const { depth, root } = internals(b)
  let kid = root
  for (let h = depth; h > 0 && kid !== null; h--)
    kid = (kid as Node)[K0 + ((index >>> SHIFT[h]!) & 31)] as Kid
  return kid as Leaf | null
}

const mutantSet = (self: Bitmap.Bitmap, index: number): Bitmap.Bitmap => {
  const next = Bitmap.set(self, index)
  const shared = leafOf(self, index)
  if (next !== self && shared !== null && shared !== FULL[0]) {
    // Overwrite the old version's leaf object with the updated contents: an in-place edit of a shared leaf.
    const updated = withBit(shared, index & LEAF_MASK, 0).slice()
    shared.length = 0
    shared.push(...updated)
  }
  return next
}

const mutant: Impl = { ...Bitmap, set: mutantSet }

describe("Bitmap", () => {
  it("agrees with a run-list model under every sequence of operations; old versions never change", () => {
    fc.assert(modelProperty(Bitmap), { numRuns: RUNS * 5 })
  })

  it("agrees with the model through leaf form changes (sparse, runs, dense)", () => {
    fc.assert(modelProperty(Bitmap, leafScenarioArb), { numRuns: RUNS })
  })

  it("lookups in a sparse leaf agree with a set, for spread and clustered offsets", () => {
    // Offsets in [from, from + width) of one leaf: a narrow width puts them far from where evenly
    // spread offsets would be, so the search falls back from its first guess.
    const leafArb = fc
      .record({
        leaf: fc.integer({ min: 0, max: 2 ** 30 / LEAF_BITS - 1 }),
        width: fc.integer({ min: 1, max: LEAF_BITS }),
        start: fc.double({ min: 0, max: 1, noNaN: true })
      })
      .chain(({ leaf, width, start }) => {
        const from = Math.min(LEAF_BITS - width, Math.floor(start * LEAF_BITS))
        return fc.record({
          base: fc.constant(leaf * LEAF_BITS),
          offsets: fc.uniqueArray(fc.integer({ min: from, max: from + width - 1 }), {
            minLength: 1,
            maxLength: SPARSE_MAX
          }),
          probes: fc.array(fc.integer({ min: 0, max: LEAF_MASK }), { maxLength: 64 })
        })
      })
    fc.assert(
      fc.property(leafArb, ({ base, offsets, probes }) => {
        let b = Bitmap.empty(2 ** 30)
        for (const off of offsets) b = Bitmap.set(b, base + off)
        const held = new Set(offsets)
        const queries = [...offsets, ...offsets.map((o) => o - 1), ...offsets.map((o) => o + 1), ...probes]
        for (const off of queries) {
          if (off < 0 || off > LEAF_MASK) continue
          expect(Bitmap.has(b, base + off)).toBe(held.has(off))
          const after = Bitmap.set(b, base + off)
          if (held.has(off)) expect(after).toBe(b)
          else expect(after.count).toBe(b.count + 1)
        }
      }),
      { numRuns: RUNS }
    )
  })

  it("the model property catches a set that mutates a shared leaf in place (mutant)", () => {
    const result = fc.check(modelProperty(mutant), { numRuns: Math.max(RUNS, 500) })
    expect(result.failed).toBe(true)
  })

  it("full(size) and huge ranges agree with count arithmetic", () => {
    fc.assert(
      fc.property(
        sizeArb.chain((size) =>
          fc.record({ size: fc.constant(size), r1: rangeArb(size), r2: rangeArb(size), i: indexArb(size) })
        ),
        ({ size, r1, r2, i }) => {
          const f = Bitmap.full(size)
          expect(f.count).toBe(size)
          expect(Bitmap.runs(f)).toEqual([[0, size - 1]])
          expect(Bitmap.findNext(f, i)).toBe(i)
          expect(Bitmap.has(f, i)).toBe(true)
          expect(Bitmap.set(f, i)).toBe(f)
          expect(Bitmap.clear(f, i).count).toBe(size - 1)
          const len = (r: Run) => r[1] - r[0] + 1
          const a = Bitmap.setRange(Bitmap.empty(size), r1[0], r1[1])
          expect(a.count).toBe(len(r1))
          expect(Bitmap.runs(a)).toEqual([r1])
          expect(Bitmap.clearRange(f, r1[0], r1[1]).count).toBe(size - len(r1))
          const overlap = Math.max(0, Math.min(r1[1], r2[1]) - Math.max(r1[0], r2[0]) + 1)
          const u = Bitmap.union(a, Bitmap.setRange(Bitmap.empty(size), r2[0], r2[1]))
          expect(u.count).toBe(len(r1) + len(r2) - overlap)
          expect(Bitmap.equals(Bitmap.setRange(a, r2[0], r2[1]), u)).toBe(true)
          expect(Bitmap.equals(Bitmap.union(f, a), f)).toBe(true)
          expect(Bitmap.union(f, a)).toBe(f)
          expect(
            Bitmap.equals(Bitmap.clearRange(Bitmap.clearRange(f, 0, size - 1), 0, 0), Bitmap.empty(size))
          ).toBe(true)
        }
      ),
      { numRuns: RUNS }
    )
  })

  it("fromRuns(runs(b)) equals b; fromIterable(values(b)) equals b", () => {
    fc.assert(
      fc.property(scenarioArb, ({ size, ops }) => {
        let b = Bitmap.empty(size)
        for (const o of ops) if (o.op !== "union" && o.op !== "batch") b = applySimple(Bitmap, b, o)
        const r = Bitmap.runs(b)
        const back = Bitmap.fromRuns(size, r)
        expect(Bitmap.equals(back, b)).toBe(true)
        expect(Equal.equals(back, b)).toBe(true)
        expect(Bitmap.runs(back)).toEqual(r)
        if (b.count <= 50_000)
          expect(Bitmap.equals(Bitmap.fromIterable(size, Bitmap.values(b)), b)).toBe(true)
      }),
      { numRuns: RUNS }
    )
  })

  it("rejects out-of-range indices and sizes", () => {
    const b = Bitmap.empty(100)
    for (const i of [-1, 100, 1.5, Number.NaN, 2 ** 32]) {
      expect(() => Bitmap.has(b, i)).toThrow(RangeError)
      expect(() => Bitmap.set(b, i)).toThrow(RangeError)
      expect(() => Bitmap.clear(b, i)).toThrow(RangeError)
    }
    expect(() => Bitmap.setRange(b, 0, 100)).toThrow(RangeError)
    expect(() => Bitmap.findNext(b, -1)).toThrow(RangeError)
    expect(Bitmap.findNext(b, 100)).toBe(-1)
    expect(() => Bitmap.values(b, -1)).toThrow(RangeError)
    expect([...Bitmap.values(Bitmap.set(b, 99), 100)]).toEqual([])
    const m = Bitmap.beginMutation(b)
    m.set(3)
    const ended = Bitmap.endMutation(m)
    expect(() => m.set(4)).toThrow()
    expect(() => Bitmap.endMutation(m)).toThrow()
    expect(ended.count).toBe(1)
    expect(Bitmap.mutate(b, () => {})).toBe(b)
    for (const s of [0, -1, 2 ** 30 + 1, 1.5]) expect(() => Bitmap.empty(s)).toThrow(RangeError)
    expect(() => Bitmap.union(b, Bitmap.empty(101))).toThrow(RangeError)
    expect(Bitmap.full(2 ** 30).count).toBe(2 ** 30)
  })

  it("prints usefully and compares with Equal", () => {
    const b = Bitmap.fromRuns(1000, [
      [3, 5],
      [10, 10]
    ])
    expect(JSON.parse(JSON.stringify(b))).toEqual({
      _id: "Bitmap",
      size: 1000,
      count: 4,
      runs: [
        [3, 5],
        [10, 10]
      ]
    })
    expect(Equal.equals(b, Bitmap.fromIterable(1000, [3, 4, 5, 10]))).toBe(true)
    expect(Equal.equals(b, Bitmap.fromIterable(1000, [3, 4, 5]))).toBe(false)
  })
})

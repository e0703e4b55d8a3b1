/**
 * Leaves of the persistent bitmap trie: 8192 bits each, in one of three forms (as in Roaring):
 *
 * - sparse (1 <= count <= SPARSE_MAX, always): a small-integer JS array `[owner, off1, off2, ...]`,
 *   offsets ascending. Scattered dirt over a huge disk costs a few dozen bytes per leaf.
 * - runs (count > SPARSE_MAX, at most RUNS_MAX runs): `[owner, -count, first1, last1, ...]`, maximal
 *   runs ascending. Sequential or clustered dirt: an update copies a few slots, not a bitmap.
 * - dense: a packed-double JS array of NW elements of 52 bits each (exact integers below 2^52), then the
 *   count and the owner. Doubles keep leaves on the V8 heap (copying one is a memcpy; an off-heap typed
 *   array costs ~1 µs to allocate plus ~200 bytes of wrappers) and 8 bytes per 52 bits keeps a fully
 *   dirty disk within ~1.3x of a flat bitmap.
 *
 * Empty leaves are `null` and full ones the shared FULL_LEAF. Sparse is canonical (chosen by count);
 * runs and dense are not (a dense leaf is not re-examined for runs on every set), so equality compares
 * contents across those two. The forms tell apart by length (dense) and by the sign of slot 1 (runs).
 * The owner is 0 for persistent leaves, or the id of the transient that created the leaf and may
 * mutate it in place.
 * Over 400 lines on purpose: the three forms and every operation across them (set, clear,
 * union, difference, count, iterate) share the canonical-form rules above, and a change to
 * one form must be read beside the others. It splits next by operation family if it grows.
 */
export type Leaf = Array<number>

export const LEAF_SHIFT = 13
export const LEAF_BITS = 1 << LEAF_SHIFT
export const LEAF_MASK = LEAF_BITS - 1
/** Bits per dense element. */
export const EB = 52
/** Data elements per dense leaf. */
export const NW = Math.ceil(LEAF_BITS / EB)
export const COUNT = NW
export const OWNER = NW + 1
export const DENSE_LEN = NW + 2
/** Largest count kept sparse. */
export const SPARSE_MAX = 128
/** Most runs kept in the runs form. */
export const RUNS_MAX = 32

// Module-private copies for the lookup path: V8 reads an exported binding through a cell (a load
// and a hole test at every use, even inside this module) but folds a private constant.
const DENSE_LENGTH = DENSE_LEN
const ELEMENT_BITS = EB
const SHIFT_OF_LEAF = LEAF_SHIFT

const TWO32 = 4294967296

const POW2: Array<number> = []
for (let p = 0; p < EB; p++) POW2.push(2 ** p)

// Written as doubles first so the elements kind is PACKED_DOUBLE; slices keep it.
const DENSE_TEMPLATE: Leaf = []
for (let i = 0; i < DENSE_LEN; i++) DENSE_TEMPLATE.push(0.5)
DENSE_TEMPLATE.fill(0)

export const isDense = (leaf: Leaf): boolean => leaf.length === DENSE_LEN
export const isRuns = (leaf: Leaf): boolean => leaf.length !== DENSE_LEN && leaf[1]! < 0

export const leafCount = (leaf: Leaf): number => {
  if (leaf.length === DENSE_LEN) return leaf[COUNT]!
  const c = leaf[1]!
  return c < 0 ? -c : leaf.length - 1
}

/** Slot holding the owner token. */
export const ownerSlot = (leaf: Leaf): number => (leaf.length === DENSE_LEN ? OWNER : 0)

const owns = (leaf: Leaf, owner: number): boolean => owner !== 0 && leaf[ownerSlot(leaf)] === owner

const newDense = (owner: number): Leaf => {
  const leaf = DENSE_TEMPLATE.slice()
  leaf[OWNER] = owner
  return leaf
}

/** A small-integer leaf of `n` slots after the owner, filled by the caller (exact size, no slack). */
const newSmall = (n: number, owner: number): Leaf => {
  const leaf = new Array<number>(n + 1)
  leaf[0] = owner
  return leaf
}

// ---------------------------------------------------------------------------------------------
// 52-bit elements: low word `v | 0`, high word `(v / 2^32) | 0`.

const hiOf = (v: number): number => (v / TWO32) | 0
const join = (hi: number, lo: number): number => hi * TWO32 + (lo >>> 0)

export const popcount32 = (x: number): number => {
  x = x - ((x >>> 1) & 0x55555555)
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333)
  x = (x + (x >>> 4)) & 0x0f0f0f0f
  return Math.imul(x, 0x01010101) >>> 24
}

/** Index of the lowest set bit of a non-zero 32-bit word. */
export const ctz32 = (x: number): number => 31 - Math.clz32(x & -x)

/** Bits from..to (0 <= from <= to <= 31) of a 32-bit word. */
const bits32 = (from: number, to: number): number => (-1 >>> (31 - to)) & (-1 << from)

const denseHas = (leaf: Leaf, off: number): boolean => {
  const e = (off / ELEMENT_BITS) | 0
  const p = off - e * ELEMENT_BITS
  const v = leaf[e]!
  return p < 32 ? ((v | 0) & (1 << p)) !== 0 : (hiOf(v) & (1 << (p - 32))) !== 0
}

const denseSetBit = (leaf: Leaf, off: number): void => {
  const e = (off / EB) | 0
  leaf[e] = leaf[e]! + POW2[off - e * EB]!
  leaf[COUNT] = leaf[COUNT]! + 1
}

const denseClearBit = (leaf: Leaf, off: number): void => {
  const e = (off / EB) | 0
  leaf[e] = leaf[e]! - POW2[off - e * EB]!
  leaf[COUNT] = leaf[COUNT]! - 1
}

/** Sets (or clears) offsets a..b inclusive in place, keeping the count. */
const denseRange = (leaf: Leaf, a: number, b: number, on: boolean): void => {
  const ea = (a / EB) | 0
  const eb = (b / EB) | 0
  let delta = 0
  for (let e = ea; e <= eb; e++) {
    const from = e === ea ? a - e * EB : 0
    const to = e === eb ? b - e * EB : EB - 1
    const v = leaf[e]!
    const lo = v | 0
    const hi = hiOf(v)
    const mlo = from > 31 ? 0 : bits32(from, Math.min(to, 31))
    const mhi = to < 32 ? 0 : bits32(from < 32 ? 0 : from - 32, to - 32)
    const nlo = on ? lo | mlo : lo & ~mlo
    const nhi = on ? hi | mhi : hi & ~mhi
    delta += popcount32(nlo) - popcount32(lo) + popcount32(nhi) - popcount32(hi)
    leaf[e] = join(nhi, nlo)
  }
  leaf[COUNT] = leaf[COUNT]! + delta
}

/** Number of maximal runs in a dense leaf (bits that start a run). */
const denseRunCount = (leaf: Leaf): number => {
  let runs = 0
  let prev = 0
  for (let e = 0; e < NW; e++) {
    const v = leaf[e]!
    if (v === 0) {
      prev = 0
      continue
    }
    const lo = v | 0
    const hi = hiOf(v)
    runs += popcount32(lo & ~((lo << 1) | prev))
    prev = lo >>> 31
    runs += popcount32(hi & ~((hi << 1) | prev))
    prev = (hi >>> (EB - 33)) & 1
  }
  return runs
}

export const FULL_LEAF: Leaf = newDense(0)
denseRange(FULL_LEAF, 0, LEAF_BITS - 1, true)

// ---------------------------------------------------------------------------------------------
// Searches in the small forms.

/** Steps taken from the guessed slot before falling back to a binary search. */
const NEAR = 4

/**
 * Position of the first offset >= off in a sparse leaf (1..length). Starts at the slot `off` would
 * have if the offsets were spread evenly (random dirt: one cache line, not a binary search's chain
 * of dependent loads), steps a few slots from there, then bisects what is left (O(log n) anyway).
 */
const lowerBound = (leaf: Leaf, off: number): number => {
  const n = leaf.length
  // In 1..n-1: a sparse leaf holds at least one offset, and off < LEAF_BITS.
  let g = 1 + (((n - 1) * off) >>> SHIFT_OF_LEAF)
  let lo: number
  let hi: number
  if (leaf[g]! < off) {
    for (let k = 0; k < NEAR; k++) if (++g === n || leaf[g]! >= off) return g
    lo = g + 1
    hi = n
  } else {
    for (let k = 0; k < NEAR; k++) {
      if (g === 1 || leaf[g - 1]! < off) return g
      g--
    }
    lo = 1
    hi = g
  }
  // The answer is in lo..hi.
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (leaf[mid]! < off) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** Slot of the first (start) of the last run starting at or before off, or 0 if none. */
const runAt = (leaf: Leaf, off: number): number => {
  let lo = 0
  let hi = (leaf.length - 2) >>> 1
  // Invariant: runs [0, lo) start <= off, runs [hi, r) start > off.
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (leaf[2 + 2 * mid]! <= off) lo = mid + 1
    else hi = mid
  }
  return lo === 0 ? 0 : 2 * lo
}

// ---------------------------------------------------------------------------------------------
// Conversions and normalisation.

const toDenseInto = (d: Leaf, leaf: Leaf): void => {
  if (leaf.length === DENSE_LEN) {
    for (let e = 0; e < NW; e++) {
      const x = leaf[e]!
      if (x === 0) continue
      const y = d[e]!
      d[e] = join(hiOf(x) | hiOf(y), x | 0 | (y | 0))
    }
    let count = 0
    for (let e = 0; e < NW; e++) {
      const v = d[e]!
      if (v !== 0) count += popcount32(v | 0) + popcount32(hiOf(v))
    }
    d[COUNT] = count
  } else if (leaf[1]! < 0) {
    for (let i = 2; i < leaf.length; i += 2) denseRange(d, leaf[i]!, leaf[i + 1]!, true)
  } else {
    for (let i = 1; i < leaf.length; i++) if (!denseHas(d, leaf[i]!)) denseSetBit(d, leaf[i]!)
  }
}

/** A dense leaf `owner` may mutate, holding the bits of `leaf`. */
const editableDense = (leaf: Leaf | null, owner: number): Leaf => {
  if (leaf === null) return newDense(owner)
  if (leaf.length === DENSE_LEN) {
    if (owner !== 0 && leaf[OWNER] === owner) return leaf
    const copy = leaf.slice()
    copy[OWNER] = owner
    return copy
  }
  const d = newDense(owner)
  toDenseInto(d, leaf)
  return d
}

const denseToSparse = (leaf: Leaf, owner: number): Leaf => {
  const s = newSmall(leaf[COUNT]!, owner)
  let j = 1
  for (let e = 0; e < NW; e++) {
    const v = leaf[e]!
    if (v === 0) continue
    const at = e * EB
    let lo = v | 0
    while (lo !== 0) {
      const t = lo & -lo
      s[j++] = at + 31 - Math.clz32(t)
      lo ^= t
    }
    let hi = hiOf(v)
    while (hi !== 0) {
      const t = hi & -hi
      s[j++] = at + 63 - Math.clz32(t)
      hi ^= t
    }
  }
  return s
}

const denseToRuns = (leaf: Leaf, runCount: number, owner: number): Leaf => {
  const acc = new RunCollector()
  leafRuns(leaf, 0, acc)
  const runs = acc.finish()
  const r = newSmall(1 + 2 * runCount, owner)
  r[1] = -leaf[COUNT]!
  for (let i = 0; i < runs.length; i++) {
    r[2 + 2 * i] = runs[i]![0]
    r[3 + 2 * i] = runs[i]![1]
  }
  return r
}

/** Preferred form of a dense leaf being built or edited. */
const normalizeDense = (leaf: Leaf, owner: number): Leaf | null => {
  const count = leaf[COUNT]!
  if (count === 0) return null
  if (count === LEAF_BITS) return FULL_LEAF
  if (count <= SPARSE_MAX) return denseToSparse(leaf, owner)
  const runs = denseRunCount(leaf)
  return runs <= RUNS_MAX ? denseToRuns(leaf, runs, owner) : leaf
}

// ---------------------------------------------------------------------------------------------
// Operations. Those taking an owner mutate leaves that owner owns and copy the others.

export const leafHas = (leaf: Leaf, off: number): boolean => {
  if (leaf.length === DENSE_LENGTH) return denseHas(leaf, off)
  if (leaf[1]! < 0) {
    const at = runAt(leaf, off)
    return at !== 0 && off <= leaf[at + 1]!
  }
  const at = lowerBound(leaf, off)
  return at < leaf.length && leaf[at] === off
}

export const singletonLeaf = (off: number, owner: number): Leaf => {
  const s = newSmall(1, owner)
  s[1] = off
  return s
}

/** Runs leaf `leaf` plus offset `off` (not held). */
const runsWithBit = (leaf: Leaf, off: number, owner: number): Leaf => {
  const count = -leaf[1]! + 1
  if (count === LEAF_BITS) return FULL_LEAF
  const at = runAt(leaf, off)
  const n = leaf.length
  const joinsPrev = at !== 0 && leaf[at + 1] === off - 1
  const next = at === 0 ? 2 : at + 2
  const joinsNext = next < n && leaf[next] === off + 1
  if (joinsPrev !== joinsNext) {
    // Extending one run keeps the length: edit in place if owned.
    const r = owns(leaf, owner) ? leaf : leaf.slice()
    r[0] = owner
    r[1] = -count
    if (joinsPrev) r[at + 1] = off
    else r[next] = off
    return r
  }
  if (joinsPrev) {
    // Merge the runs at `at` and `next`. New arrays have exact sizes (a grown array keeps slack).
    const r = newSmall(n - 3, owner)
    r[1] = -count
    for (let i = 2; i <= at; i++) r[i] = leaf[i]!
    r[at + 1] = leaf[next + 1]!
    for (let i = next + 2; i < n; i++) r[i - 2] = leaf[i]!
    return r
  }
  if ((n - 2) / 2 >= RUNS_MAX) {
    const d = editableDense(leaf, owner)
    denseSetBit(d, off)
    return d
  }
  // A new single-bit run before `next`.
  const r = newSmall(n + 1, owner)
  r[1] = -count
  for (let i = 2; i < next; i++) r[i] = leaf[i]!
  r[next] = off
  r[next + 1] = off
  for (let i = next; i < n; i++) r[i + 2] = leaf[i]!
  return r
}

/** Runs leaf `leaf` minus offset `off` (held). */
const runsWithoutBit = (leaf: Leaf, off: number, owner: number): Leaf => {
  const count = -leaf[1]! - 1
  const at = runAt(leaf, off)
  const n = leaf.length
  const first = leaf[at]!
  const last = leaf[at + 1]!
  const split = first < off && off < last
  if (count <= SPARSE_MAX || (split && (n - 2) / 2 >= RUNS_MAX)) {
    const d = editableDense(leaf, owner)
    denseClearBit(d, off)
    return normalizeDense(d, owner)!
  }
  if (first === last) {
    const r = newSmall(n - 3, owner)
    r[1] = -count
    for (let i = 2; i < at; i++) r[i] = leaf[i]!
    for (let i = at + 2; i < n; i++) r[i - 2] = leaf[i]!
    return r
  }
  if (split) {
    const r = newSmall(n + 1, owner)
    r[1] = -count
    for (let i = 2; i <= at; i++) r[i] = leaf[i]!
    r[at + 1] = off - 1
    r[at + 2] = off + 1
    for (let i = at + 1; i < n; i++) r[i + 2] = leaf[i]!
    return r
  }
  const r = owns(leaf, owner) ? leaf : leaf.slice()
  r[0] = owner
  r[1] = -count
  if (off === first) r[at] = off + 1
  else r[at + 1] = off - 1
  return r
}

/** `leaf` plus offset `off`, which it does not hold. */
export const withBit = (leaf: Leaf | null, off: number, owner: number): Leaf => {
  if (leaf === null) return singletonLeaf(off, owner)
  const n = leaf.length
  if (n === DENSE_LEN) {
    if (leaf[COUNT] === LEAF_BITS - 1) return FULL_LEAF
    const d = owner !== 0 && leaf[OWNER] === owner ? leaf : editableDense(leaf, owner)
    denseSetBit(d, off)
    return d
  }
  if (leaf[1]! < 0) return runsWithBit(leaf, off, owner)
  if (n > SPARSE_MAX) {
    const d = editableDense(leaf, owner)
    denseSetBit(d, off)
    return normalizeDense(d, owner)!
  }
  // A fresh exact-size array even when owned: growing in place would leave capacity slack.
  const at = lowerBound(leaf, off)
  const s = newSmall(n, owner)
  for (let i = 1; i < at; i++) s[i] = leaf[i]!
  s[at] = off
  for (let i = at; i < n; i++) s[i + 1] = leaf[i]!
  return s
}

/** `leaf` minus offset `off`, which it holds. */
export const withoutBit = (leaf: Leaf, off: number, owner: number): Leaf | null => {
  const n = leaf.length
  if (n === DENSE_LEN) {
    const d = owner !== 0 && leaf[OWNER] === owner ? leaf : editableDense(leaf, owner)
    denseClearBit(d, off)
    return d[COUNT]! <= SPARSE_MAX ? denseToSparse(d, owner) : d
  }
  if (leaf[1]! < 0) return runsWithoutBit(leaf, off, owner)
  if (n === 2) return null
  const at = lowerBound(leaf, off)
  if (owner !== 0 && leaf[0] === owner) {
    leaf.splice(at, 1)
    return leaf
  }
  const s = newSmall(n - 2, owner)
  for (let i = 1; i < at; i++) s[i] = leaf[i]!
  for (let i = at + 1; i < n; i++) s[i - 1] = leaf[i]!
  return s
}

/** `leaf` with offsets a..b (inclusive) set. */
export const leafSetRange = (leaf: Leaf | null, a: number, b: number, owner: number): Leaf | null => {
  if (a === 0 && b === LEAF_MASK) return FULL_LEAF
  if (leaf === FULL_LEAF) return leaf
  const d = editableDense(leaf, owner)
  denseRange(d, a, b, true)
  return normalizeDense(d, owner)
}

/** `leaf` with offsets a..b (inclusive) cleared. */
export const leafClearRange = (leaf: Leaf | null, a: number, b: number, owner: number): Leaf | null => {
  if (leaf === null || (a === 0 && b === LEAF_MASK)) return null
  const d = editableDense(leaf, owner)
  denseRange(d, a, b, false)
  return normalizeDense(d, owner)
}

/** Least offset >= off, or -1. */
export const leafFindNext = (leaf: Leaf, off: number): number => {
  if (leaf.length !== DENSE_LEN) {
    if (leaf[1]! < 0) {
      const at = runAt(leaf, off)
      if (at !== 0 && off <= leaf[at + 1]!) return off
      const next = at === 0 ? 2 : at + 2
      return next < leaf.length ? leaf[next]! : -1
    }
    const at = lowerBound(leaf, off)
    return at < leaf.length ? leaf[at]! : -1
  }
  let e = (off / EB) | 0
  let p = off - e * EB
  for (; e < NW; e++, p = 0) {
    const v = leaf[e]!
    if (v === 0) continue
    if (p < 32) {
      const m = (v | 0) & (-1 << p)
      if (m !== 0) return e * EB + ctz32(m)
      const h = hiOf(v)
      if (h !== 0) return e * EB + 32 + ctz32(h)
    } else {
      const m = hiOf(v) & (-1 << (p - 32))
      if (m !== 0) return e * EB + 32 + ctz32(m)
    }
  }
  return -1
}

export const leafForEach = (leaf: Leaf, base: number, f: (index: number) => void): void => {
  if (leaf.length !== DENSE_LEN) {
    if (leaf[1]! < 0) {
      for (let i = 2; i < leaf.length; i += 2) {
        for (let j = base + leaf[i]!, end = base + leaf[i + 1]!; j <= end; j++) f(j)
      }
    } else for (let i = 1; i < leaf.length; i++) f(base + leaf[i]!)
    return
  }
  for (let e = 0; e < NW; e++) {
    const v = leaf[e]!
    if (v === 0) continue
    const at = base + e * EB
    let lo = v | 0
    while (lo !== 0) {
      const t = lo & -lo
      f(at + 31 - Math.clz32(t))
      lo ^= t
    }
    let hi = hiOf(v)
    while (hi !== 0) {
      const t = hi & -hi
      f(at + 63 - Math.clz32(t))
      hi ^= t
    }
  }
}

/** Collects maximal runs, merging a run that starts right after the previous one. */
export class RunCollector {
  readonly out: Array<readonly [number, number]> = []
  private first = -2
  private last = -2
  /** Stop collecting after `limit` complete runs (for summaries of huge bitmaps). */
  constructor(readonly limit: number = Number.POSITIVE_INFINITY) {}
  get done(): boolean {
    return this.out.length > this.limit
  }
  add(a: number, b: number): void {
    if (a === this.last + 1) {
      this.last = b
      return
    }
    if (this.first >= 0) this.out.push([this.first, this.last])
    this.first = a
    this.last = b
  }
  finish(): Array<readonly [number, number]> {
    if (this.first >= 0) this.out.push([this.first, this.last])
    this.first = this.last = -2
    return this.out
  }
}

const wordRuns = (x: number, base: number, acc: RunCollector): void => {
  while (x !== 0) {
    const s = ctz32(x)
    const rest = ~(x >>> s)
    const len = rest === 0 ? 32 : ctz32(rest)
    acc.add(base + s, base + s + len - 1)
    x = s + len >= 32 ? 0 : x & (-1 << (s + len))
  }
}

export const leafRuns = (leaf: Leaf, base: number, acc: RunCollector): void => {
  if (leaf.length !== DENSE_LEN) {
    if (leaf[1]! < 0) for (let i = 2; i < leaf.length; i += 2) acc.add(base + leaf[i]!, base + leaf[i + 1]!)
    else for (let i = 1; i < leaf.length; i++) acc.add(base + leaf[i]!, base + leaf[i]!)
    return
  }
  for (let e = 0; e < NW; e++) {
    const v = leaf[e]!
    if (v === 0) continue
    wordRuns(v | 0, base + e * EB, acc)
    wordRuns(hiOf(v), base + e * EB + 32, acc)
  }
}

/** Equal contents. Sparse is canonical; runs and dense leaves of equal contents compare by bits. */
export const leafEquals = (a: Leaf, b: Leaf): boolean => {
  if (leafCount(a) !== leafCount(b)) return false
  const da = a.length === DENSE_LEN
  const db = b.length === DENSE_LEN
  if (da && db) {
    for (let e = 0; e < NW; e++) if (a[e] !== b[e]) return false
    return true
  }
  if (da || db) {
    const d = da ? a : b
    const other = editableDense(da ? b : a, 0)
    for (let e = 0; e < NW; e++) if (d[e] !== other[e]) return false
    return true
  }
  if (a.length !== b.length) return false
  for (let i = 1; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Union of two leaves; returns an operand when the other adds nothing. */
export const leafUnion = (a: Leaf, b: Leaf): Leaf => {
  if (a === FULL_LEAF || b === FULL_LEAF) return FULL_LEAF
  const ca = leafCount(a)
  const cb = leafCount(b)
  const d = editableDense(a, 0)
  toDenseInto(d, b)
  // The union contains both operands, so an equal count means equal contents.
  const count = d[COUNT]!
  if (count === ca) return a
  if (count === cb) return b
  return normalizeDense(d, 0)!
}

/**
 * Leaves of the persistent bitmap trie.
 *
 * A leaf is a packed-double JS array: `NW` elements of 52 bits each (exact integers below 2^52), then the
 * leaf's popcount and its owner token. Doubles keep leaves on the V8 heap: copying one is a plain memcpy
 * (off-heap typed arrays cost ~1 µs each to allocate plus ~200 bytes of wrappers), and 8 bytes per 52 bits
 * keeps a fully dirty disk within ~1.4x of a flat bitmap.
 *
 * Bits 0..31 of an element are its low word (`v | 0`, ToInt32 is modulo 2^32), bits 32..51 its high word.
 */
export type Leaf = Array<number>

export const LEAF_SHIFT = 12
export const LEAF_BITS = 1 << LEAF_SHIFT
export const LEAF_MASK = LEAF_BITS - 1
/** Bits per element. */
export const EB = 52
/** Data elements per leaf. */
export const NW = Math.ceil(LEAF_BITS / EB)
export const COUNT = NW
export const OWNER = NW + 1

const TWO32 = 4294967296

const POW2: Array<number> = []
for (let p = 0; p < EB; p++) POW2.push(2 ** p)

// Written as doubles first so the elements kind is PACKED_DOUBLE; slices keep it.
const TEMPLATE: Leaf = []
for (let i = 0; i < NW + 2; i++) TEMPLATE.push(0.5)
TEMPLATE.fill(0)

export const newLeaf = (owner: number): Leaf => {
  const leaf = TEMPLATE.slice()
  leaf[OWNER] = owner
  return leaf
}

export const copyLeaf = (leaf: Leaf, owner: number): Leaf => {
  const copy = leaf.slice()
  copy[OWNER] = owner
  return copy
}

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

export const leafHas = (leaf: Leaf, off: number): boolean => {
  const e = (off / EB) | 0
  const p = off - e * EB
  const v = leaf[e]!
  return p < 32 ? ((v | 0) & (1 << p)) !== 0 : (hiOf(v) & (1 << (p - 32))) !== 0
}

/** Sets a bit known to be clear, in place. */
export const leafSetBit = (leaf: Leaf, off: number): void => {
  const e = (off / EB) | 0
  leaf[e] = leaf[e]! + POW2[off - e * EB]!
  leaf[COUNT] = leaf[COUNT]! + 1
}

/** Clears a bit known to be set, in place. */
export const leafClearBit = (leaf: Leaf, off: number): void => {
  const e = (off / EB) | 0
  leaf[e] = leaf[e]! - POW2[off - e * EB]!
  leaf[COUNT] = leaf[COUNT]! - 1
}

/** Sets (or clears) bits a..b (offsets, inclusive) in place, keeping the count. */
const leafRange = (leaf: Leaf, a: number, b: number, on: boolean): void => {
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

export const leafSetRange = (leaf: Leaf, a: number, b: number): void => leafRange(leaf, a, b, true)
export const leafClearRange = (leaf: Leaf, a: number, b: number): void => leafRange(leaf, a, b, false)

/** Least set offset >= off, or -1. */
export const leafFindNext = (leaf: Leaf, off: number): number => {
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
  for (let e = 0; e < NW; e++) {
    const v = leaf[e]!
    if (v === 0) continue
    wordRuns(v | 0, base + e * EB, acc)
    wordRuns(hiOf(v), base + e * EB + 32, acc)
  }
}

export const leafEquals = (a: Leaf, b: Leaf): boolean => {
  for (let e = 0; e < NW; e++) if (a[e] !== b[e]) return false
  return true
}

export const FULL_LEAF: Leaf = newLeaf(0)
leafSetRange(FULL_LEAF, 0, LEAF_BITS - 1)

/** Union of two leaves; returns an operand when the other adds nothing, FULL_LEAF when full. */
export const leafUnion = (a: Leaf, b: Leaf): Leaf => {
  if (a[COUNT] === LEAF_BITS) return a
  if (b[COUNT] === LEAF_BITS) return b
  const r = a.slice()
  let count = 0
  for (let e = 0; e < NW; e++) {
    const x = a[e]!
    const y = b[e]!
    const lo = x | 0 | (y | 0)
    const hi = hiOf(x) | hiOf(y)
    count += popcount32(lo) + popcount32(hi)
    r[e] = join(hi, lo)
  }
  if (count === a[COUNT]) return a
  if (count === b[COUNT]) return b
  if (count === LEAF_BITS) return FULL_LEAF
  r[COUNT] = count
  r[OWNER] = 0
  return r
}

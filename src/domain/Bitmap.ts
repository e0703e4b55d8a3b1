/**
 * Persistent bitmap of dirty disk blocks (up to 2^30 bits).
 *
 * A fixed-depth 32-way trie (internal/bitmapTree.ts) with per-node counts and non-empty masks, over
 * leaves of 8192 bits kept sparse, as runs or dense (internal/bitmapLeaf.ts). Empty subtrees are
 * `null` and full ones a shared canonical node per level, so `full`, huge ranges and snapshots are
 * cheap. Updates copy one path (old versions never change); transients (`mutate`) edit in place the
 * nodes they created, for bulk work.
 *
 * Over 400 lines on purpose: it is the whole public surface of the bitmap (queries, updates,
 * set algebra, transients, snapshots); the machinery is already in internal/.
 */
import * as Equal from "effect/Equal"
import * as Hash from "effect/Hash"
import { NodeInspectSymbol } from "effect/Inspectable"
import {
  LEAF_MASK,
  type Leaf,
  leafFindNext,
  leafHas,
  RunCollector,
  singletonLeaf,
  withBit,
  withoutBit
} from "./internal/bitmapLeaf.js"
import {
  CAP,
  clearRangeRec,
  copyNode,
  countOf,
  depthFor,
  equalsRec,
  FANOUT,
  FULL,
  findNextRec,
  forEachRec,
  hasBit,
  K0,
  type Kid,
  leafAt,
  MAX_SIZE,
  N_COUNT,
  N_MASK,
  N_OWNER,
  type Node,
  newNode,
  rootWidth,
  runsRec,
  SHIFT,
  SHIFT1,
  SHIFT2,
  SHIFT3,
  SHIFT4,
  setRangeRec,
  unionRec
} from "./internal/bitmapTree.js"

export const TypeId: unique symbol = Symbol.for("cdp-sync/Bitmap")
export type TypeId = typeof TypeId

export interface Bitmap {
  readonly [TypeId]: TypeId
  readonly size: number
  /** Number of set bits, O(1). */
  readonly count: number
}

const SUMMARY_RUNS = 16

class BitmapImpl implements Bitmap, Equal.Equal {
  // On the prototype: one less store per update.
  declare readonly [TypeId]: TypeId
  readonly size: number
  readonly count: number
  readonly depth: number
  readonly root: Kid
  constructor(size: number, depth: number, root: Kid, count: number) {
    this.size = size
    this.depth = depth
    this.root = root
    this.count = count
  }
  [Equal.symbol](that: Equal.Equal): boolean {
    return that instanceof BitmapImpl && equals(this, that)
  }
  [Hash.symbol](): number {
    // Cheap and consistent with equals; collisions only cost an equals call.
    return Hash.cached(this, Hash.combine(Hash.number(this.count))(Hash.number(this.size)))
  }
  toJSON(): unknown {
    const acc = new RunCollector(SUMMARY_RUNS)
    runsRec(this.root, this.depth, 0, acc)
    const first = acc.finish()
    return first.length <= SUMMARY_RUNS
      ? { _id: "Bitmap", size: this.size, count: this.count, runs: first }
      : {
          _id: "Bitmap",
          size: this.size,
          count: this.count,
          runs: first.slice(0, SUMMARY_RUNS),
          moreRuns: true
        }
  }
  toString(): string {
    return JSON.stringify(this.toJSON())
  }
  [NodeInspectSymbol](): unknown {
    return this.toJSON()
  }
}

Object.defineProperty(BitmapImpl.prototype, TypeId, { value: TypeId })

const impl = (self: Bitmap): BitmapImpl => self as BitmapImpl

const checkSize = (size: number): void => {
  if (!Number.isInteger(size) || size < 1 || size > MAX_SIZE) {
    throw new RangeError(`Bitmap size must be an integer in 1..2^30, got ${size}`)
  }
}

const checkIndex = (size: number, index: number): void => {
  if (index >>> 0 !== index || index >= size) {
    throw new RangeError(`Bitmap index ${index} out of range 0..${size - 1}`)
  }
}

const make = (size: number, depth: number, root: Kid): BitmapImpl =>
  new BitmapImpl(size, depth, root, countOf(root, depth))

export const empty = (size: number): Bitmap => {
  checkSize(size)
  return new BitmapImpl(size, depthFor(size), null, 0)
}

export const full = (size: number): Bitmap => setRange(empty(size), 0, size - 1)

export const has = (self: Bitmap, index: number): boolean => {
  const b = impl(self)
  checkIndex(b.size, index)
  return hasBit(b.root, b.depth, index)
}

// Path of the current clear, reused to avoid allocating it per call (setBit keeps its path in locals).
const PATH: Array<Node | null> = Array.from({ length: 8 }, () => null)

/** Returned by setBit/clearBit when the bit already had the wanted value. */
const UNCHANGED: Kid = []

const unwind = (depth: number, h: number): Kid => {
  // Drop the recorded path so it does not keep old versions alive.
  for (let l = depth; l > h; l--) PATH[l] = null
  return UNCHANGED
}

/**
 * Level-`l` node on the way up from setting bit `index`, whose kid toward it is now `child` (holding
 * one more bit): `node` copied (edited in place if `owner` owns it), a new node if it was empty, or
 * the shared full subtree once it is full.
 */
const withKid = (
  node: Node | null,
  l: number,
  depth: number,
  size: number,
  index: number,
  child: Kid,
  owner: number
): Kid => {
  const k = (index >>> SHIFT[l]!) & 31
  if (node === null) {
    const fresh = newNode(owner, l === depth ? rootWidth(size, depth) : FANOUT)
    fresh[K0 + k] = child
    fresh[N_COUNT] = 1
    fresh[N_MASK] = 1 << k
    return fresh
  }
  const count = (node[N_COUNT] as number) + 1
  if (count === CAP[l]) return FULL[l]!
  const edit = owner !== 0 && node[N_OWNER] === owner ? node : copyNode(node, owner)
  edit[K0 + k] = child
  edit[N_COUNT] = count
  edit[N_MASK] = (node[N_MASK] as number) | (1 << k)
  return edit
}

// Module-private copies for setBit's descent: V8 reads an imported binding through a cell (a load
// and a hole test at every use) but folds a private constant.
const KID0 = K0
const S1 = SHIFT1
const S2 = SHIFT2
const S3 = SHIFT3
const S4 = SHIFT4
const OFF_MASK = LEAF_MASK

/**
 * The root after setting `index`, or UNCHANGED. The descent is unrolled (at most 4 levels) and keeps
 * the path in locals: setting a bit that is already set (the common case for writes to dirty blocks)
 * is then a plain lookup, short enough for the CPU to overlap the cache misses of successive calls.
 * A full subtree needs no test: its kids are full down to FULL_LEAF, which holds every bit. The way
 * back up copies each node (edits it in place if `owner` owns it) and collapses full subtrees.
 */
const setBit = (root: Kid, depth: number, size: number, index: number, owner: number): Kid => {
  let n4: Node | null = null
  let n3: Node | null = null
  let n2: Node | null = null
  let kid = root
  if (depth >= 4) {
    n4 = kid as Node | null
    kid = n4 === null ? null : (n4[KID0 + ((index >>> S4) & 31)] as Kid)
  }
  if (depth >= 3) {
    n3 = kid as Node | null
    kid = n3 === null ? null : (n3[KID0 + ((index >>> S3) & 31)] as Kid)
  }
  if (depth >= 2) {
    n2 = kid as Node | null
    kid = n2 === null ? null : (n2[KID0 + ((index >>> S2) & 31)] as Kid)
  }
  const n1 = kid as Node | null
  const leaf = n1 === null ? null : (n1[KID0 + ((index >>> S1) & 31)] as Leaf | null)
  if (leaf !== null && leafHas(leaf, index & OFF_MASK)) return UNCHANGED
  return setBitUp(leaf, n1, n2, n3, n4, depth, size, index, owner)
}

/** The way back up of setBit (kept out of it so that the lookup stays small enough to inline). */
const setBitUp = (
  leaf: Leaf | null,
  n1: Node | null,
  n2: Node | null,
  n3: Node | null,
  n4: Node | null,
  depth: number,
  size: number,
  index: number,
  owner: number
): Kid => {
  const off = index & LEAF_MASK
  let child: Kid = leaf === null ? singletonLeaf(off, owner) : withBit(leaf, off, owner)
  child = withKid(n1, 1, depth, size, index, child, owner)
  if (depth >= 2) child = withKid(n2, 2, depth, size, index, child, owner)
  if (depth >= 3) child = withKid(n3, 3, depth, size, index, child, owner)
  if (depth >= 4) child = withKid(n4, 4, depth, size, index, child, owner)
  return child
}

/** The root after clearing `index`, or UNCHANGED. */
const clearBit = (root: Kid, depth: number, index: number, owner: number): Kid => {
  let kid = root
  for (let h = depth; h > 0; h--) {
    if (kid === null) return unwind(depth, h)
    PATH[h] = kid as Node
    kid = (kid as Node)[K0 + ((index >>> SHIFT[h]!) & 31)] as Kid
  }
  if (kid === null || !leafHas(kid as Leaf, index & LEAF_MASK)) return unwind(depth, 0)
  let child = withoutBit(kid as Leaf, index & LEAF_MASK, owner) as Kid
  for (let l = 1; l <= depth; l++) {
    const node = PATH[l]!
    PATH[l] = null
    const count = (node[N_COUNT] as number) - 1
    if (count === 0) child = null
    else {
      const k = (index >>> SHIFT[l]!) & 31
      const edit = owner !== 0 && node[N_OWNER] === owner ? node : copyNode(node, owner)
      edit[K0 + k] = child
      edit[N_COUNT] = count
      if (child === null) edit[N_MASK] = (node[N_MASK] as number) & ~(1 << k)
      child = edit
    }
  }
  return child
}

/** Sets `index`; returns `self` (the same object) if it was already set. */
export const set = (self: Bitmap, index: number): Bitmap => {
  const b = impl(self)
  checkIndex(b.size, index)
  const root = setBit(b.root, b.depth, b.size, index, 0)
  return root === UNCHANGED ? self : new BitmapImpl(b.size, b.depth, root, b.count + 1)
}

/** Clears `index`; returns `self` (the same object) if it was already clear. */
export const clear = (self: Bitmap, index: number): Bitmap => {
  const b = impl(self)
  checkIndex(b.size, index)
  const root = clearBit(b.root, b.depth, index, 0)
  return root === UNCHANGED ? self : new BitmapImpl(b.size, b.depth, root, b.count - 1)
}

const checkRange = (size: number, first: number, last: number): void => {
  checkIndex(size, first)
  checkIndex(size, last)
}

/** Sets first..last inclusive; an empty range (first > last) returns `self`. */
export const setRange = (self: Bitmap, first: number, last: number): Bitmap => {
  const b = impl(self)
  if (first > last) return self
  // A write usually touches one or two blocks: the single-bit path is much cheaper.
  if (first === last) return set(self, first)
  checkRange(b.size, first, last)
  const root = setRangeRec(b.root ?? newNode(0, rootWidth(b.size, b.depth)), b.depth, 0, first, last, 0)
  const count = countOf(root, b.depth)
  return count === b.count ? self : new BitmapImpl(b.size, b.depth, root, count)
}

/** Clears first..last inclusive; an empty range (first > last) returns `self`. */
export const clearRange = (self: Bitmap, first: number, last: number): Bitmap => {
  const b = impl(self)
  if (first > last) return self
  checkRange(b.size, first, last)
  const root = clearRangeRec(b.root, b.depth, 0, first, last, 0)
  const count = countOf(root, b.depth)
  return count === b.count ? self : new BitmapImpl(b.size, b.depth, root, count)
}

/** Least set index >= from, or -1 (also for from >= size). */
export const findNext = (self: Bitmap, from: number): number => {
  const b = impl(self)
  if (from >= b.size && Number.isInteger(from)) return -1
  checkIndex(b.size, from)
  return findNextRec(b.root, b.depth, 0, from)
}

export const union = (self: Bitmap, that: Bitmap): Bitmap => {
  const a = impl(self)
  const b = impl(that)
  if (a.size !== b.size) throw new RangeError(`Bitmap union of sizes ${a.size} and ${b.size}`)
  const root = unionRec(a.root, b.root, a.depth)
  return root === a.root ? self : root === b.root ? that : make(a.size, a.depth, root)
}

export const isEmpty = (self: Bitmap): boolean => self.count === 0

export const equals = (self: Bitmap, that: Bitmap): boolean => {
  const a = impl(self)
  const b = impl(that)
  return a.size === b.size && a.count === b.count && equalsRec(a.root, b.root, a.depth)
}

/** Set indices >= from, ascending (from is checked now, not at the first `next`). */
export const values = (self: Bitmap, from = 0): IterableIterator<number> =>
  valuesFrom(impl(self), findNext(self, from))

const valuesFrom = function* (b: BitmapImpl, i: number): Generator<number, void, unknown> {
  // One tree search per leaf, then a walk inside the leaf (versions never change under us).
  while (i >= 0) {
    const leaf = leafAt(b.root, b.depth, i)!
    const base = i - (i & LEAF_MASK)
    for (let off = i - base; off >= 0; off = off < LEAF_MASK ? leafFindNext(leaf, off + 1) : -1) {
      yield base + off
    }
    i = base + LEAF_MASK + 1 < b.size ? findNext(b, base + LEAF_MASK + 1) : -1
  }
}

export const forEach = (self: Bitmap, f: (index: number) => void): void => {
  const b = impl(self)
  forEachRec(b.root, b.depth, 0, f)
}

/** Maximal runs of set bits, ascending. */
export const runs = (self: Bitmap): Array<readonly [first: number, last: number]> => {
  const b = impl(self)
  const acc = new RunCollector()
  runsRec(b.root, b.depth, 0, acc)
  return acc.finish()
}

export const fromRuns = (size: number, runs: Iterable<readonly [number, number]>): Bitmap =>
  mutate(empty(size), (m) => {
    for (const [first, last] of runs) m.setRange(first, last)
  })

export const fromIterable = (size: number, indices: Iterable<number>): Bitmap =>
  mutate(empty(size), (m) => {
    for (const i of indices) m.set(i)
  })

export interface MutableBitmap {
  readonly size: number
  readonly count: number
  has(index: number): boolean
  set(index: number): void
  clear(index: number): void
  setRange(first: number, last: number): void
  clearRange(first: number, last: number): void
}

let lastOwner = 0

class MutableBitmapImpl implements MutableBitmap {
  readonly size: number
  readonly depth: number
  root: Kid
  count: number
  /** This transient's owner token; 0 once ended. */
  owner: number
  constructor(size: number, depth: number, root: Kid, count: number) {
    this.size = size
    this.depth = depth
    this.root = root
    this.count = count
    lastOwner = lastOwner >= 0x3fffffff ? 1 : lastOwner + 1
    this.owner = lastOwner
  }
  private live(): number {
    if (this.owner === 0) throw new Error("MutableBitmap used after endMutation")
    return this.owner
  }
  has(index: number): boolean {
    this.live()
    checkIndex(this.size, index)
    return hasBit(this.root, this.depth, index)
  }
  set(index: number): void {
    const owner = this.live()
    checkIndex(this.size, index)
    const root = setBit(this.root, this.depth, this.size, index, owner)
    if (root === UNCHANGED) return
    this.root = root
    this.count++
  }
  clear(index: number): void {
    const owner = this.live()
    checkIndex(this.size, index)
    const root = clearBit(this.root, this.depth, index, owner)
    if (root === UNCHANGED) return
    this.root = root
    this.count--
  }
  setRange(first: number, last: number): void {
    const owner = this.live()
    if (first > last) return
    // Short ranges (the usual write) go bit by bit: counting the whole tree after a range is dear.
    if (last - first < 16) {
      for (let i = first; i <= last; i++) this.set(i)
      return
    }
    checkRange(this.size, first, last)
    const root = this.root ?? newNode(owner, rootWidth(this.size, this.depth))
    this.root = setRangeRec(root, this.depth, 0, first, last, owner)
    this.count = countOf(this.root, this.depth)
  }
  clearRange(first: number, last: number): void {
    const owner = this.live()
    if (first > last) return
    checkRange(this.size, first, last)
    this.root = clearRangeRec(this.root, this.depth, 0, first, last, owner)
    this.count = countOf(this.root, this.depth)
  }
}

export const beginMutation = (self: Bitmap): MutableBitmap => {
  const b = impl(self)
  return new MutableBitmapImpl(b.size, b.depth, b.root, b.count)
}

/** Freezes the transient (later use throws) and returns its contents as an immutable Bitmap. */
export const endMutation = (mutable: MutableBitmap): Bitmap => {
  const m = mutable as MutableBitmapImpl
  if (m.owner === 0) throw new Error("MutableBitmap already ended")
  m.owner = 0
  return new BitmapImpl(m.size, m.depth, m.root, m.count)
}

/** Applies `f` to a transient copy; returns `self` when `f` changed nothing. */
export const mutate = (self: Bitmap, f: (m: MutableBitmap) => void): Bitmap => {
  const m = beginMutation(self)
  f(m)
  const root = (m as MutableBitmapImpl).root
  const result = endMutation(m)
  return root === impl(self).root ? self : result
}

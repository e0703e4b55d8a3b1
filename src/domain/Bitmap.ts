/**
 * Persistent bitmap of dirty disk blocks (up to 2^30 bits).
 *
 * A fixed-depth 32-way trie (internal/bitmapTree.ts) with per-node counts and non-empty masks, over
 * leaves of 8192 bits kept sparse, as runs or dense (internal/bitmapLeaf.ts). Empty subtrees are
 * `null` and full ones a shared canonical node per level, so `full`, huge ranges and snapshots are
 * cheap. Updates copy one path (old versions never change); transients (`mutate`) edit in place the
 * nodes they created, for bulk work.
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
  return hasIn(b.root, b.depth, index)
}

const hasIn = (root: Kid, depth: number, index: number): boolean => {
  let kid = root
  for (let h = depth; h > 0; h--) {
    if (kid === null) return false
    if (kid === FULL[h]) return true
    kid = (kid as Node)[K0 + ((index >>> SHIFT[h]!) & 31)] as Kid
  }
  return kid !== null && leafHas(kid as Leaf, index & LEAF_MASK)
}

// Path of the current update, reused to avoid allocating it per call.
const PATH: Array<Node | null> = Array.from({ length: 8 }, () => null)

/** Returned by setBit/clearBit when the bit already had the wanted value. */
const UNCHANGED: Kid = []

const unwind = (depth: number, h: number): Kid => {
  // Drop the recorded path so it does not keep old versions alive.
  for (let l = depth; l > h; l--) PATH[l] = null
  return UNCHANGED
}

/**
 * The root after setting `index`, or UNCHANGED. One descent records the path; the way back up copies
 * each node (edits it in place if `owner` owns it) and collapses subtrees that become full.
 */
const setBit = (root: Kid, depth: number, size: number, index: number, owner: number): Kid => {
  let kid = root
  let h = depth
  for (; h > 0 && kid !== null; h--) {
    if (kid === FULL[h]) return unwind(depth, h)
    PATH[h] = kid as Node
    kid = (kid as Node)[K0 + ((index >>> SHIFT[h]!) & 31)] as Kid
  }
  let child: Kid
  if (kid === null) {
    // Levels h..0 are empty: build a fresh single-bit chain.
    child = singletonLeaf(index & LEAF_MASK, owner)
    for (let l = 1; l <= h; l++) {
      const k = (index >>> SHIFT[l]!) & 31
      const node = newNode(owner, l === depth ? rootWidth(size, depth) : FANOUT)
      node[K0 + k] = child
      node[N_COUNT] = 1
      node[N_MASK] = 1 << k
      child = node
    }
  } else {
    if (leafHas(kid as Leaf, index & LEAF_MASK)) return unwind(depth, 0)
    child = withBit(kid as Leaf, index & LEAF_MASK, owner)
  }
  for (let l = h + 1; l <= depth; l++) {
    const node = PATH[l]!
    PATH[l] = null
    const count = (node[N_COUNT] as number) + 1
    if (count === CAP[l]) child = FULL[l]!
    else {
      const k = (index >>> SHIFT[l]!) & 31
      const edit = owner !== 0 && node[N_OWNER] === owner ? node : copyNode(node, owner)
      edit[K0 + k] = child
      edit[N_COUNT] = count
      edit[N_MASK] = (node[N_MASK] as number) | (1 << k)
      child = edit
    }
  }
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
    return hasIn(this.root, this.depth, index)
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

/**
 * Persistent bitmap of dirty disk blocks (up to 2^30 bits).
 *
 * A fixed-depth 32-way trie with per-node counts and non-empty masks, over leaves of 4096 bits
 * (see internal/bitmapLeaf.ts). Empty subtrees are `null`, full ones a shared canonical node per level,
 * so `full`, huge ranges and snapshots are cheap. Updates copy the path (old versions never change);
 * transients (`mutate`) edit the nodes they own in place for bulk work.
 */
import * as Equal from "effect/Equal"
import * as Hash from "effect/Hash"
import { NodeInspectSymbol } from "effect/Inspectable"
import {
  COUNT,
  copyLeaf,
  FULL_LEAF,
  LEAF_BITS,
  LEAF_MASK,
  type Leaf,
  leafClearBit,
  leafHas,
  leafSetBit,
  newLeaf,
  RunCollector
} from "./internal/bitmapLeaf.js"
import {
  CAP,
  clearRangeRec,
  countOf,
  depthFor,
  emptyKids,
  equalsRec,
  FULL,
  findNextRec,
  forEachRec,
  type Kid,
  MAX_SIZE,
  Node,
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
  readonly [TypeId]: TypeId = TypeId
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
    const all = this.count === 0 ? [] : runs(this)
    return all.length <= SUMMARY_RUNS
      ? { _id: "Bitmap", size: this.size, count: this.count, runs: all }
      : {
          _id: "Bitmap",
          size: this.size,
          count: this.count,
          runs: all.slice(0, SUMMARY_RUNS),
          moreRuns: all.length - SUMMARY_RUNS
        }
  }
  toString(): string {
    return JSON.stringify(this.toJSON())
  }
  [NodeInspectSymbol](): unknown {
    return this.toJSON()
  }
}

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
  let kid = b.root
  for (let h = b.depth; h > 0; h--) {
    if (kid === null) return false
    const node = kid as Node
    if (node.count === CAP[h]) return true
    kid = node.kids[(index >>> SHIFT[h]!) & 31]!
  }
  return kid !== null && leafHas(kid as Leaf, index & LEAF_MASK)
}

// Path of the last update, reused to avoid allocating it per call.
const PATH: Array<Node | null> = Array.from({ length: 8 }, () => null)

/** Drops the recorded path (so it does not keep old versions alive) and returns `self`. */
const unwind = (self: Bitmap, depth: number, h: number): Bitmap => {
  for (let l = depth; l > h; l--) PATH[l] = null
  return self
}

export const set = (self: Bitmap, index: number): Bitmap => {
  const b = impl(self)
  checkIndex(b.size, index)
  const depth = b.depth
  let kid = b.root
  let h = depth
  for (; h > 0 && kid !== null; h--) {
    const node = kid as Node
    if (node.count === CAP[h]) return unwind(self, depth, h)
    PATH[h] = node
    kid = node.kids[(index >>> SHIFT[h]!) & 31]!
  }
  let child: Kid
  if (kid === null) {
    // Levels h..0 are empty: build a fresh single-bit chain.
    const leaf = newLeaf(0)
    leafSetBit(leaf, index & LEAF_MASK)
    child = leaf
    for (let l = 1; l <= h; l++) {
      const k = (index >>> SHIFT[l]!) & 31
      const kids = emptyKids()
      kids[k] = child
      child = new Node(1, 1 << k, 0, kids)
    }
  } else {
    const leaf = kid as Leaf
    if (leafHas(leaf, index & LEAF_MASK)) return unwind(self, depth, 0)
    if (leaf[COUNT] === LEAF_BITS - 1) child = FULL_LEAF
    else {
      const copy = copyLeaf(leaf, 0)
      leafSetBit(copy, index & LEAF_MASK)
      child = copy
    }
  }
  for (let l = h + 1; l <= depth; l++) {
    const node = PATH[l]!
    PATH[l] = null
    const count = node.count + 1
    if (count === CAP[l]) child = FULL[l]!
    else {
      const k = (index >>> SHIFT[l]!) & 31
      const kids = node.kids.slice()
      kids[k] = child
      child = new Node(count, node.mask | (1 << k), 0, kids)
    }
  }
  return new BitmapImpl(b.size, depth, child, b.count + 1)
}

export const clear = (self: Bitmap, index: number): Bitmap => {
  const b = impl(self)
  checkIndex(b.size, index)
  const depth = b.depth
  let kid = b.root
  for (let h = depth; h > 0; h--) {
    if (kid === null) return unwind(self, depth, h)
    const node = kid as Node
    PATH[h] = node
    kid = node.kids[(index >>> SHIFT[h]!) & 31]!
  }
  if (kid === null || !leafHas(kid as Leaf, index & LEAF_MASK)) return unwind(self, depth, 0)
  const leaf = kid as Leaf
  let child: Kid = null
  if (leaf[COUNT] !== 1) {
    const copy = copyLeaf(leaf, 0)
    leafClearBit(copy, index & LEAF_MASK)
    child = copy
  }
  for (let l = 1; l <= depth; l++) {
    const node = PATH[l]!
    PATH[l] = null
    const count = node.count - 1
    if (count === 0) child = null
    else {
      const k = (index >>> SHIFT[l]!) & 31
      const kids = node.kids.slice()
      kids[k] = child
      child = new Node(count, child === null ? node.mask & ~(1 << k) : node.mask, 0, kids)
    }
  }
  return new BitmapImpl(b.size, depth, child, b.count - 1)
}

const checkRange = (size: number, first: number, last: number): void => {
  checkIndex(size, first)
  checkIndex(size, last)
}

/** Sets first..last inclusive; an empty range (first > last) returns `self`. */
export const setRange = (self: Bitmap, first: number, last: number): Bitmap => {
  const b = impl(self)
  if (first > last) return self
  checkRange(b.size, first, last)
  const root = setRangeRec(b.root, b.depth, 0, first, last, 0)
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

/** Set indices >= from, ascending. */
export const values = function* (self: Bitmap, from = 0): IterableIterator<number> {
  let i = findNext(self, from)
  while (i >= 0) {
    yield i
    i = findNext(self, i + 1)
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
    return hasIn(this.root, this.depth, this.size, index)
  }
  set(index: number): void {
    const owner = this.live()
    if (hasIn(this.root, this.depth, this.size, index)) return
    this.root = setRangeRec(this.root, this.depth, 0, index, index, owner)
    this.count++
  }
  clear(index: number): void {
    const owner = this.live()
    if (!hasIn(this.root, this.depth, this.size, index)) return
    this.root = clearRangeRec(this.root, this.depth, 0, index, index, owner)
    this.count--
  }
  setRange(first: number, last: number): void {
    const owner = this.live()
    if (first > last) return
    checkRange(this.size, first, last)
    this.root = setRangeRec(this.root, this.depth, 0, first, last, owner)
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

const hasIn = (root: Kid, depth: number, size: number, index: number): boolean => {
  checkIndex(size, index)
  let kid = root
  for (let h = depth; h > 0; h--) {
    if (kid === null) return false
    const node = kid as Node
    if (node.count === CAP[h]) return true
    kid = node.kids[(index >>> SHIFT[h]!) & 31]!
  }
  return kid !== null && leafHas(kid as Leaf, index & LEAF_MASK)
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

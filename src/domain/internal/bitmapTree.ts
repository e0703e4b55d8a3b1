/**
 * The fixed-depth 32-way trie above the leaves. Level 0 is a leaf, level h >= 1 an internal `Node`.
 * `null` is an empty subtree, `FULL[h]` the one shared full subtree of level h: both are canonical, so
 * a subtree's count alone tells whether it is empty or full.
 *
 * Nodes and leaves carry an owner token: 0 for persistent ones, a transient's id for those it created,
 * which it may mutate in place. Every function takes the owner it edits for (0: always copy).
 */
import {
  COUNT,
  copyLeaf,
  ctz32,
  FULL_LEAF,
  LEAF_BITS,
  LEAF_SHIFT,
  type Leaf,
  leafClearRange,
  leafEquals,
  leafFindNext,
  leafForEach,
  leafRuns,
  leafSetRange,
  leafUnion,
  newLeaf,
  OWNER,
  type RunCollector
} from "./bitmapLeaf.js"

export type Kid = Node | Leaf | null

export class Node {
  count: number
  /** Bit k set iff kids[k] is not null: finds the next non-empty kid without scanning. */
  mask: number
  readonly owner: number
  readonly kids: Array<Kid>
  constructor(count: number, mask: number, owner: number, kids: Array<Kid>) {
    this.count = count
    this.mask = mask
    this.owner = owner
    this.kids = kids
  }
}

export const FANOUT_SHIFT = 5
export const FANOUT = 1 << FANOUT_SHIFT
export const MAX_SIZE = 2 ** 30

/** CAP[h]: bits covered by a subtree of level h. */
export const CAP: Array<number> = []
/** SHIFT[h]: kid index of bit i in a node of level h is (i >>> SHIFT[h]) & 31. */
export const SHIFT: Array<number> = [0]
for (let h = 0; CAP[h - 1] === undefined || CAP[h - 1]! < MAX_SIZE; h++) {
  CAP.push(2 ** (LEAF_SHIFT + FANOUT_SHIFT * h))
  if (h > 0) SHIFT.push(LEAF_SHIFT + FANOUT_SHIFT * (h - 1))
}
export const MAX_DEPTH = CAP.length - 1

const EMPTY_KIDS: Array<Kid> = Array.from({ length: FANOUT }, () => null)
export const emptyKids = (): Array<Kid> => EMPTY_KIDS.slice()

export const FULL: Array<Kid> = [FULL_LEAF]
for (let h = 1; h <= MAX_DEPTH; h++) {
  FULL.push(
    new Node(
      CAP[h]!,
      -1,
      0,
      Array.from({ length: FANOUT }, () => FULL[h - 1]!)
    )
  )
}

/** Smallest depth (>= 1, so the root is always a node) whose capacity holds `size` bits. */
export const depthFor = (size: number): number => {
  let h = 1
  while (CAP[h]! < size) h++
  return h
}

export const countOf = (kid: Kid, h: number): number =>
  kid === null ? 0 : h === 0 ? (kid as Leaf)[COUNT]! : (kid as Node).count

export const editNode = (node: Node | null, owner: number): Node =>
  node === null
    ? new Node(0, 0, owner, emptyKids())
    : owner !== 0 && node.owner === owner
      ? node
      : new Node(node.count, node.mask, owner, node.kids.slice())

export const editLeaf = (leaf: Leaf | null, owner: number): Leaf =>
  leaf === null ? newLeaf(owner) : owner !== 0 && leaf[OWNER] === owner ? leaf : copyLeaf(leaf, owner)

/** Sets bits a..b (inclusive, within the subtree [lo, lo + CAP[h])). */
export const setRangeRec = (kid: Kid, h: number, lo: number, a: number, b: number, owner: number): Kid => {
  const cap = CAP[h]!
  if (a === lo && b === lo + cap - 1) return FULL[h]!
  if (countOf(kid, h) === cap) return kid
  if (h === 0) {
    const leaf = editLeaf(kid as Leaf | null, owner)
    leafSetRange(leaf, a - lo, b - lo)
    return leaf[COUNT] === LEAF_BITS ? FULL_LEAF : leaf
  }
  const node = editNode(kid as Node | null, owner)
  const sh = SHIFT[h]!
  const kcap = CAP[h - 1]!
  const k2 = (b - lo) >>> sh
  let count = node.count
  let mask = node.mask
  for (let k = (a - lo) >>> sh; k <= k2; k++) {
    const klo = lo + k * kcap
    const old = node.kids[k]!
    const before = countOf(old, h - 1)
    const nk = setRangeRec(old, h - 1, klo, Math.max(a, klo), Math.min(b, klo + kcap - 1), owner)
    count += countOf(nk, h - 1) - before
    node.kids[k] = nk
    mask |= 1 << k
  }
  node.count = count
  node.mask = mask
  return count === cap ? FULL[h]! : node
}

/** Clears bits a..b (inclusive, within the subtree [lo, lo + CAP[h])). */
export const clearRangeRec = (kid: Kid, h: number, lo: number, a: number, b: number, owner: number): Kid => {
  if (kid === null) return null
  const cap = CAP[h]!
  if (a === lo && b === lo + cap - 1) return null
  if (h === 0) {
    const leaf = editLeaf(kid as Leaf, owner)
    leafClearRange(leaf, a - lo, b - lo)
    return leaf[COUNT] === 0 ? null : leaf
  }
  const node = editNode(kid as Node, owner)
  const sh = SHIFT[h]!
  const kcap = CAP[h - 1]!
  const k2 = (b - lo) >>> sh
  let count = node.count
  let mask = node.mask
  for (let k = (a - lo) >>> sh; k <= k2; k++) {
    const old = node.kids[k]!
    if (old === null) continue
    const klo = lo + k * kcap
    const before = countOf(old, h - 1)
    const nk = clearRangeRec(old, h - 1, klo, Math.max(a, klo), Math.min(b, klo + kcap - 1), owner)
    count += countOf(nk, h - 1) - before
    node.kids[k] = nk
    if (nk === null) mask &= ~(1 << k)
  }
  node.count = count
  node.mask = mask
  return count === 0 ? null : node
}

/** Union; returns an operand when the other adds nothing, so untouched subtrees stay shared. */
export const unionRec = (a: Kid, b: Kid, h: number): Kid => {
  if (a === b || b === null) return a
  if (a === null) return b
  if (h === 0) return leafUnion(a as Leaf, b as Leaf)
  const na = a as Node
  const nb = b as Node
  const cap = CAP[h]!
  if (na.count === cap) return a
  if (nb.count === cap) return b
  const kids = emptyKids()
  let sameA = true
  let sameB = true
  let count = 0
  let m = na.mask | nb.mask
  while (m !== 0) {
    const k = ctz32(m)
    m &= m - 1
    const ka = na.kids[k]!
    const kb = nb.kids[k]!
    const u = unionRec(ka, kb, h - 1)
    kids[k] = u
    if (u !== ka) sameA = false
    if (u !== kb) sameB = false
    count += countOf(u, h - 1)
  }
  // The union contains both operands, so an equal count means equal contents.
  if (sameA || count === na.count) return a
  if (sameB || count === nb.count) return b
  if (count === cap) return FULL[h]!
  return new Node(count, na.mask | nb.mask, 0, kids)
}

export const equalsRec = (a: Kid, b: Kid, h: number): boolean => {
  if (a === b) return true
  if (a === null || b === null) return false
  if (countOf(a, h) !== countOf(b, h)) return false
  if (h === 0) return leafEquals(a as Leaf, b as Leaf)
  const na = a as Node
  const nb = b as Node
  if (na.mask !== nb.mask) return false
  for (let k = 0; k < FANOUT; k++) if (!equalsRec(na.kids[k]!, nb.kids[k]!, h - 1)) return false
  return true
}

/** Least set index >= from (from inside the subtree starting at lo), or -1. */
export const findNextRec = (kid: Kid, h: number, lo: number, from: number): number => {
  if (kid === null) return -1
  if (h === 0) {
    const leaf = kid as Leaf
    if (leaf[COUNT] === LEAF_BITS) return from
    const off = leafFindNext(leaf, from - lo)
    return off < 0 ? -1 : lo + off
  }
  const node = kid as Node
  if (node.count === CAP[h]) return from
  const k = (from - lo) >>> SHIFT[h]!
  const kcap = CAP[h - 1]!
  const first = node.kids[k]!
  if (first !== null) {
    const r = findNextRec(first, h - 1, lo + k * kcap, from)
    if (r >= 0) return r
  }
  // Every non-empty subtree after k holds a bit at or after its start.
  const m = k === 31 ? 0 : node.mask & (-1 << (k + 1))
  if (m === 0) return -1
  const k2 = ctz32(m)
  return findNextRec(node.kids[k2]!, h - 1, lo + k2 * kcap, lo + k2 * kcap)
}

export const forEachRec = (kid: Kid, h: number, lo: number, f: (index: number) => void): void => {
  if (kid === null) return
  const cap = CAP[h]!
  if (countOf(kid, h) === cap) {
    for (let i = lo, end = lo + cap; i < end; i++) f(i)
    return
  }
  if (h === 0) {
    leafForEach(kid as Leaf, lo, f)
    return
  }
  const node = kid as Node
  const kcap = CAP[h - 1]!
  let m = node.mask
  while (m !== 0) {
    const k = ctz32(m)
    m &= m - 1
    forEachRec(node.kids[k]!, h - 1, lo + k * kcap, f)
  }
}

export const runsRec = (kid: Kid, h: number, lo: number, acc: RunCollector): void => {
  if (kid === null) return
  const cap = CAP[h]!
  if (countOf(kid, h) === cap) {
    acc.add(lo, lo + cap - 1)
    return
  }
  if (h === 0) {
    leafRuns(kid as Leaf, lo, acc)
    return
  }
  const node = kid as Node
  const kcap = CAP[h - 1]!
  let m = node.mask
  while (m !== 0) {
    const k = ctz32(m)
    m &= m - 1
    runsRec(node.kids[k]!, h - 1, lo + k * kcap, acc)
  }
}

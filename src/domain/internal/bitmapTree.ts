/**
 * The fixed-depth 32-way trie above the leaves. Level 0 is a leaf, level h >= 1 a `Node`.
 * `null` is an empty subtree and `FULL[h]` the one shared full subtree of level h: both are canonical,
 * so a subtree's count alone tells whether it is empty or full.
 *
 * A node is a single JS array `[count, mask, owner, kid0 .. kid31]`: one object per level keeps a lookup
 * to about one cache miss per level (a class wrapping a kids array costs three). The root holds only
 * the kids the size needs (4 for 2^30 bits), which saves most of a node copy per update. `mask` has bit k set iff
 * kid k is not null, so searches skip empty kids without scanning them (HBitmap-like summaries).
 * The owner is 0 for persistent nodes, or the id of the transient that created the node and may mutate
 * it in place. Functions taking an owner edit for it (0: always copy).
 */
import {
  ctz32,
  FULL_LEAF,
  LEAF_SHIFT,
  type Leaf,
  leafClearRange,
  leafCount,
  leafEquals,
  LEAF_MASK,
  leafFindNext,
  leafForEach,
  leafHas,
  leafRuns,
  leafSetRange,
  leafUnion,
  type RunCollector
} from "./bitmapLeaf.js"

export type Node = Array<Kid | number>
export type Kid = Node | Leaf | null

export const FANOUT_SHIFT = 5
export const FANOUT = 1 << FANOUT_SHIFT
export const N_COUNT = 0
export const N_MASK = 1
export const N_OWNER = 2
/** Slot of kid 0. */
export const K0 = 3
export const MAX_SIZE = 2 ** 30

/** CAP[h]: bits covered by a subtree of level h. */
export const CAP: Array<number> = []
/** SHIFT[h]: kid index of bit i in a node of level h is (i >>> SHIFT[h]) & 31. */
export const SHIFT: Array<number> = [0]
for (let h = 0; h === 0 || CAP[h - 1]! < MAX_SIZE; h++) {
  CAP.push(2 ** (LEAF_SHIFT + FANOUT_SHIFT * h))
  if (h > 0) SHIFT.push(LEAF_SHIFT + FANOUT_SHIFT * (h - 1))
}
export const MAX_DEPTH = CAP.length - 1

const NODE_TEMPLATES: Array<Node> = []
for (let width = 0; width <= FANOUT; width++) {
  const node: Node = [0, 0, 0]
  for (let k = 0; k < width; k++) node.push(null)
  NODE_TEMPLATES.push(node)
}

/** An empty node (count 0) with `width` kid slots. */
export const newNode = (owner: number, width: number = FANOUT): Node => {
  const node = NODE_TEMPLATES[width]!.slice()
  node[N_OWNER] = owner
  return node
}

export const copyNode = (node: Node, owner: number): Node => {
  const copy = node.slice()
  copy[N_OWNER] = owner
  return copy
}

export const editNode = (node: Node | null, owner: number): Node =>
  node === null ? newNode(owner) : owner !== 0 && node[N_OWNER] === owner ? node : copyNode(node, owner)

export const FULL: Array<Kid> = [FULL_LEAF]
for (let h = 1; h <= MAX_DEPTH; h++) {
  const node = newNode(0)
  for (let k = 0; k < FANOUT; k++) node[K0 + k] = FULL[h - 1]!
  node[N_COUNT] = CAP[h]!
  node[N_MASK] = -1
  FULL.push(node)
}

/** Smallest depth (>= 1, so the root is always a node) whose capacity holds `size` bits. */
export const depthFor = (size: number): number => {
  let h = 1
  while (CAP[h]! < size) h++
  return h
}

/** Kid slots of the root of a `size`-bit trie of depth `depth`. */
export const rootWidth = (size: number, depth: number): number => Math.ceil(size / CAP[depth - 1]!)

export const countOf = (kid: Kid, h: number): number =>
  kid === null ? 0 : h === 0 ? leafCount(kid as Leaf) : ((kid as Node)[N_COUNT] as number)

/** Sets bits a..b (inclusive, within the subtree [lo, lo + CAP[h])). */
export const setRangeRec = (kid: Kid, h: number, lo: number, a: number, b: number, owner: number): Kid => {
  if (kid === FULL[h]) return kid
  if (h === 0) return leafSetRange(kid as Leaf | null, a - lo, b - lo, owner)
  const cap = CAP[h]!
  if (a === lo && b === lo + cap - 1) return FULL[h]!
  const node = editNode(kid as Node | null, owner)
  const sh = SHIFT[h]!
  const kcap = CAP[h - 1]!
  const k2 = (b - lo) >>> sh
  let count = node[N_COUNT] as number
  let mask = node[N_MASK] as number
  for (let k = (a - lo) >>> sh; k <= k2; k++) {
    const klo = lo + k * kcap
    const old = node[K0 + k] as Kid
    const before = countOf(old, h - 1)
    const nk = setRangeRec(old, h - 1, klo, Math.max(a, klo), Math.min(b, klo + kcap - 1), owner)
    count += countOf(nk, h - 1) - before
    node[K0 + k] = nk
    mask |= 1 << k
  }
  node[N_COUNT] = count
  node[N_MASK] = mask
  return count === cap ? FULL[h]! : node
}

/** Clears bits a..b (inclusive, within the subtree [lo, lo + CAP[h])). */
export const clearRangeRec = (kid: Kid, h: number, lo: number, a: number, b: number, owner: number): Kid => {
  if (kid === null) return null
  if (h === 0) return leafClearRange(kid as Leaf, a - lo, b - lo, owner)
  const cap = CAP[h]!
  if (a === lo && b === lo + cap - 1) return null
  const node = editNode(kid as Node, owner)
  const sh = SHIFT[h]!
  const kcap = CAP[h - 1]!
  const k2 = (b - lo) >>> sh
  let count = node[N_COUNT] as number
  let mask = node[N_MASK] as number
  for (let k = (a - lo) >>> sh; k <= k2; k++) {
    const old = node[K0 + k] as Kid
    if (old === null) continue
    const klo = lo + k * kcap
    const before = countOf(old, h - 1)
    const nk = clearRangeRec(old, h - 1, klo, Math.max(a, klo), Math.min(b, klo + kcap - 1), owner)
    count += countOf(nk, h - 1) - before
    node[K0 + k] = nk
    if (nk === null) mask &= ~(1 << k)
  }
  node[N_COUNT] = count
  node[N_MASK] = mask
  return count === 0 ? null : node
}

/** Union; returns an operand when the other adds nothing, so untouched subtrees stay shared. */
export const unionRec = (a: Kid, b: Kid, h: number): Kid => {
  if (a === b || b === null) return a
  if (a === null) return b
  if (h === 0) return leafUnion(a as Leaf, b as Leaf)
  if (a === FULL[h]) return a
  if (b === FULL[h]) return b
  const na = a as Node
  const nb = b as Node
  const node = newNode(0, na.length - K0)
  let sameA = true
  let sameB = true
  let count = 0
  const mask = (na[N_MASK] as number) | (nb[N_MASK] as number)
  let m = mask
  while (m !== 0) {
    const k = ctz32(m)
    m &= m - 1
    const ka = na[K0 + k] as Kid
    const kb = nb[K0 + k] as Kid
    const u = unionRec(ka, kb, h - 1)
    node[K0 + k] = u
    if (u !== ka) sameA = false
    if (u !== kb) sameB = false
    count += countOf(u, h - 1)
  }
  // The union contains both operands, so an equal count means equal contents.
  if (sameA || count === na[N_COUNT]) return a
  if (sameB || count === nb[N_COUNT]) return b
  if (count === CAP[h]) return FULL[h]!
  node[N_COUNT] = count
  node[N_MASK] = mask
  return node
}

export const equalsRec = (a: Kid, b: Kid, h: number): boolean => {
  if (a === b) return true
  if (a === null || b === null) return false
  if (h === 0) return leafEquals(a as Leaf, b as Leaf)
  const na = a as Node
  const nb = b as Node
  if (na[N_COUNT] !== nb[N_COUNT] || na[N_MASK] !== nb[N_MASK]) return false
  if (na.length !== nb.length) return false
  for (let k = K0; k < na.length; k++) if (!equalsRec(na[k] as Kid, nb[k] as Kid, h - 1)) return false
  return true
}

/** Least set index >= from (from inside the subtree starting at lo), or -1. */
export const findNextRec = (kid: Kid, h: number, lo: number, from: number): number => {
  if (kid === null) return -1
  if (kid === FULL[h]) return from
  if (h === 0) {
    const off = leafFindNext(kid as Leaf, from - lo)
    return off < 0 ? -1 : lo + off
  }
  const node = kid as Node
  const k = (from - lo) >>> SHIFT[h]!
  const kcap = CAP[h - 1]!
  const first = node[K0 + k] as Kid
  if (first !== null) {
    const r = findNextRec(first, h - 1, lo + k * kcap, from)
    if (r >= 0) return r
  }
  // Every non-empty subtree after k holds a bit at or after its start.
  const m = k === FANOUT - 1 ? 0 : (node[N_MASK] as number) & (-1 << (k + 1))
  if (m === 0) return -1
  const k2 = ctz32(m)
  return findNextRec(node[K0 + k2] as Kid, h - 1, lo + k2 * kcap, lo + k2 * kcap)
}

export const forEachRec = (kid: Kid, h: number, lo: number, f: (index: number) => void): void => {
  if (kid === null) return
  if (kid === FULL[h]) {
    for (let i = lo, end = lo + CAP[h]!; i < end; i++) f(i)
    return
  }
  if (h === 0) {
    leafForEach(kid as Leaf, lo, f)
    return
  }
  const node = kid as Node
  const kcap = CAP[h - 1]!
  let m = node[N_MASK] as number
  while (m !== 0) {
    const k = ctz32(m)
    m &= m - 1
    forEachRec(node[K0 + k] as Kid, h - 1, lo + k * kcap, f)
  }
}

export const runsRec = (kid: Kid, h: number, lo: number, acc: RunCollector): void => {
  if (kid === null) return
  if (kid === FULL[h]) {
    acc.add(lo, lo + CAP[h]! - 1)
    return
  }
  if (h === 0) {
    leafRuns(kid as Leaf, lo, acc)
    return
  }
  const node = kid as Node
  const kcap = CAP[h - 1]!
  let m = node[N_MASK] as number
  while (m !== 0 && !acc.done) {
    const k = ctz32(m)
    m &= m - 1
    runsRec(node[K0 + k] as Kid, h - 1, lo + k * kcap, acc)
  }
}

// SHIFT[1..4], for code that unrolls the (at most 4) levels. In the lookup below, module-private
// copies: V8 reads an exported binding through a cell (a load and a hole test at every use, even
// inside this module) but folds a private constant.
export const SHIFT1 = SHIFT[1]!
export const SHIFT2 = SHIFT[2]!
export const SHIFT3 = SHIFT[3]!
export const SHIFT4 = SHIFT[4]!
if (MAX_DEPTH !== 4) throw new Error("bitmapTree: the unrolled lookups assume a trie of depth at most 4")
const S1 = SHIFT1
const S2 = SHIFT2
const S3 = SHIFT3
const S4 = SHIFT4
const KID0 = K0
const OFF_MASK = LEAF_MASK

/**
 * The leaf holding `index` (FULL_LEAF inside a full subtree: its kids are full down to FULL_LEAF), or
 * null. Unrolled, with folded constants and without the FULL tests of the update paths: the fewer
 * instructions per lookup, the more the CPU overlaps the cache misses of successive lookups (a random
 * lookup in a large bitmap misses at the leaf).
 */
export const leafAt = (root: Kid, depth: number, index: number): Leaf | null => {
  if (root === null) return null
  let kid: Kid = root
  if (depth >= 4) {
    kid = (kid as Node)[KID0 + ((index >>> S4) & 31)] as Kid
    if (kid === null) return null
  }
  if (depth >= 3) {
    kid = (kid as Node)[KID0 + ((index >>> S3) & 31)] as Kid
    if (kid === null) return null
  }
  if (depth >= 2) {
    kid = (kid as Node)[KID0 + ((index >>> S2) & 31)] as Kid
    if (kid === null) return null
  }
  return (kid as Node)[KID0 + ((index >>> S1) & 31)] as Leaf | null
}

/** Whether bit `index` is set. */
export const hasBit = (root: Kid, depth: number, index: number): boolean => {
  const leaf = leafAt(root, depth, index)
  return leaf !== null && leafHas(leaf, index & OFF_MASK)
}

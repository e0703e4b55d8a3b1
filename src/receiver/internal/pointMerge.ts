/**
 * A point's map from its segments' maps (`mergeTables`, newest first): each byte from the
 * newest segment holding it. Columns in, columns out (`PointTable`): on a 4 GiB log a point
 * merges 120 k extents into 50 k, and as objects their allocation and collection were most of
 * the merge.
 */
import { type Extent, type ExtentMap, ExtentTable } from "./blockIndex.js"
import { ReceiverMutants } from "./mutants.js"

/** An extent of a point: `segment` is the index of its segment in `chain.segments`. */
export interface PointExtent extends Extent {
  readonly segment: number
}

/** A point's extents as columns: extent `i` is bytes `[start[i], end[i])`, record `seq[i]`'s, at `fileOffset[i]` of segment `segment[i]`. */
export interface PointTable {
  readonly count: number
  readonly start: Float64Array
  readonly end: Float64Array
  readonly seq: Float64Array
  readonly fileOffset: Float64Array
  readonly segment: Uint32Array
}

/**
 * The maps of a point's segments, given newest first, as one map: each byte from the newest
 * segment holding it. One sweep per map against the union of the newer ones (kept as typed
 * intervals, merged as it grows): only the extents that survive are kept, each once
 * (merging maps pairwise allocated every piece at every level, and most of opening a long log
 * was spent there). O(maps × covered intervals + extents log maps).
 */
export const mergeNewestFirst = (
  maps: ReadonlyArray<{ readonly map: ExtentMap; readonly segment: number }>
): Array<PointExtent> =>
  pointExtentsOf(
    mergeTables(maps.map(({ map, segment }) => ({ map: ExtentTable.fromExtents(map), segment })))
  )

/** `mergeNewestFirst` on columns. */
export const mergeTables = (
  maps: ReadonlyArray<{ readonly map: ExtentTable; readonly segment: number }>
): PointTable => {
  let total = 0
  for (const { map } of maps) total += map.count
  const covered = new Covered(total)
  const out = new PieceColumns(total)
  // Each map's surviving pieces are in order: the runs `sorted` merges.
  const runs: Array<number> = [0]
  // The loops are functions of their own: run once per map each, they are optimized as such
  // (loops of one long-running function were compiled again each time the other one ran).
  for (const { map, segment } of maps) {
    sweep(map, segment, covered, out)
    runs.push(out.count)
    covered.add(map)
  }
  return out.sorted(runs)
}

/** The pieces of `map`'s extents that no newer map covers, appended to `out`. */
const sweep = (map: ExtentTable, segment: number, covered: Covered, out: PieceColumns): void => {
  const c = covered.at
  const count = covered.count
  // The columns in locals: this runs once per map, mostly before it is optimized.
  const { start: starts, end: ends, seq: seqs, fileOffset } = map
  let j = 0
  for (let x = 0; x < map.count; x++) {
    const xStart = starts[x]!
    const xEnd = ends[x]!
    while (j < count && c[2 * j + 1]! <= xStart) j++
    let cursor = xStart
    for (let k = j; cursor < xEnd; k++) {
      const from = k < count ? c[2 * k]! : Number.POSITIVE_INFINITY
      const to = from < xEnd ? Math.min(from, xEnd) : xEnd
      if (to > cursor) out.push(cursor, to, seqs[x]!, fileOffset[x]! + (cursor - xStart), segment)
      if (from >= xEnd) break
      cursor = Math.max(cursor, c[2 * k + 1]!)
    }
  }
}

/** The bytes the newer maps cover: intervals `[at[2i], at[2i+1])`, `i < count`, sorted, disjoint, none touching. */
class Covered {
  count = 0
  at: Float64Array
  private spare: Float64Array
  constructor(extents: number) {
    this.at = new Float64Array(2 * extents + 2)
    this.spare = new Float64Array(2 * extents + 2)
  }
  /** Adds `map`'s extents (sorted): both lists merged, touching intervals joined. */
  add(map: ExtentTable): void {
    const c = this.at
    const u = this.spare
    const count = this.count
    const { start: starts, end: ends } = map
    let n = 0
    let a = 0
    let b = 0
    while (a < count || b < map.count) {
      let start: number
      let end: number
      if (b >= map.count || (a < count && c[2 * a]! <= starts[b]!)) {
        start = c[2 * a]!
        end = c[2 * a + 1]!
        a++
      } else {
        start = starts[b]!
        end = ends[b]!
        b++
      }
      if (n > 0 && start <= u[2 * n - 1]!) u[2 * n - 1] = Math.max(u[2 * n - 1]!, end)
      else {
        u[2 * n] = start
        u[2 * n + 1] = end
        n++
      }
    }
    this.at = u
    this.spare = c
    if (!ReceiverMutants.pointMergeForgetsNewer) this.count = n
  }
}

/** Columns for `n` extents of a point, in one allocation. */
const pointColumns = (n: number): PointTable => {
  const memory = new ArrayBuffer(36 * n)
  return {
    count: n,
    start: new Float64Array(memory, 0, n),
    end: new Float64Array(memory, 8 * n, n),
    seq: new Float64Array(memory, 16 * n, n),
    fileOffset: new Float64Array(memory, 24 * n, n),
    segment: new Uint32Array(memory, 32 * n, n)
  }
}

/** The merge's output, grown as needed (a newer map can split an older extent into several pieces). */
class PieceColumns {
  count = 0
  private t: PointTable
  constructor(capacity: number) {
    this.t = pointColumns(Math.max(16, capacity))
  }
  push(start: number, end: number, seq: number, fileOffset: number, segment: number): void {
    if (this.count === this.t.count) {
      const grown = pointColumns(2 * this.t.count)
      grown.start.set(this.t.start)
      grown.end.set(this.t.end)
      grown.seq.set(this.t.seq)
      grown.fileOffset.set(this.t.fileOffset)
      grown.segment.set(this.t.segment)
      this.t = grown
    }
    const i = this.count++
    const t = this.t
    t.start[i] = start
    t.end[i] = end
    t.seq[i] = seq
    t.fileOffset[i] = fileOffset
    t.segment[i] = segment
  }
  /**
   * The pieces sorted by start, given `runs` (the bounds of runs each sorted already: one per
   * map): the runs merged a pair at a time, on an order of the pieces, then the columns gathered.
   */
  sorted(runs: ReadonlyArray<number>): PointTable {
    const n = this.count
    let order = new Uint32Array(n)
    for (let i = 0; i < n; i++) order[i] = i
    let spare = new Uint32Array(n)
    let bounds = runs.filter((b, i) => i === 0 || b !== runs[i - 1])
    while (bounds.length > 2) {
      bounds = mergeRunPairs(this.t.start, order, spare, bounds)
      ;[order, spare] = [spare, order]
    }
    return gather(this.t, order, n)
  }
}

/** One pass: runs `2r` and `2r + 1` of `order` (by `start`) merged into one of `into`; the new bounds. */
const mergeRunPairs = (
  start: Float64Array,
  order: Uint32Array,
  into: Uint32Array,
  bounds: ReadonlyArray<number>
): Array<number> => {
  const next: Array<number> = [0]
  for (let r = 0; r + 1 < bounds.length; r += 2) {
    const lo = bounds[r]!
    const mid = bounds[r + 1]!
    const hi = r + 2 < bounds.length ? bounds[r + 2]! : mid
    let p = lo
    let q = mid
    for (let o = lo; o < hi; o++)
      into[o] = q >= hi || (p < mid && start[order[p]!]! < start[order[q]!]!) ? order[p++]! : order[q++]!
    next.push(hi)
  }
  return next
}

/** The first `n` pieces of `t` in `order`. */
const gather = (t: PointTable, order: Uint32Array, n: number): PointTable => {
  const out = pointColumns(n)
  for (let i = 0; i < n; i++) {
    const k = order[i]!
    out.start[i] = t.start[k]!
    out.end[i] = t.end[k]!
    out.seq[i] = t.seq[k]!
    out.fileOffset[i] = t.fileOffset[k]!
    out.segment[i] = t.segment[k]!
  }
  return out
}

/** A point's extents as objects. */
export const pointExtentsOf = (t: PointTable): Array<PointExtent> => {
  const out = new Array<PointExtent>(t.count)
  for (let i = 0; i < t.count; i++)
    out[i] = {
      start: t.start[i]!,
      end: t.end[i]!,
      seq: t.seq[i]!,
      fileOffset: t.fileOffset[i]!,
      segment: t.segment[i]!
    }
  return out
}

/** The first extent of `t` that ends after `offset` (`t.count` when none does). */
export const firstEndingAfter = (t: PointTable, offset: number): number => {
  let lo = 0
  let hi = t.count
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (t.end[mid]! <= offset) lo = mid + 1
    else hi = mid
  }
  return lo
}

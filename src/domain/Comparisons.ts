/**
 * The comparisons decided and not yet answered (trace version 2), oldest first.
 *
 * A checksum resync keeps up to a window of them (1024 blocks in the bench) and every
 * compared block adds one and, when its answer comes, drops one: as a plain array each of
 * those two events copied the whole window (16 KiB of garbage per block, 80–100 ms of CPU
 * per GiB compared; docs/performance.md, "Session 11, later"). Comparisons are appended
 * with ever larger ids and answered nearly always oldest first, so, as `Flight`, one
 * append-only array is shared between versions: a version owns the slots `[start, end)`;
 * appending where `end` is the array's length pushes in place (older versions never look
 * past their own `end`), appending from an older version copies first, and dropping the
 * oldest moves `start`. O(1) amortised. The fields are private (`#`): two versions with the
 * same comparisons are equal to `toEqual` whatever array they share.
 */
import { ComparisonsMutants } from "./internal/comparisonsMutants.js"

/**
 * A comparison decided and not yet answered: its `id`, its block, and `after`, the last
 * record sent before it (a match is believed only once that is acked).
 */
export interface Comparison {
  readonly id: number
  readonly block: number
  readonly after: number
}

export class Comparisons implements Iterable<Comparison> {
  /** Shared, append-only storage. */
  readonly #log: Array<Comparison>
  readonly #start: number
  readonly #end: number

  private constructor(log: Array<Comparison>, start: number, end: number) {
    this.#log = log
    this.#start = start
    this.#end = end
  }

  static readonly none: Comparisons = new Comparisons([], 0, 0)

  static fromArray(comparisons: ReadonlyArray<Comparison>): Comparisons {
    return comparisons.length === 0
      ? Comparisons.none
      : new Comparisons([...comparisons], 0, comparisons.length)
  }

  get length(): number {
    return this.#end - this.#start
  }

  /** `c` after the others. */
  push(c: Comparison): Comparisons {
    let log = this.#log
    let start = this.#start
    if (log === Comparisons.none.#log || (log.length !== this.#end && !ComparisonsMutants.pushInPlace)) {
      // Another version appended here already (or the shared empty one): take a private copy.
      log = log.slice(start, this.#end)
      start = 0
    }
    log.push(c)
    return new Comparisons(log, start, start + this.length + 1)
  }

  /** `cs` after the others, in their order (a run's comparisons: one copy at most, as `push`). */
  pushAll(cs: ReadonlyArray<Comparison>): Comparisons {
    if (cs.length === 0) return this
    let log = this.#log
    let start = this.#start
    if (log === Comparisons.none.#log || (log.length !== this.#end && !ComparisonsMutants.pushInPlace)) {
      log = log.slice(start, this.#end)
      start = 0
    }
    for (const c of cs) log.push(c)
    return new Comparisons(log, start, start + this.length + cs.length)
  }

  /**
   * Without comparisons `id … id + count − 1` but those in `keep` (a run's matched ones).
   * The run answered is nearly always the oldest, in one piece: then only `start` moves.
   */
  withoutRun(id: number, count: number, keep: ReadonlyArray<number>): Comparisons {
    const n = this.length
    if (n === 0) return this
    const last = this.#start + count - 1
    if (
      keep.length === 0 &&
      this.#log[this.#start]!.id === id &&
      last < this.#end &&
      this.#log[last]!.id === id + count - 1
    ) {
      if (count === n) return Comparisons.none
      let log = this.#log
      let start = this.#start + count
      let end = this.#end
      if (start >= 1024 && start * 2 >= log.length) {
        log = log.slice(start, end)
        end -= start
        start = 0
      }
      return new Comparisons(log, start, end)
    }
    const kept = new Set(keep)
    return this.filter((c) => c.id < id || c.id >= id + count || kept.has(c.id))
  }

  /** The comparisons `id … id + count − 1` that wait, in id order (`undefined` for one that does not). */
  run(id: number, count: number): Array<Comparison | undefined> {
    const out: Array<Comparison | undefined> = new Array(count).fill(undefined)
    let i = this.#start
    while (i < this.#end && this.#log[i]!.id < id) i++
    for (; i < this.#end; i++) {
      const c = this.#log[i]!
      if (c.id >= id + count) break
      out[c.id - id] = c
    }
    return out
  }

  /** Without comparison `id` (the same object when there is none). */
  without(id: number): Comparisons {
    const n = this.length
    if (n === 0) return this
    if (this.#log[this.#start]!.id === id) {
      // Answers come in request order: the one answered is nearly always the oldest.
      if (n === 1) return Comparisons.none
      let log = this.#log
      let start = this.#start + 1
      let end = this.#end
      // Compact once the answered prefix dominates, so the shared array does not grow without bound.
      if (start >= 1024 && start * 2 >= log.length) {
        log = log.slice(start, end)
        end -= start
        start = 0
      }
      return new Comparisons(log, start, end)
    }
    const left = this.toArray().filter((c) => c.id !== id)
    return left.length === n ? this : Comparisons.fromArray(left)
  }

  /** Comparison `id`, if it waits. */
  find(id: number): Comparison | undefined {
    for (let i = this.#start; i < this.#end; i++) if (this.#log[i]!.id === id) return this.#log[i]
    return undefined
  }

  *[Symbol.iterator](): Iterator<Comparison> {
    for (let i = this.#start; i < this.#end; i++) yield this.#log[i]!
  }

  toArray(): Array<Comparison> {
    return this.#log.slice(this.#start, this.#end)
  }

  /** As an array's `slice`: indices from the oldest. */
  slice(from?: number, to?: number): Array<Comparison> {
    return this.toArray().slice(from, to)
  }

  map<A>(f: (c: Comparison) => A): Array<A> {
    return this.toArray().map(f)
  }

  flatMap<A>(f: (c: Comparison) => ReadonlyArray<A> | A): Array<A> {
    return this.toArray().flatMap(f)
  }

  filter(keep: (c: Comparison) => boolean): Comparisons {
    const left = this.toArray().filter(keep)
    return left.length === this.length ? this : Comparisons.fromArray(left)
  }
}

/**
 * Persistent bitmap benchmarks (disk of 2^30 blocks = 64 TiB at 64 KiB), each beside its baseline:
 * a mutable, pre-touched flat Uint32Array bitmap doing the same work.
 * Run alone: `npx tsx bench/bitmap.ts` (add `--expose-gc` via NODE_OPTIONS for exact memory figures;
 * without it the gc is exposed at runtime through v8 flags).
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import * as Bitmap from "../dist/domain/Bitmap.js"
import { LEAF_BITS, LEAF_MASK, SPARSE_MAX } from "../dist/domain/internal/bitmapLeaf.js"
import { type BenchRow, opsPerSecond, renderTable } from "./table.js"

const SIZE = 2 ** 30
const MiB = 2 ** 20
const FLAT_BYTES = SIZE / 8

const gcFn = ((): (() => void) | undefined => {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (exposed !== undefined) return exposed
  try {
    setFlagsFromString("--expose-gc")
    return runInNewContext("gc") as () => void
  } catch {
    return undefined
  }
})()

const gc = (): void => {
  gcFn?.()
  gcFn?.()
}

/** Live bytes on the JS heap plus off-heap buffers (after a full gc when available). */
const liveBytes = (): number => {
  gc()
  const m = process.memoryUsage()
  return m.heapUsed + m.external
}

/** Deterministic xorshift32 so runs are comparable. */
const rng = (seed: number) => {
  let x = seed | 0 || 1
  return (): number => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return x >>> 0
  }
}

const randomIndices = (n: number, span: number, offset: number, seed: number): Uint32Array => {
  const next = rng(seed)
  const out = new Uint32Array(n)
  for (let i = 0; i < n; i++) out[i] = offset + (next() % span)
  return out
}

const BATCH = 1 << 16

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const rows: Array<BenchRow> = []
  const N = 1 << 22
  const uniform = randomIndices(N, SIZE, 0, 1)
  const hot = randomIndices(N, 2 ** 20, 3 * 2 ** 28 + 12345, 2)

  // Floor: flat mutable bitmap, random sets.
  const flat = new Uint32Array(SIZE / 32)
  flat.fill(1)
  flat.fill(0)
  let fi = 0
  const flatSets = () =>
    opsPerSecond(() => {
      // Locals, not captured variables, in every hot loop.
      const u = uniform
      const f = flat
      let i = fi
      for (const end = i + BATCH; i < end; i++) {
        const x = u[i & (N - 1)]!
        f[x >>> 5]! |= 1 << (x & 31)
      }
      fi = i
      return BATCH
    }, 200)
  // Best of a few: the floor should not be lowered by a noisy moment.
  const floor = Math.max(flatSets(), flatSets(), flatSets())
  const floorName = "flat Uint32Array, random sets"
  const setRow = (name: string, value: number, ratio: number, text: string): BenchRow => ({
    name,
    value,
    unit: "sets/s",
    baseline: floor,
    baselineName: floorName,
    higherIsBetter: true,
    target: { ratio, text }
  })

  // Per-event persistent sets: every set is a new version; the previous one is dropped.
  let b = Bitmap.empty(SIZE)
  let ui = 0
  const random = opsPerSecond(() => {
    const u = uniform
    let x = b
    let i = ui
    for (const end = i + BATCH; i < end; i++) x = Bitmap.set(x, u[i & (N - 1)]!)
    b = x
    ui = i
    return BATCH
  }, 2000)
  rows.push(
    setRow(
      `persistent set, uniform random (to ${(b.count / 1e6).toFixed(1)} M bits)`,
      random,
      1 / 50,
      ">= 1/50"
    )
  )
  const randomBitmap = b
  const setIndices = ui

  let s = Bitmap.empty(SIZE)
  let si = 0
  const sequential = opsPerSecond(() => {
    let x = s
    let i = si
    for (const end = i + BATCH; i < end; i++) x = Bitmap.set(x, i)
    s = x
    si = i
    return BATCH
  }, 1000)
  rows.push(setRow("persistent set, sequential", sequential, 1 / 20, ">= 1/20"))
  s = Bitmap.empty(SIZE)

  let h = Bitmap.empty(SIZE)
  let hi = 0
  const hotRate = opsPerSecond(() => {
    const u = hot
    let x = h
    let i = hi
    for (const end = i + BATCH; i < end; i++) x = Bitmap.set(x, u[i & (N - 1)]!)
    h = x
    hi = i
    return BATCH
  }, 1000)
  rows.push(setRow("persistent set, hot region (random in 2^20 blocks)", hotRate, 1 / 20, ">= 1/20"))
  h = Bitmap.empty(SIZE)

  let same = 0
  let ai = 0
  const setSpan = Math.min(setIndices, N)
  const already = opsPerSecond(() => {
    const u = uniform
    const x = randomBitmap
    let n = 0
    let i = ai
    for (const end = i + BATCH; i < end; i++) if (Bitmap.set(x, u[i % setSpan]!) === x) n++
    same += n
    ai = i
    return BATCH
  }, 1000)
  if (same !== ai) throw new Error("set of an already-set bit must return the same object")
  let hotSame = 0
  let hai = 0
  const hotBitmap = Bitmap.fromIterable(SIZE, hot.subarray(0, 1 << 16))
  const alreadyHot = opsPerSecond(() => {
    for (let k = 0; k < BATCH; k++, hai++)
      if (Bitmap.set(hotBitmap, hot[hai & 0xffff]!) === hotBitmap) hotSame++
    return BATCH
  }, 500)
  if (hotSame !== hai) throw new Error("set of an already-set bit must return the same object")

  // Transient (mutate) bulk sets, for replay and fromIterable: no target, for reference.
  let ti = 0
  const transient = opsPerSecond(() => {
    Bitmap.mutate(Bitmap.empty(SIZE), (m) => {
      const u = uniform
      let i = ti
      for (const end = i + (1 << 20); i < end; i++) m.set(u[i & (N - 1)]!)
      ti = i
    })
    return 1 << 20
  }, 1000)
  rows.push(
    setRow(
      `set of an already-set bit (same object), uniform random bitmap (${(randomBitmap.count / 1e6).toFixed(1)} M bits)`,
      already,
      1 / 10,
      ">= 1/10"
    ),
    setRow("set of an already-set bit (same object), hot region bitmap", alreadyHot, 1 / 10, ">= 1/10"),
    {
      name: "transient set (mutate), uniform random, 2^20 per batch",
      value: transient,
      unit: "sets/s",
      baseline: floor,
      baselineName: floorName,
      higherIsBetter: true
    }
  )
  b = Bitmap.empty(SIZE)
  rows.push(...memoryWorstCase(), ...memoryRuns(), findNextWalk())
  return rows
}

const gcNote = gcFn === undefined ? " (no gc: estimate)" : ""

const memoryWorstCase = (): Array<BenchRow> => {
  const rows: Array<BenchRow> = []
  // Memory, worst case: uniform dirt leaves every leaf dense and not full (the peak on the way to
  // "all 2^30 bits set in random order"); built with a transient, as replaying events would be.
  {
    const before = liveBytes()
    const flatCopy = new Uint32Array(SIZE / 32)
    flatCopy.fill(1)
    const flatBytes = liveBytes() - before
    flatCopy[0] = 0
    const before2 = liveBytes()
    const next = rng(3)
    const dense = Bitmap.mutate(Bitmap.empty(SIZE), (m) => {
      for (let leaf = 0; leaf < SIZE; leaf += LEAF_BITS) {
        for (let k = 0; k < SPARSE_MAX + 16; k++) m.set(leaf + (next() & LEAF_MASK))
      }
    })
    const bytes = liveBytes() - before2
    rows.push({
      name: `memory, uniform dirt worst case: all ${SIZE / LEAF_BITS} leaves dense (${(dense.count / 1e6).toFixed(0)} M bits)${gcNote}`,
      value: bytes / MiB,
      unit: "MiB",
      baseline: (flatBytes > FLAT_BYTES / 2 ? flatBytes : FLAT_BYTES) / MiB,
      baselineName: "flat bitmap",
      higherIsBetter: false,
      target: { ratio: 1 / 1.5, text: "<= 1.5x flat" }
    })

    // forEach over the dense bitmap vs scanning the flat words holding the same bits.
    const words = new Uint32Array(SIZE / 32)
    Bitmap.forEach(dense, (i) => {
      words[i >>> 5]! |= 1 << (i & 31)
    })
    let seen = 0
    const iter = opsPerSecond(() => {
      let n = 0
      Bitmap.forEach(dense, () => {
        n++
      })
      seen = n
      return n
    }, 1000)
    const flatIter = opsPerSecond(() => {
      let n = 0
      let sink = 0
      for (let w = 0; w < words.length; w++) {
        let x = words[w]!
        while (x !== 0) {
          const t = x & -x
          sink += (w << 5) + 31 - Math.clz32(t)
          n++
          x ^= t
        }
      }
      if (sink < 0) throw new Error("unreachable")
      return n
    }, 1000)
    if (seen !== dense.count) throw new Error("forEach visited the wrong number of bits")
    rows.push({
      name: "forEach over a densely dirty bitmap",
      value: iter,
      unit: "bits/s",
      baseline: flatIter,
      baselineName: "flat word scan",
      higherIsBetter: true,
      target: { ratio: 10e6 / flatIter, text: ">= 10 M bits/s" }
    })
  }

  return rows
}

const memoryRuns = (): Array<BenchRow> => {
  const rows: Array<BenchRow> = []
  // Memory, 1 % of the disk dirty in runs of 256 MiB (4096 blocks of 64 KiB) at random offsets.
  {
    const before = liveBytes()
    const next = rng(4)
    const runCount = Math.round((SIZE * 0.01) / 4096)
    let r = Bitmap.empty(SIZE)
    while (r.count < SIZE * 0.01) {
      const first = next() % (SIZE - 4096)
      r = Bitmap.setRange(r, first, first + 4095)
    }
    const bytes = liveBytes() - before
    rows.push({
      name: `memory, 1 % dirty in ~${runCount} runs of 256 MiB (4096 blocks), 2^30-block disk${gcNote}`,
      value: bytes / MiB,
      unit: "MiB",
      baseline: FLAT_BYTES / MiB,
      baselineName: "flat bitmap",
      higherIsBetter: false,
      target: { ratio: FLAT_BYTES / (8 * MiB), text: "<= 8 MiB" }
    })
    // A snapshot is keeping the old version: each kept version then costs one copied path.
    const before2 = liveBytes()
    const kept: Array<Bitmap.Bitmap> = [r]
    const pick = rng(6)
    for (let k = 0; k < 1000; k++) kept.push(Bitmap.set(kept[k]!, pick() % SIZE))
    const perSnapshot = Math.max(liveBytes() - before2, 1) / 1000
    if (kept.length !== 1001) throw new Error("unreachable")
    rows.push({
      name: `snapshot: keep every old version (1000 events, 1 set each)${gcNote}`,
      value: perSnapshot / 1024,
      unit: "KiB/version",
      baseline: FLAT_BYTES / 1024,
      baselineName: "copy of the flat bitmap",
      higherIsBetter: false,
      target: { ratio: FLAT_BYTES / (64 * 1024), text: "O(1): <= 64 KiB" }
    })
  }
  return rows
}

const findNextWalk = (): BenchRow => {
  // findNext walk over 1000 dirty blocks scattered across the whole disk.
  {
    const scattered = randomIndices(1000, SIZE, 0, 5)
    const sb = Bitmap.fromIterable(SIZE, scattered)
    const words = new Uint32Array(SIZE / 32)
    for (const i of scattered) words[i >>> 5]! |= 1 << (i & 31)
    let found = 0
    const walks = opsPerSecond(() => {
      let n = 0
      for (let i = Bitmap.findNext(sb, 0); i >= 0; i = Bitmap.findNext(sb, i + 1)) n++
      found = n
      return 1
    }, 500)
    const flatWalks = opsPerSecond(() => {
      let n = 0
      for (let w = 0; w < words.length; w++) if (words[w] !== 0) n += 1
      return n > 0 ? 1 : 1
    }, 500)
    if (found !== sb.count) throw new Error("findNext walk missed bits")
    return {
      name: `findNext walk over ${sb.count} scattered dirty blocks`,
      value: 1000 / walks,
      unit: "ms",
      baseline: 1000 / flatWalks,
      baselineName: "flat word scan",
      higherIsBetter: false,
      target: { ratio: 1000 / flatWalks / 1, text: "< 1 ms" }
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await run()
  console.log(renderTable("persistent bitmap (2^30 blocks)", rows))
}

/**
 * The pure core's figures: evolve and decide over write storms on a 64 TiB disk
 * (2^30 tracking blocks of 64 KiB), against the reducer floor: a flat, pre-touched
 * Uint32Array bitmap and a new state object per event.
 */
import { Either } from "effect"
import * as Config from "../dist/domain/Config.js"
import * as Decider from "../dist/domain/Decider.js"
import type * as Event from "../dist/domain/Event.js"
import type { Input } from "../dist/domain/Input.js"
import * as State from "../dist/domain/State.js"
import { type BenchRow, opsPerSecond, renderTable } from "./table.js"

const BLOCKS = 2 ** 30
const BS = 65536
const config = Either.getOrThrow(
  Config.make({
    blockSize: BS,
    blockCount: BLOCKS,
    window: 64,
    congestionLimit: Number.MAX_SAFE_INTEGER,
    initial: "in-sync"
  })
)

type Pattern = "uniform" | "sequential" | "hot-region"
const N = 1 << 20

/** Block indices of a write storm: uniform over the disk, sequential, or in a 4 GiB hot region. */
const blocksOf = (pattern: Pattern): Uint32Array => {
  const out = new Uint32Array(N)
  let seed = 12345
  const rnd = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return seed
  }
  const hotBase = 123 * 65536
  for (let i = 0; i < N; i++)
    out[i] =
      pattern === "uniform"
        ? (rnd() * 4 + (rnd() & 3)) % BLOCKS
        : pattern === "sequential"
          ? i
          : hotBase + (rnd() % 65536)
  return out
}

const tracked = (blocks: Uint32Array): Array<Event.Event> =>
  Array.from(blocks, (b) => ({ type: "WriteTracked", offset: b * BS, length: 4096 }) as Event.Event)

// ---------------------------------------------------------------------------
// The reducer floor: flat bitmap, new state object per event.

interface FlatState {
  readonly mode: "sync" | "resync"
  readonly epoch: number
  readonly nextSeq: number
  readonly watermark: number
  readonly dirty: Uint32Array
  readonly count: number
}

const flatBitmap = (() => {
  let cached: Uint32Array | undefined
  return () => {
    cached ??= new Uint32Array(BLOCKS / 32)
    cached.fill(0) // pre-touched: every page is mapped before timing
    return cached
  }
})()

const floorEvolve = (s: FlatState, e: Event.Event): FlatState => {
  if (e.type === "WriteTracked") {
    const first = Math.floor(e.offset / BS)
    const last = Math.floor((e.offset + e.length - 1) / BS)
    let count = s.count
    for (let b = first; b <= last; b++) {
      const w = s.dirty[b >>> 5]!
      const bit = 1 << (b & 31)
      if ((w & bit) === 0) {
        s.dirty[b >>> 5] = w | bit
        count++
      }
    }
    return { ...s, count }
  }
  if (e.type === "WriteStreamed") return { ...s, nextSeq: e.seq + 1 }
  return { ...s }
}

const floorRate = (events: ReadonlyArray<Event.Event>): number => {
  const dirty = flatBitmap()
  return opsPerSecond(() => {
    dirty.fill(0)
    let s: FlatState = { mode: "resync", epoch: 1, nextSeq: 1, watermark: 0, dirty, count: 0 }
    for (let i = 0; i < events.length; i++) s = floorEvolve(s, events[i]!)
    return events.length
  }, 600)
}

// ---------------------------------------------------------------------------

const resyncState = (): State.State =>
  Decider.evolve(State.initial(config), { type: "ResyncActivated", epoch: 1, reason: "congestion" })

const evolveRate = (events: ReadonlyArray<Event.Event>): number =>
  opsPerSecond(() => {
    let s = resyncState()
    for (let i = 0; i < events.length; i++) s = Decider.evolve(s, events[i]!)
    return events.length
  }, 600)

const batchRate = (events: ReadonlyArray<Event.Event>, batch: number): number =>
  opsPerSecond(() => {
    let s = resyncState()
    for (let i = 0; i < events.length; i += batch) s = Decider.evolveAll(s, events.slice(i, i + batch))
    return events.length
  }, 600)

/** decide + evolve for each completed write: the filter's hot path. */
const stormRate = (blocks: Uint32Array, mode: "sync" | "resync"): number =>
  opsPerSecond(() => {
    let s = mode === "resync" ? resyncState() : State.initial(config)
    let events = 0
    for (let i = 0; i < blocks.length; i++) {
      const input: Input = { _tag: "WriteCompleted", offset: blocks[i]! * BS, length: 4096 }
      const decided = Decider.decide(s, input)
      if (decided._tag === "Left") throw decided.left
      for (const e of decided.right) s = Decider.evolve(s, e)
      events += decided.right.length
      // In sync mode keep the flight bounded as acks would.
      if (mode === "sync" && (i & 1023) === 1023) {
        s = Decider.evolve(s, { type: "Acked", seq: s.nextSeq - 1 })
        events++
      }
    }
    return events
  }, 600)

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const rows: Array<BenchRow> = []
  for (const pattern of ["hot-region", "sequential", "uniform"] as const) {
    const blocks = blocksOf(pattern)
    const events = tracked(blocks)
    const floor = floorRate(events)
    rows.push({
      name: `evolve WriteTracked, one event at a time (${pattern})`,
      value: evolveRate(events),
      unit: "events/s",
      baseline: floor,
      baselineName: "reducer floor",
      higherIsBetter: true
    })
    rows.push({
      name: `evolveAll, batches of 1000 (${pattern})`,
      value: batchRate(events, 1000),
      unit: "events/s",
      baseline: floor,
      baselineName: "reducer floor",
      higherIsBetter: true,
      ...(pattern === "uniform" ? {} : { target: { ratio: 1 / 3, text: ">= 1/3 of floor" } })
    })
    rows.push({
      name: `decide+evolve write storm, resync (${pattern})`,
      value: stormRate(blocks, "resync"),
      unit: "events/s",
      baseline: floor,
      baselineName: "reducer floor",
      higherIsBetter: true,
      ...(pattern === "hot-region"
        ? { target: { min: 2e6, text: ">= 2 M/s" } }
        : pattern === "uniform"
          ? { target: { min: 0.5e6, text: ">= 0.5 M/s" } }
          : {})
    })
    rows.push({
      name: `decide+evolve write storm, sync: a record per write (${pattern})`,
      value: stormRate(blocks, "sync"),
      unit: "events/s",
      baseline: floorRate(
        Array.from(
          blocks,
          (b, i) => ({ type: "WriteStreamed", seq: i + 1, offset: b * BS, length: 4096 }) as Event.Event
        )
      ),
      baselineName: "reducer floor",
      higherIsBetter: true
    })
  }
  return rows
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((rows) => console.log(renderTable("core: decide / evolve (2^30 blocks of 64 KiB)", rows)))
}

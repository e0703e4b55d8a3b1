/**
 * EventJournal (file layer) append throughput, fsync per batch, against the plainest
 * way to make the same bytes durable: node:fs appending them and fsyncing once per batch.
 *
 *   npx tsx bench/adapters-journal.ts
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { Context, Effect, Either, Layer } from "effect"
import * as EventJournal from "../dist/adapters/EventJournal.js"
import { crc32c } from "../dist/internal/crc32c.js"
import * as Config from "../dist/domain/Config.js"
import type * as Event from "../dist/domain/Event.js"
import * as Simulation from "../dist/conformance/Simulation.js"
import * as Trace from "../dist/domain/Trace.js"
import { type BenchRow, renderTable } from "./table.js"

const MIN_MS = 1000

/** Realistic events: the reference filter under a faulty mixed workload. */
const sampleEvents = (count: number): ReadonlyArray<Event.Event> => {
  const config = Either.getOrThrow(Config.make({ blockCount: 64 }))
  const out: Array<Event.Event> = []
  for (let seed = 1; out.length < count; seed++)
    out.push(
      ...Simulation.run(config, Simulation.reference, Simulation.workload(config, seed, 5000, "some")).events
    )
  return out.slice(0, count)
}

/** The journal's record bytes, built independently of it (the baseline writes exactly these). */
const framed = (events: ReadonlyArray<Event.Event>): Buffer =>
  Buffer.concat(
    events.map((e) => {
      const payload = Buffer.from(Trace.encodeEvent(e), "utf8")
      const header = Buffer.alloc(8)
      header.writeUInt32LE(payload.length, 0)
      header.writeUInt32LE(crc32c(payload), 4)
      return Buffer.concat([header, payload])
    })
  )

const batchesOf = (events: ReadonlyArray<Event.Event>, size: number): Array<ReadonlyArray<Event.Event>> => {
  const out: Array<ReadonlyArray<Event.Event>> = []
  for (let i = 0; i + size <= events.length; i += size) out.push(events.slice(i, i + size))
  return out
}

const withDir = async <A>(f: (dir: string) => Promise<A>): Promise<A> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-sync-bench-journal-"))
  try {
    return await f(dir)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const openJournal = (directory: string) =>
  Effect.map(Layer.build(EventJournal.layerFile({ directory })), (ctx) =>
    Context.get(ctx, EventJournal.EventJournal)
  )

/** Events/s appending `batches` in turn, one append (one fsync) per batch, `fibers` appenders at once. */
const journalRate = (batches: ReadonlyArray<ReadonlyArray<Event.Event>>, fibers: number): Promise<number> =>
  withDir((dir) =>
    Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* openJournal(dir)
          let events = 0
          let next = 0
          const start = performance.now()
          const appender = Effect.gen(function* () {
            while (performance.now() - start < MIN_MS) {
              const batch = batches[next++ % batches.length]!
              yield* journal.append(batch)
              events += batch.length
            }
          })
          yield* Effect.all(
            Array.from({ length: fibers }, () => appender),
            { concurrency: "unbounded" }
          )
          return (events / (performance.now() - start)) * 1000
        })
      )
    )
  )

/** Events/s for node:fs writing the same bytes at the end of a file and fsyncing once per batch. */
const baselineRate = (batches: ReadonlyArray<ReadonlyArray<Event.Event>>): Promise<number> =>
  withDir(async (dir) => {
    const bytes = batches.map(framed)
    const fd = fs.openSync(path.join(dir, "baseline.log"), "a")
    try {
      let events = 0
      let i = 0
      const start = performance.now()
      while (performance.now() - start < MIN_MS) {
        const k = i++ % batches.length
        fs.writeSync(fd, bytes[k]!)
        fs.fsyncSync(fd)
        events += batches[k]!.length
      }
      return (events / (performance.now() - start)) * 1000
    } finally {
      fs.closeSync(fd)
    }
  })

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const events = sampleEvents(6000)
  const rows: Array<BenchRow> = []
  for (const size of [1, 100, 1000]) {
    const batches = batchesOf(events, size)
    rows.push({
      name: `journal append, batches of ${size} (fsync per batch)`,
      value: await journalRate(batches, 1),
      unit: "events/s",
      baseline: await baselineRate(batches),
      baselineName: "node:fs write+fsync per batch",
      higherIsBetter: true
    })
  }
  const singles = batchesOf(events, 1)
  rows.push({
    name: "journal append, 1-event batches from 64 fibers (group commit)",
    value: await journalRate(singles, 64),
    unit: "events/s",
    baseline: await baselineRate(singles),
    baselineName: "node:fs write+fsync per event",
    higherIsBetter: true
  })
  return rows
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href)
  run().then(
    (rows) => console.log(renderTable("EventJournal (file layer) append throughput", rows)),
    (error) => {
      console.error(error)
      process.exitCode = 1
    }
  )

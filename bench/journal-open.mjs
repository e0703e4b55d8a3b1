/**
 * The file journal's open: a journal of ~300k real events with a recent snapshot,
 * opened by two builds in alternating rounds (old: the full scan; new: from the
 * snapshot's log anchor). Run it under the bench lock:
 *
 *   flock -o /tmp/cdp-bench.lock node bench/journal-open.mjs <old-dist> <new-dist> [events] [rounds]
 *
 * ONLY=old|new opens one build only (for `--cpu-prof` runs).
 *
 * The journal is written once by the new build (an old build ignores the anchor).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { Effect, Either } from "effect"

const [oldDist, newDist, eventsArg = "300000", roundsArg = "7"] = process.argv.slice(2)
if (oldDist === undefined || newDist === undefined) {
  process.stderr.write("usage: node bench/journal-open.mjs <old-dist> <new-dist> [events] [rounds]\n")
  process.exit(2)
}
const total = Number(eventsArg)
const rounds = Number(roundsArg)
const load = (dist, module) => import(pathToFileURL(path.resolve(dist, module)).href)

const [oldJournal, newJournal, Config, Simulation, State] = await Promise.all([
  load(oldDist, "adapters/EventJournal.js"),
  load(newDist, "adapters/EventJournal.js"),
  load(newDist, "domain/Config.js"),
  load(newDist, "conformance/Simulation.js"),
  load(newDist, "domain/State.js")
])

const config = Either.getOrThrow(Config.make({ blockCount: 4096 }))
// Real events from the reference filter, repeated to the size wanted (the journal does not fold).
const pattern = []
for (let seed = 1; pattern.length < 20000; seed++)
  pattern.push(
    ...Simulation.run(config, Simulation.reference, Simulation.workload(config, seed, 5000, "some")).events
  )

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-sync-bench-journal-open-"))
const snapshotAt = total - 1000
await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const journal = yield* newJournal.makeFile({ directory: dir })
      let written = 0
      const write = (upTo) =>
        Effect.gen(function* () {
          while (written < upTo) {
            const n = Math.min(5000, upTo - written)
            const batch = []
            for (let i = 0; i < n; i++) batch.push(pattern[(written + i) % pattern.length])
            yield* journal.append(batch)
            written += n
          }
        })
      yield* write(snapshotAt)
      yield* journal.saveSnapshot(State.toSnapshot(State.initial(config)), snapshotAt)
      yield* write(total)
    })
  )
)
const logBytes = fs.statSync(path.join(dir, "events.log")).size

const openOnce = async (Journal) => {
  const t0 = process.hrtime.bigint()
  const position = await Effect.runPromise(
    Effect.scoped(Effect.flatMap(Journal.makeFile({ directory: dir }), (j) => j.position))
  )
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  if (position !== total) throw new Error(`opened at ${position}, expected ${total}`)
  return ms
}

const only = process.env.ONLY
const times = { old: [], new: [] }
const t0 = performance.now()
for (let r = -1; r < rounds; r++) {
  // Round -1 warms both builds up; it is not counted.
  const old = only === "new" ? 0 : await openOnce(oldJournal)
  const fresh = only === "old" ? 0 : await openOnce(newJournal)
  if (r >= 0) {
    times.old.push(old)
    times.new.push(fresh)
  }
}
process.stderr.write(`opens from ${t0.toFixed(0)} ms after start\n`)
if (process.env.KEEP === undefined) fs.rmSync(dir, { recursive: true, force: true })
else process.stderr.write(`kept ${dir}\n`)

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const show = (xs) =>
  `median ${median(xs).toFixed(1)} ms (min ${Math.min(...xs).toFixed(1)}, max ${Math.max(...xs).toFixed(1)})`
process.stdout.write(
  `journal of ${total} events (${(logBytes / 2 ** 20).toFixed(1)} MiB), snapshot at ${snapshotAt}, ${rounds} alternating rounds\n` +
    `old (full scan):   ${show(times.old)}\n` +
    `new (from anchor): ${show(times.new)}\n` +
    `ratio old/new per round: ${times.old.map((t, i) => (t / times.new[i]).toFixed(0)).join(" ")}\n`
)

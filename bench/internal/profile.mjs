/**
 * Summarises a V8 .cpuprofile (`node --cpu-prof`, as `CDP_SYNC_BENCH_PROFILE=DIR` runs the
 * replicator bench's children) for docs/performance.md: where the busy time went, by
 * module (a source module of dist/, effect's runtime, node's own code, native calls such
 * as the write syscalls, the garbage collector) and by function (self time), and the
 * inclusive time of the functions named with `--incl`. The receiver runs the bundled CLI
 * (dist/cli/receiver.cjs; every bundle of dist/cli): its functions are mapped back to their modules by esbuild's
 * `// dist/…` markers in the bundle.
 * Usage: `node bench/internal/profile.mjs FILE [--window RUN.json] [--skip-ms N] [--per N]
 * [--top N] [--incl a,b] [--callers NAME] [--areas filter|receiver]`: `--window` keeps the samples of the run's
 * measured interval (the bench writes RUN.json beside the profiles) and divides by its writes,
 * `--skip-ms` drops the first N ms of samples (start-up and warm-up), `--per` divides
 * every figure by N (writes or records) to print µs each, `--callers` splits the inclusive
 * time of a function by the two frames above it, `--areas` (by default from the file's
 * name) sorts the samples into the areas of the filter's or the receiver's work, each
 * sample to the first area whose rule matches a frame of its stack.
 */
import * as fs from "node:fs"
import * as path from "node:path"

const argv = process.argv.slice(2)
const file = argv[0]
const option = (name, fallback) => {
  const i = argv.indexOf(`--${name}`)
  return i < 0 ? fallback : argv[i + 1]
}
/**
 * `--window RUN.json`: the figures the bench wrote for the run (CDP_SYNC_BENCH_PROFILE):
 * only the samples of its measured interval count, and figures are per write or record.
 */
const run =
  option("window", undefined) === undefined
    ? undefined
    : JSON.parse(fs.readFileSync(option("window"), "utf8"))
const skipMs = Number(option("skip-ms", 0))
const per = Number(option("per", run?.writes ?? run?.records ?? 0))
const top = Number(option("top", 30))
const incl = (option("incl", "") || "").split(",").filter((s) => s !== "")
const callersOf = option("callers", undefined)

const profile = JSON.parse(fs.readFileSync(file, "utf8"))
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const parent = new Map()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

/** Module markers of a bundle (`// dist/receiver/internal/segment.js` before each module), by line. */
const bundles = new Map()
const markersOf = (url) => {
  if (!bundles.has(url)) {
    const markers = []
    try {
      const lines = fs.readFileSync(new URL(url), "utf8").split("\n")
      lines.forEach((line, i) => {
        const m = /^\/\/ (\S+\.m?js)$/.exec(line)
        if (m !== null) markers.push([i, m[1].replace(/^(\.\.\/)+(main\/)?/, "")])
      })
    } catch {}
    bundles.set(url, markers)
  }
  return bundles.get(url)
}

/** The module a frame belongs to, in short. */
const moduleOf = (frame) => {
  const { url, functionName, lineNumber } = frame
  if (url === "") return functionName.startsWith("(") ? functionName : `(native) ${functionName}`
  if (url.startsWith("node:")) return url
  let p = url
  if (/\/cli\/[a-z]+\.c?js$/.test(url)) {
    const markers = markersOf(url)
    let found
    for (const [line, name] of markers) {
      if (line > lineNumber) break
      found = name
    }
    if (found !== undefined) p = found
  }
  p = p.replace(/^file:\/\//, "")
  const effect = /node_modules\/effect\/dist\/esm\/(.*)$/.exec(p)
  if (effect !== null) return `effect/${effect[1]}`
  const nm = /node_modules\/(.*)$/.exec(p)
  if (nm !== null) return `node_modules/${nm[1]}`
  const dist = /(?:^|\/)dist\/(.*)$/.exec(p)
  if (dist !== null) return dist[1]
  return path.basename(p)
}

// Self time per node, from the samples after the skipped start.
const self = new Map()
let t = profile.startTime
for (let i = 0; i < profile.samples.length; i++) {
  t += profile.timeDeltas[i] ?? 0
  if (t - profile.startTime < skipMs * 1000) continue
  if (run !== undefined && (t < run.window.fromUs || t > run.window.toUs)) continue
  const id = profile.samples[i]
  self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
}
const sum = (m) => [...m.values()].reduce((a, b) => a + b, 0)
const total = sum(self)
const idle = [...self]
  .filter(([id]) => byId.get(id).callFrame.functionName === "(idle)")
  .reduce((a, [, v]) => a + v, 0)
const busy = total - idle

/**
 * With `--window`, figures are scaled to the process's CPU time over the interval (the
 * filter's own, or the receiver's for a profile named receiver-…): the profiler samples
 * the main thread's wall time, which counts the time the thread was runnable but not
 * running (on a loaded machine) and leaves out the other threads' CPU.
 */
const cpuUs =
  run === undefined
    ? undefined
    : path.basename(file).startsWith("receiver")
      ? run.receiverCpuUs
      : // The probe's pwrites are in the profile (the bench's area), not in the run's cpuUs.
        run.cpuUs + (run.probeCpuUs ?? 0)
const scale = cpuUs === undefined ? 1 : cpuUs / busy
const fmt = (raw) => {
  const us = raw * scale
  return per > 0 ? `${(us / per).toFixed(2).padStart(7)} µs` : `${(us / 1000).toFixed(0).padStart(6)} ms`
}
const pct = (us) => `${((100 * us) / busy).toFixed(1).padStart(5)} %`

const group = (key) => {
  const out = new Map()
  for (const [id, us] of self) {
    const frame = byId.get(id).callFrame
    if (frame.functionName === "(idle)") continue
    const k = key(frame)
    out.set(k, (out.get(k) ?? 0) + us)
  }
  return [...out].sort((a, b) => b[1] - a[1])
}

console.log(
  `${path.basename(file)}: ${(total / 1e6).toFixed(2)} s sampled${skipMs > 0 ? ` after the first ${skipMs} ms` : ""}, main thread busy ${(busy / 1e6).toFixed(2)} s${per > 0 ? `, ${per} writes or records: ${(busy / per).toFixed(2)} µs busy each` : ""}${cpuUs === undefined ? "" : `; process CPU ${(cpuUs / 1e6).toFixed(2)} s${per > 0 ? ` (${(cpuUs / per).toFixed(2)} µs each)` : ""}, figures scaled to it`}`
)
console.log("\nby module (self time)")
for (const [k, us] of group(moduleOf).slice(0, top)) console.log(`${fmt(us)} ${pct(us)}  ${k}`)
console.log("\nby function (self time)")
for (const [k, us] of group(
  (f) => `${f.functionName || "(anonymous)"}  ${moduleOf(f)}:${f.lineNumber + 1}`
).slice(0, top))
  console.log(`${fmt(us)} ${pct(us)}  ${k}`)
// Areas: each sample goes to the first area whose rule matches its stack (leaf first).
const any = (test) => (stack) => stack.some(test)
const leaf = (test) => (stack) => test(stack[0])
const inModule =
  (...names) =>
  (f) =>
    names.some((n) => f.module.startsWith(n))
const named =
  (...names) =>
  (f) =>
    names.includes(f.name)
const AREAS = {
  filter: [
    [
      "disk write: the blocking pwrite of the guest data",
      any((f) => f.name === "pwriteFullySync" || f.module === "adapters/internal/diskFile.js")
    ],
    ["wire: frame encode and its CRC", any(inModule("protocol/"))],
    [
      "journal: event encoding, append, fsync",
      any(
        (f) =>
          /^adapters\/internal\/journal|^domain\/Trace/.test(f.module) ||
          ["fsync", "fdatasync"].includes(f.name)
      )
    ],
    [
      "socket: writes to the receiver, acks read (TCP adapter, node streams, writev)",
      any(
        (f) =>
          f.module === "adapters/internal/receiverTcp.js" ||
          f.module === "node:net" ||
          f.module.startsWith("node:internal/stream") ||
          f.name === "writev"
      )
    ],
    ["copy of the guest data (slab pool)", any(inModule("internal/slab.js"))],
    [
      "write path: checks, admission, overlap gate",
      any(
        inModule(
          "replicator/internal/writePath",
          "replicator/internal/overlapGate",
          "replicator/internal/admission"
        )
      )
    ],
    [
      "decision loop and decider (domain)",
      any(
        inModule(
          "replicator/internal/decisionLoop",
          "replicator/internal/status",
          "replicator/internal/shared",
          "domain/"
        )
      )
    ],
    [
      "journal stage and sender (acting on a batch)",
      any(inModule("replicator/internal/journalStage", "replicator/internal/sender", "internal/inbox"))
    ],
    ["the bench's guest writers", any(inModule("filterRun.mjs"))],
    ["garbage collector", leaf(named("(garbage collector)"))],
    ["Effect runtime: fibers, scheduling, refs, metrics", leaf(inModule("effect/"))],
    ["node: event loop (timers, immediates, promises)", leaf(inModule("node:"))]
  ],
  receiver: [
    [
      "segment seal: the index and block index of a full segment, built at once",
      any((f) => f.name === "seal" || f.module === "receiver/internal/blockIndex.js")
    ],
    [
      "wire: CRC of each frame's payload",
      (stack) => stack[0].name === "crc32c" && stack.some(inModule("protocol/"))
    ],
    ["wire: frame decode", any(inModule("protocol/"))],
    [
      "log append: record headers (CRC), pwritev, fdatasync, entries",
      any(
        (f) =>
          (["commit", "append"].includes(f.name) && f.module === "receiver/LogStore.js") ||
          /^receiver\/internal\/(format|files|segment|chain)/.test(f.module) ||
          ["writeBuffers", "writeBuffer", "fdatasync", "fsync"].includes(f.name)
      )
    ],
    ["live index", any(inModule("receiver/internal/liveIndex"))],
    [
      "connection and service: frames to records, acks, queues",
      any(
        inModule(
          "receiver/internal/connection",
          "receiver/ReceiverService",
          "receiver/LogStore",
          "domain/",
          "internal/inbox"
        )
      )
    ],
    ["garbage collector", leaf(named("(garbage collector)"))],
    ["Effect runtime: fibers, scheduling, refs, metrics", leaf(inModule("effect/"))],
    ["node: sockets, streams, event loop", leaf(inModule("node:"))]
  ]
}
const areaKind = option("areas", path.basename(file).startsWith("receiver") ? "receiver" : "filter")
const rules = AREAS[areaKind]
if (rules !== undefined) {
  const frameOf = (id) => {
    const f = byId.get(id).callFrame
    return { name: f.functionName, module: moduleOf(f) }
  }
  const byArea = new Map()
  for (const [id, us] of self) {
    if (byId.get(id).callFrame.functionName === "(idle)") continue
    const stack = []
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) stack.push(frameOf(cur))
    const area = rules.find(([, rule]) => rule(stack))?.[0] ?? "other"
    byArea.set(area, (byArea.get(area) ?? 0) + us)
  }
  console.log(`\nby area (${areaKind})`)
  for (const [k, us] of [...byArea].sort((a, b) => b[1] - a[1])) console.log(`${fmt(us)} ${pct(us)}  ${k}`)
}
if (incl.length > 0) {
  // Inclusive: a sample counts for a name once if the name is anywhere on its stack.
  const inclusive = new Map()
  for (const [id, us] of self) {
    const seen = new Set()
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const name = byId.get(cur).callFrame.functionName
      if (incl.includes(name) && !seen.has(name)) {
        seen.add(name)
        inclusive.set(name, (inclusive.get(name) ?? 0) + us)
      }
    }
  }
  console.log("\ninclusive")
  for (const name of incl)
    console.log(`${fmt(inclusive.get(name) ?? 0)} ${pct(inclusive.get(name) ?? 0)}  ${name}`)
}
if (callersOf !== undefined) {
  const by = new Map()
  for (const [id, us] of self) {
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      if (byId.get(cur).callFrame.functionName !== callersOf) continue
      const up = parent.get(cur)
      const upUp = up === undefined ? undefined : parent.get(up)
      const name = (n) =>
        n === undefined
          ? ""
          : `${byId.get(n).callFrame.functionName || "(anonymous)"} ${moduleOf(byId.get(n).callFrame)}:${byId.get(n).callFrame.lineNumber + 1}`
      const k = `${name(up)} < ${name(upUp)}`
      by.set(k, (by.get(k) ?? 0) + us)
      break
    }
  }
  console.log(`\ncallers of ${callersOf} (inclusive)`)
  for (const [k, us] of [...by].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`${fmt(us)} ${pct(us)}  ${k}`)
}

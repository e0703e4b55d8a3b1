/**
 * `npm run bench`: every benchmark group, each figure beside its baseline (the
 * same work done the plainest fast way) and the ratio. Not a test: targets are
 * marked yes/NO, and the exit code is 0 either way.
 * Run one group with `npm run bench -- core` (names: see `groups`). Every group
 * measures the built package (dist/, what `npm ci` builds and what users import),
 * not the sources through tsx: its transform keeps function names by wrapping every
 * closure as it is made, which cost the replicator about a quarter of its 4 KiB
 * rate. `npm run bench` builds first. `--quick`: a short pass of every group (see
 * `QUICK` in table.ts and docs/performance.md); each table says how long its group
 * took, and the last line the whole run.
 */
import { type BenchRow, QUICK, renderTable, targetMet } from "./table.js"

// The quick pass's settings for the groups that read theirs from the environment (set
// before the groups are imported; a setting already given wins).
if (QUICK) {
  const quick: Record<string, string> = {
    CDP_SYNC_BENCH_NBD_SECONDS: "2",
    CDP_SYNC_BENCH_NBD_ROUNDS: "1",
    CDP_SYNC_BENCH_MOUNT_DISK: "256MiB",
    CDP_SYNC_BENCH_MOUNT_LOG: "1GiB",
    CDP_SYNC_BENCH_MOUNT_ROUNDS: "1",
    CDP_SYNC_BENCH_MOUNT_SECONDS: "2",
    CDP_SYNC_BENCH_CHECKSUM_DISK: String(256 * 1024 * 1024),
    CDP_SYNC_BENCH_CHECKSUM_ROUNDS: "1"
  }
  for (const [name, value] of Object.entries(quick)) process.env[name] ??= value
}

type Group = readonly [string, string, () => Promise<{ run: () => Promise<ReadonlyArray<BenchRow>> }>]
const groups: ReadonlyArray<Group> = [
  ["bitmap", "persistent bitmap (2^30 blocks)", () => import("./bitmap.js")],
  ["core", "core: decide / evolve (2^30 blocks of 64 KiB)", () => import("./core.js")],
  ["journal", "event journal: append with fsync per batch", () => import("./adapters-journal.js")],
  ["wire", "wire codec: encode / decode", () => import("./adapters-wire.js")],
  ["check-trace", "check-trace: streaming legality check of a trace", () => import("./check-trace.js")],
  ["receiver", "log receiver: ingest with fsync before ack", () => import("./receiver.js")],
  [
    "replicator",
    "replicator: end to end on loopback (the real receiver process), rounds interleaved",
    () => import("./replicator.js")
  ],
  [
    "many-disks",
    "many disks: one receiver process, 1, 8 and 64 replicators at once (each its own image, journal and connection)",
    () => import("./replicator.js").then((m) => ({ run: m.runManyDisks }))
  ],
  [
    "nbd",
    "NBD: fio through cdp-sync serve against qemu-nbd and QEMU's mirror (ratios of the medians)",
    () => import("./nbd.js")
  ],
  [
    "checksum",
    "checksum resync and online verify: a 1 GiB disk, the real receiver and filter processes (ratios of the medians)",
    () => import("./checksum.js")
  ],
  [
    "mount",
    "mount and restore: a recovery point over NBD and through the block index (ratios of the medians)",
    () => import("./mount.js")
  ]
]

const wanted = process.argv.slice(2).filter((a) => a !== "--quick")
const unknown = wanted.filter((w) => !groups.some(([name]) => name === w))
if (unknown.length > 0) {
  process.stderr.write(
    `unknown group(s): ${unknown.join(", ")}; groups: ${groups.map(([n]) => n).join(", ")}\n`
  )
  process.exit(2)
}
if (QUICK)
  console.log("QUICK PASS (--quick): fewer and shorter rounds; to check the bench runs, not to steer by")
const missed: Array<string> = []
const began = performance.now()
const took: Array<string> = []
for (const [name, title, load] of groups) {
  if (wanted.length > 0 && !wanted.includes(name)) continue
  process.stderr.write(`running ${name} …\n`)
  const t = performance.now()
  const rows = await (await load()).run()
  const seconds = Math.round((performance.now() - t) / 1000)
  took.push(`${name} ${seconds} s`)
  console.log(renderTable(`${title}${QUICK ? " [quick]" : ""} (${seconds} s)`, rows))
  for (const row of rows) if (!targetMet(row)) missed.push(`${name}: ${row.name} (${row.target?.text})`)
}
console.log(missed.length === 0 ? "\nall targets met" : `\ntargets missed:\n  ${missed.join("\n  ")}`)
console.log(
  `\n${QUICK ? "quick pass" : "bench"} took ${Math.round((performance.now() - began) / 1000)} s (${took.join(", ")})`
)

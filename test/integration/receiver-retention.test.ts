/**
 * Retention: with a tiny segment size and a horizon, the receiver folds old segments
 * into a new base image — only up to a recovery point at or before the horizon, so every
 * recovery point inside it stays listed and restorable — and the log stays bounded.
 * Ages are judged by the monotonic clock: a wall clock that jumps a year ahead and back
 * folds nothing young, and receive times keep advancing (issue 13, finding 6).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import * as LogStore from "../../src/receiver/LogStore.js"
import * as Restore from "../../src/receiver/Restore.js"
import * as Proc from "../support/receiverProcess.js"

const tempDir = tempDirs("cdp-receiver-retention-")
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const geometry = { blockSize: 4096, blockCount: 32 }
const hello = { diskId: "vm", ...geometry, watermark: 0 }
const RECORD_HEADER = 40

const restoresMatch = async (dir: string, plan: ReadonlyArray<Proc.Planned>, seqs: ReadonlyArray<number>) => {
  const expected = Proc.imagesAt(plan, geometry, seqs)
  // Outside the receiver directory: restore refuses to write inside it.
  const outDir = tempDir()
  for (const seq of seqs) {
    const out = path.join(outDir, `at-${seq}.img`)
    await Effect.runPromise(Restore.restore({ dir, diskId: "vm", at: seq, out }))
    expect(fs.readFileSync(out).equals(Buffer.from(expected.get(seq)!)), `restore at ${seq}`).toBe(true)
    fs.rmSync(out)
  }
}

describe("receiver retention", () => {
  it("by size: folds old segments into the base without losing a recovery point inside the horizon", async () => {
    const dir = tempDir()
    const keep = 64 * 1024
    const receiver = await Proc.start(dir, ["--segment-bytes", "16KiB", "--retain", "64KiB"])
    const plan = Proc.makePlan({ seed: 5, records: 700, ...geometry, maxWrite: 2000, resyncChance: 0.06 })
    try {
      const result = await Proc.streamPlan({ host: receiver.host, port: receiver.port, hello, plan })
      expect(result.outcome).toBe("complete")
      // Folds run after segment rolls and may trail the stream on a loaded machine: wait
      // (bounded) until the log is down to what the horizon keeps, rather than a fixed sleep.
      const written = plan.reduce(
        (n, p) => n + RECORD_HEADER + ("data" in p.record ? p.record.data.length : 0),
        0
      )
      for (let waited = 0; waited < 30_000; waited += 100) {
        const [now] = await Effect.runPromise(Restore.points(dir, "vm"))
        const onDisk = fs.readdirSync(path.join(dir, "vm")).filter((n) => n.endsWith(".seg")).length
        // …and the fold has removed the segments it covers (it deletes them after the rename).
        if (now !== undefined && now.baseSeq > 0 && now.logBytes < written / 2 && onDisk === now.segments)
          break
        await sleep(100)
      }
    } finally {
      await receiver.kill("SIGTERM")
    }
    expect(receiver.stderr()).toMatch(/folded the log into the base image/)

    const [listed] = await Effect.runPromise(Restore.points(dir, "vm"))
    const { baseSeq, logBytes, segments, points } = listed!
    // Folded, to a recovery point of the plan.
    expect(baseSeq).toBeGreaterThan(0)
    expect(plan[baseSeq - 1]!.recoveryPoint).toBe(true)
    // The log keeps at least the horizon, and old segments are gone.
    const written = plan.reduce(
      (n, p) => n + RECORD_HEADER + ("data" in p.record ? p.record.data.length : 0),
      0
    )
    expect(logBytes).toBeGreaterThanOrEqual(keep)
    expect(logBytes).toBeLessThan(written / 2)
    const files = fs.readdirSync(path.join(dir, "vm")).filter((n) => n.endsWith(".seg"))
    expect(files).toHaveLength(segments)

    // Every recovery point inside the horizon — records within the newest 64 KiB of log
    // (less room for segment headers) — is after the base and listed.
    const room = keep - 512
    let trailing = 0
    const inside: Array<number> = []
    for (let i = plan.length - 1; i >= 0; i--) {
      const p = plan[i]!
      const size = RECORD_HEADER + ("data" in p.record ? p.record.data.length : 0)
      if (trailing + size > room) break
      trailing += size
      if (p.recoveryPoint) inside.push(p.record.seq)
    }
    expect(inside.length).toBeGreaterThan(10)
    expect(Math.min(...inside)).toBeGreaterThan(baseSeq)
    const listedSeqs = points.map((p) => p.seq)
    expect(listedSeqs).toEqual([
      baseSeq,
      ...plan.filter((p) => p.recoveryPoint && p.record.seq > baseSeq).map((p) => p.record.seq)
    ])
    for (const seq of inside) expect(listedSeqs).toContain(seq)

    // The log from the base on is the plan, byte for byte; restores match, the base included.
    const { records } = await Proc.readLog(dir, "vm")
    for (const r of records.filter((r) => r.seq > baseSeq))
      expect(Proc.compare(r, plan[r.seq - 1]!)).toBeUndefined()
    await restoresMatch(dir, plan, [baseSeq, inside.at(-1)!, inside[0]!, listedSeqs[1]!])

    // A point folded into the base is refused, and the base named as the nearest one.
    const folded = plan.filter((p) => p.recoveryPoint && p.record.seq < baseSeq).at(-1)!.record.seq
    const exit = await Effect.runPromiseExit(
      Restore.restore({ dir, diskId: "vm", at: folded, out: path.join(dir, "x.img") })
    )
    expect(Exit.isFailure(exit)).toBe(true)
    expect(String(Exit.isFailure(exit) && exit.cause)).toMatch(
      new RegExp(
        `folded into the base image \\(at seq ${baseSeq}\\); nearest recovery points: ${baseSeq} \\(after\\)`
      )
    )

    // After a restart (recovery reads the new base and the remaining chain) the disk carries on.
    const again = await Proc.start(dir, ["--segment-bytes", "16KiB", "--retain", "64KiB"])
    try {
      const more = Proc.makePlan({ seed: 5, records: 760, ...geometry, maxWrite: 2000, resyncChance: 0.06 })
      const result = await Proc.streamPlan({
        host: again.host,
        port: again.port,
        hello: { ...hello, watermark: 700 },
        plan: more
      })
      expect(result).toMatchObject({ welcome: 700, lastAck: 760, outcome: "complete" })
    } finally {
      await again.kill("SIGTERM")
    }
  })

  it("by age: folds only records older than the horizon", async () => {
    const dir = tempDir()
    // A horizon well above what the second stream takes even on a loaded machine, so none
    // of its records can age past it before the check.
    const receiver = await Proc.start(dir, ["--segment-bytes", "8KiB", "--retain", "6s"])
    const plan = Proc.makePlan({ seed: 9, records: 300, ...geometry, maxWrite: 1500, resyncChance: 0.05 })
    try {
      await Proc.streamPlan({ host: receiver.host, port: receiver.port, hello, plan: plan.slice(0, 150) })
      await sleep(6300)
      // New records roll segments, and each roll checks retention.
      const result = await Proc.streamPlan({
        host: receiver.host,
        port: receiver.port,
        hello: { ...hello, watermark: 150 },
        plan
      })
      expect(result.outcome).toBe("complete")
      await sleep(200)
    } finally {
      await receiver.kill("SIGTERM")
    }
    const [listed] = await Effect.runPromise(Restore.points(dir, "vm"))
    const { baseSeq, points } = listed!
    // Folded into the first batch only: everything received after the pause is kept.
    expect(baseSeq).toBeGreaterThan(0)
    expect(baseSeq).toBeLessThanOrEqual(150)
    const recent = plan.filter((p) => p.recoveryPoint && p.record.seq > 150).map((p) => p.record.seq)
    for (const seq of recent) expect(points.map((p) => p.seq)).toContain(seq)
    await restoresMatch(dir, plan, [baseSeq, recent[0]!, recent.at(-1)!])
  })
})

describe("receiver retention under clock jumps", () => {
  const HOUR = 3_600_000
  const YEAR = 365 * 24 * HOUR
  const W0 = 1_700_000_000_000

  /** Waits until `n` more retention rounds have run (one whole round sees the clocks as they are now). */
  const rounds = (store: LogStore.Store, n: number) =>
    Effect.gen(function* () {
      const target = store.stats.retentionRounds + n
      while (store.stats.retentionRounds < target) yield* Effect.sleep("5 millis")
    })

  const pointTimes = async (dir: string, from: number) => {
    const [listed] = await Effect.runPromise(Restore.points(dir, "vm"))
    return listed!.points.filter((p) => p.seq >= from).map((p) => p.time)
  }

  it("a wall clock a year ahead and back: nothing young folded, times keep increasing, age retention goes on", async () => {
    const dir = tempDir()
    // The injected clocks: every record 10 ms after the last, on both clocks unless a jump says otherwise.
    const t = { wall: W0, monotonic: 1_000 }
    let seq = 0
    const open = LogStore.open({
      dir,
      segmentBytes: 4096,
      retain: { _tag: "Age", millis: HOUR },
      retentionInterval: "5 millis",
      now: () => t.wall,
      monotonic: () => t.monotonic
    })
    const receive = (disk: LogStore.DiskLog, n: number) =>
      Effect.gen(function* () {
        for (let i = 0; i < n; i++) {
          seq++
          t.wall += 10
          t.monotonic += 10
          const data = new Uint8Array(1000).fill(seq % 251)
          disk.append({ _tag: "Write", seq, epoch: 0, offset: (seq * 512) % 100_000, data }, true)
        }
        yield* disk.flushed
      })

    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* open
          const disk = yield* store.disk(hello)
          yield* receive(disk, 20)
          // The wall clock jumps a year ahead; seconds later, nothing is an hour old.
          t.wall += YEAR
          yield* receive(disk, 20)
          t.monotonic += 5_000
          yield* rounds(store, 2)
          expect.soft(disk.base.seq, "seconds-old records folded").toBe(0)
          expect.soft(store.stats.folds).toBe(0)

          // The wall clock comes back: the points keep distinct, increasing times.
          t.wall = W0 + 1_000
          const back = seq + 1
          yield* receive(disk, 20)
          const times = yield* Effect.promise(() => pointTimes(dir, back))
          expect.soft(times).toHaveLength(20)
          for (let i = 1; i < times.length; i++)
            expect.soft(times[i]!, `point ${back + i} after ${back + i - 1}`).toBeGreaterThan(times[i - 1]!)
          expect.soft(times[0]!).toBeGreaterThan(W0 + YEAR)

          // Two hours on (the wall clock still far behind the stored times): age-based retention folds
          // everything older than an hour, and nothing younger.
          t.monotonic += 2 * HOUR
          t.wall += 2 * HOUR
          const young = seq + 1
          yield* receive(disk, 20)
          yield* rounds(store, 2)
          expect.soft(disk.base.seq, "nothing folded two hours on").toBeGreaterThan(40)
          expect.soft(disk.base.seq).toBeLessThan(young)
        })
      )
    )
    expect(Math.min(...(await pointTimes(dir, seq - 19)))).toBeGreaterThan(W0 + YEAR)

    // After a restart the records from before it have only wall times: judged once, by the
    // wall clock at opening (here right, so behind the stored times: they count as new), then
    // by the monotonic clock, whatever the wall clock does later.
    t.wall = W0 + 3 * HOUR
    t.monotonic = 50 // another process, another origin
    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* open
          const disk = yield* store.disk({ ...hello, watermark: seq })
          const before = disk.base.seq
          t.wall += YEAR
          yield* receive(disk, 20)
          t.monotonic += 30 * 60_000
          yield* rounds(store, 2)
          expect(disk.base.seq, "records from before the restart folded early").toBe(before)
          t.monotonic += HOUR
          yield* receive(disk, 10)
          yield* rounds(store, 2)
          expect(disk.base.seq).toBeGreaterThan(before)
          expect(disk.base.seq).toBeLessThan(seq - 9)
        })
      )
    )
  })
})

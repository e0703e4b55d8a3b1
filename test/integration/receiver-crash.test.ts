/**
 * Crash safety of the log receiver: a client streams writes and resyncs while the
 * receiver (a child process) is killed with SIGKILL at random moments and restarted —
 * during streaming, at random acks, while it starts up, while it rolls segments and folds
 * them into the base. After every restart the welcome's durable seq covers every ack the
 * client saw; at the end the log holds exactly what was sent, byte for byte, and every
 * restored recovery point equals the image computed from the plan.
 *
 * Some cycles also simulate a power loss on top of the kill: the last segment loses a
 * random part of what follows the last acked record, and garbage lands after it (a torn
 * tail), which the restart must cut off.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import * as Restore from "../../src/receiver/Restore.js"
import * as Proc from "../support/receiverProcess.js"

const tempDir = tempDirs("cdp-receiver-crash-")
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const geometry = { blockSize: 4096, blockCount: 256 }
const hello = (watermark: number) => ({ diskId: "vm", ...geometry, watermark })

/** Kills the receiver while it starts up (before or after its ready line). */
const killDuringStartup = async (dir: string, extra: ReadonlyArray<string>, delayMs: number) => {
  const child = spawn(
    process.execPath,
    [...(await Proc.entry()), "receiver", "--dir", dir, "--port", "0", ...extra],
    {
      stdio: "ignore"
    }
  )
  const exited = new Promise((resolve) => child.once("exit", resolve))
  await sleep(delayMs)
  child.kill("SIGKILL")
  await exited
}

/**
 * Power loss on top of the kill: cuts the last segment somewhere after the end of the
 * last acked record and appends garbage (a torn commit).
 */
const tearTail = async (dir: string, lastAck: number, random: () => number) => {
  const { records } = await Proc.readLog(dir, "vm")
  const acked = records.filter((r) => r.seq <= lastAck).at(-1)
  const lastSegment = records.at(-1)?.segment
  if (acked === undefined || lastSegment === undefined) return false
  const diskDir = path.dirname(
    path.join(
      dir,
      fs.readdirSync(dir).find((n) => fs.existsSync(path.join(dir, n, lastSegment)))!,
      lastSegment
    )
  )
  const file = path.join(diskDir, lastSegment)
  const size = fs.statSync(file).size
  const from = acked.segment === lastSegment ? acked.offset + 40 + acked.length : 32
  const cut = from + Math.floor(random() * (size - from + 1))
  fs.truncateSync(file, cut)
  const garbage = Buffer.alloc(Math.floor(random() * 3000))
  for (let i = 0; i < garbage.length; i++) garbage[i] = Math.floor(random() * 256)
  fs.appendFileSync(file, garbage)
  return true
}

interface Campaign {
  readonly dir: string
  readonly plan: ReadonlyArray<Proc.Planned>
  readonly extra: ReadonlyArray<string>
  readonly cycles: number
  /**
   * Kills that must cut a live stream: on a loaded machine a kill by delay can land
   * before the stream starts, so the campaign runs extra cycles (up to 3 × cycles) until
   * it has these, rather than count on timing.
   */
  readonly minMidStream: number
  readonly startupKills: number
  readonly tear: boolean
  readonly seed: number
}

/** Kill/restart cycles while streaming; returns the kill count and the highest ack seen. */
const campaign = async (c: Campaign) => {
  const random = Proc.prng(c.seed)
  let lastAck = 0
  let kills = 0
  let torn = 0
  /** Kills that cut a live stream (the client lost its connection with records unacked). */
  let midStream = 0
  let beforeWelcome = 0
  const logs: Array<string> = []
  for (let cycle = 0; cycle < c.cycles || (midStream < c.minMidStream && cycle < 3 * c.cycles); cycle++) {
    if (
      cycle % Math.max(1, Math.floor(c.cycles / Math.max(1, c.startupKills))) === 1 &&
      kills < c.cycles + c.startupKills
    ) {
      await killDuringStartup(c.dir, c.extra, Math.floor(random() * 250))
      kills++
    }
    const receiver = await Proc.start(c.dir, c.extra)
    // Kill at a random ack (mid-stream) or after a random delay (anywhere: handshake, fsync, roll, fold).
    const byAck = random() < 0.6
    const delay = 5 + Math.floor(random() * 60)
    const remaining = c.plan.length - lastAck
    const target = lastAck + 1 + Math.floor(random() * Math.max(1, Math.min(remaining - 1, 600)))
    let killing: Promise<unknown> | undefined
    const kill = () => {
      killing ??= receiver.kill("SIGKILL")
      return killing
    }
    // Some cycles resend a few records the receiver already holds (duplicates).
    const duplicates = random() < 0.3
    const streaming = Proc.streamPlan({
      host: receiver.host,
      port: receiver.port,
      hello: hello(lastAck),
      plan: c.plan,
      from: (welcome) => (duplicates ? Math.max(1, welcome - 3) : welcome + 1),
      // A bounded window (as a filter's): a kill cuts the stream close to the last ack.
      window: 256,
      progress: (ack) => {
        if (byAck && ack >= target) void kill()
      }
    })
    if (!byAck) void sleep(delay).then(kill)
    const result = await streaming
    await kill()
    kills++
    if (result.outcome === "lost" && result.lastAck < c.plan.length) midStream++
    logs.push(receiver.stderr())
    // Every ack seen before survives the crash: the receiver welcomed us with at least it
    // (unless this kill came before the welcome: then there is nothing to check yet).
    if (result.welcome < 0) beforeWelcome++
    else expect(result.welcome, `cycle ${cycle}: welcome`).toBeGreaterThanOrEqual(lastAck)
    expect(result.gaps, `cycle ${cycle}: gaps`).toEqual([])
    lastAck = Math.max(lastAck, result.lastAck)
    if (c.tear && random() < 0.4 && (await tearTail(c.dir, lastAck, random))) torn++
  }
  const count = (re: RegExp) => logs.reduce((n, log) => n + (log.match(re)?.length ?? 0), 0)
  return {
    kills,
    midStream,
    beforeWelcome,
    lastAck,
    torn,
    recovered: count(/cut off a torn tail/g),
    folds: count(/folded the log into the base image/g),
    leftovers: count(
      /removed a leftover temporary file|removed segments already folded|removed an empty segment/g
    )
  }
}

/** Streams the rest of the plan to a clean finish, then checks the log and restores. */
const finish = async (c: Campaign, lastAck: number, expectFolded: boolean) => {
  const receiver = await Proc.start(c.dir, c.extra)
  try {
    const result = await Proc.streamPlan({
      host: receiver.host,
      port: receiver.port,
      hello: hello(lastAck),
      plan: c.plan
    })
    expect(result.welcome).toBeGreaterThanOrEqual(lastAck)
    expect(result.outcome).toBe("complete")
  } finally {
    await receiver.kill("SIGKILL")
  }
  // The log: from the base on, exactly the plan, byte for byte, with the right recovery points.
  const { baseSeq, records } = await Proc.readLog(c.dir, "vm")
  if (expectFolded) expect(baseSeq).toBeGreaterThan(0)
  const kept = records.filter((r) => r.seq > baseSeq)
  expect(kept.map((r) => r.seq)).toEqual(c.plan.slice(baseSeq).map((p) => p.record.seq))
  for (const r of kept) expect(Proc.compare(r, c.plan[r.seq - 1]!)).toBeUndefined()

  // Restores: the base, the latest, and a spread of points in between, against the plan.
  const [listed] = await Effect.runPromise(Restore.points(c.dir, "vm"))
  const points = listed!.points.map((p) => p.seq)
  expect(points).toEqual([
    baseSeq,
    ...c.plan.filter((p) => p.recoveryPoint && p.record.seq > baseSeq).map((p) => p.record.seq)
  ])
  const random = Proc.prng(c.seed + 1)
  const chosen = new Set([points[0]!, points.at(-1)!])
  while (chosen.size < Math.min(8, points.length)) chosen.add(points[Math.floor(random() * points.length)]!)
  const expected = Proc.imagesAt(c.plan, geometry, [...chosen])
  // Outside the receiver directory: restore refuses to write inside it.
  const outDir = tempDir()
  for (const seq of chosen) {
    const out = path.join(outDir, `restore-${seq}.img`)
    await Effect.runPromise(Restore.restore({ dir: c.dir, diskId: "vm", at: seq, out }))
    expect(fs.readFileSync(out).equals(Buffer.from(expected.get(seq)!)), `restore at ${seq}`).toBe(true)
    fs.rmSync(out)
  }
  // And once through the command line.
  const latest = path.join(outDir, "latest.img")
  const cli = await Proc.run(["restore", "--dir", c.dir, "--at", "latest", "--out", latest])
  expect(cli.code, cli.stderr).toBe(0)
  expect(fs.readFileSync(latest).equals(Buffer.from(expected.get(points.at(-1)!)!))).toBe(true)
}

describe("receiver crash safety (SIGKILL)", () => {
  it("keeps every acked record through kill/restart cycles while streaming writes and resyncs", async () => {
    const dir = tempDir()
    const plan = Proc.makePlan({ seed: 11, records: 8000, ...geometry, maxWrite: 3000, resyncChance: 0.03 })
    const c: Campaign = {
      dir,
      plan,
      extra: [],
      cycles: 12,
      minMidStream: 10,
      startupKills: 2,
      tear: true,
      seed: 101
    }
    const stats = await campaign(c)
    console.log(`crash campaign 1 (${plan.length} records): ${JSON.stringify(stats)}`)
    expect(stats.kills).toBeGreaterThanOrEqual(12)
    expect(stats.midStream).toBeGreaterThanOrEqual(10)
    await finish(c, stats.lastAck, false)
  })

  it("…and while segments roll and retention folds them into the base image", async () => {
    const dir = tempDir()
    const plan = Proc.makePlan({ seed: 12, records: 6000, ...geometry, maxWrite: 2000, resyncChance: 0.03 })
    const extra = ["--segment-bytes", "24KiB", "--retain", "96KiB"]
    const c: Campaign = {
      dir,
      plan,
      extra,
      cycles: 10,
      minMidStream: 8,
      startupKills: 2,
      tear: true,
      seed: 202
    }
    const stats = await campaign(c)
    console.log(`crash campaign 2 (${plan.length} records): ${JSON.stringify(stats)}`)
    expect(stats.kills).toBeGreaterThanOrEqual(10)
    expect(stats.midStream).toBeGreaterThanOrEqual(8)
    expect(stats.folds).toBeGreaterThan(0)
    await finish(c, stats.lastAck, true)
  })
})

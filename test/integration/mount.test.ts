/**
 * Issue 17: `cdp-sync mount` beside a real receiver process and on damaged files. A mount
 * of `latest` while the receiver ingests reads what a restore of the same seq writes; a
 * mount across a retention fold keeps serving its point from the files it holds open (the
 * segments it read unlinked, the base replaced) and a new mount of that point is refused
 * (folded into the base); a read that meets a damaged record fails with EIO, names the
 * file and byte, and the mount goes on. And the command's manners: usage errors exit 2,
 * `--json`, a point that is none refused naming the nearest, SIGTERM exit 0.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Effect, Either, Exit } from "effect"
import { describe, expect, it } from "vitest"
import { NbdCommandFailed } from "../../src/nbd/Nbd.js"
import { BASE_FILE } from "../../src/receiver/internal/chain.js"
import { RECORD_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import * as Mount from "../../src/receiver/Mount.js"
import * as Restore from "../../src/receiver/Restore.js"
import { logged, mountCli, withMount } from "../support/mount.js"
import * as Proc from "../support/receiverProcess.js"
import { diskId, flip, imageAt, locate, writeLog } from "../support/receiverLog.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-mount-")
const geometry = { blockSize: 4096, blockCount: 32 }
const hello = { diskId: "vm", ...geometry, watermark: 0 }
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const restoredAt = async (dir: string, seq: number, out: string): Promise<Buffer> => {
  const file = path.join(out, `restored-${seq}.img`)
  await Effect.runPromise(Restore.restore({ dir, diskId: "vm", at: seq, out: file }))
  return fs.readFileSync(file)
}

describe("mount beside a running receiver (issue 17)", () => {
  it("mounts latest while the receiver ingests: the mount reads what restore writes at that seq", async () => {
    const dir = tempDir()
    const out = tempDir()
    const receiver = await Proc.start(dir, ["--segment-bytes", "32KiB"])
    const plan = Proc.makePlan({ seed: 3, records: 1200, ...geometry, maxWrite: 3000, resyncChance: 0.03 })
    try {
      const first = await Proc.streamPlan({ ...receiver, hello, plan: plan.slice(0, 300) })
      expect(first.outcome).toBe("complete")
      // The rest streams on while the point is mounted and read.
      const rest = Proc.streamPlan({ ...receiver, hello: { ...hello, watermark: 300 }, plan, window: 16 })
      const { seq, read } = await withMount(
        { dir, at: "latest", socketDir: out },
        async (_, mounted, client) => ({
          seq: mounted.point.seq,
          read: await client.readAll()
        })
      )
      expect(seq).toBeGreaterThanOrEqual(300)
      expect(read.equals(Buffer.from(Proc.imagesAt(plan, geometry, [seq]).get(seq)!))).toBe(true)
      expect(read.equals(await restoredAt(dir, seq, out))).toBe(true)
      // The receiver took the rest undisturbed.
      expect(await rest).toMatchObject({ outcome: "complete", lastAck: plan.length })
    } finally {
      await receiver.kill("SIGTERM")
    }
  })

  it("a retention fold under a mounted point: it goes on serving the point; mounting it again is refused", async () => {
    const dir = tempDir()
    const out = tempDir()
    const receiver = await Proc.start(dir, ["--segment-bytes", "16KiB", "--retain", "64KiB"])
    const plan = Proc.makePlan({ seed: 5, records: 700, ...geometry, maxWrite: 2000, resyncChance: 0.06 })
    const diskDir = path.join(dir, "vm")
    try {
      // 40 records: less log than the horizon keeps, nothing folded yet.
      expect((await Proc.streamPlan({ ...receiver, hello, plan: plan.slice(0, 40) })).outcome).toBe(
        "complete"
      )
      const seq = plan.filter((p) => p.recoveryPoint && p.record.seq <= 20).at(-1)!.record.seq
      const expected = Buffer.from(Proc.imagesAt(plan, geometry, [seq]).get(seq)!)
      const restored = await restoredAt(dir, seq, out)
      expect(restored.equals(expected)).toBe(true)
      const [before] = await Effect.runPromise(Restore.points(dir, "vm"))
      expect(before!.baseSeq).toBe(0)
      const baseInode = fs.statSync(path.join(diskDir, BASE_FILE)).ino
      const segmentsRead = fs
        .readdirSync(diskDir)
        .filter((n) => n.endsWith(".seg") && Number.parseInt(n, 10) <= seq)
      expect(segmentsRead.length).toBeGreaterThan(0)

      await withMount({ dir, at: seq, socketDir: out }, async (_, mounted, client) => {
        expect(mounted.point.seq).toBe(seq)
        expect((await client.readAll()).equals(restored)).toBe(true)
        const rest = await Proc.streamPlan({ ...receiver, hello: { ...hello, watermark: 40 }, plan })
        expect(rest.outcome).toBe("complete")
        // Folds trail the stream: wait (bounded) until the base is past the point and the
        // segments the mount read are unlinked.
        for (let waited = 0; waited < 30_000; waited += 100) {
          const [now] = await Effect.runPromise(Restore.points(dir, "vm"))
          if (now!.baseSeq > seq && segmentsRead.every((n) => !fs.existsSync(path.join(diskDir, n)))) break
          await sleep(100)
        }
        const [now] = await Effect.runPromise(Restore.points(dir, "vm"))
        expect(now!.baseSeq).toBeGreaterThan(seq)
        for (const n of segmentsRead) expect(fs.existsSync(path.join(diskDir, n)), n).toBe(false)
        expect(fs.statSync(path.join(diskDir, BASE_FILE)).ino).not.toBe(baseInode)
        // The mount still serves its point, from the files it holds open.
        expect((await client.readAll()).equals(restored)).toBe(true)
      })
      expect(receiver.stderr()).toMatch(/folded the log into the base image/)

      const exit = await Effect.runPromiseExit(Effect.scoped(Mount.open({ dir, diskId: "vm", at: seq })))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      expect(error).toMatchObject({ _tag: "NotARecoveryPoint", seq })
      expect(String((error as Error).message)).toMatch(/folded into the base image/)
    } finally {
      await receiver.kill("SIGTERM")
    }
  })
})

describe("mount on damaged files (issue 17)", () => {
  it("a read that meets a damaged record fails with EIO and names the file and byte; other reads go on", async () => {
    const dir = tempDir()
    const out = tempDir()
    const diskDir = await writeLog(dir)
    // Record 3 (700 bytes at byte 3000 of the disk, in the first sealed segment): one payload byte flipped.
    const record = locate(diskDir, 3)
    flip(record.file, record.offset + RECORD_HEADER_BYTES + 10)
    logged.length = 0
    await withMount({ dir, diskId, at: "latest", socketDir: out }, async (_, __, client) => {
      for (let round = 0; round < 2; round++) {
        const bad = await client.read(2560, 1536)
        expect(Either.isLeft(bad)).toBe(true)
        const error = Either.isLeft(bad) ? bad.left : undefined
        expect(error).toBeInstanceOf(NbdCommandFailed)
        expect((error as NbdCommandFailed).error).toBe(5) // EIO, not wrong bytes
        const good = await client.read(16_384, 8192)
        expect(Buffer.from(Either.getOrThrow(good)).equals(imageAt(24).subarray(16_384, 24_576))).toBe(true)
      }
    })
    const warning = logged.find((l) => l.startsWith("WARN mount: a read of bytes 2560..4095 failed"))
    expect(warning).toBeDefined()
    expect(warning).toContain(`file=${record.file}`)
    expect(warning).toContain(`offset=${record.offset}`)
  })
})

describe("cdp-sync mount, the command (issue 17)", () => {
  it("usage errors exit 2, a point that is none is refused naming the nearest, --json, SIGTERM exits 0", async () => {
    const dir = tempDir()
    await writeLog(dir)
    const socket = path.join(tempDir(), "m.sock")
    const [both, badAt, noAt, none] = await Promise.all([
      Proc.run(["mount", "--dir", dir, "--at", "3", "--listen", "127.0.0.1:0", "--socket", socket]),
      Proc.run(["mount", "--dir", dir, "--at", "yesterday-ish"]),
      Proc.run(["mount", "--dir", dir]),
      Proc.run(["mount", "--dir", dir, "--at", "9", "--socket", socket, "--json"])
    ])
    expect(both.code, both.stderr).toBe(2)
    expect(both.stderr).toMatch(/--listen or --socket, not both/)
    expect(badAt.code, badAt.stderr).toBe(2)
    expect(noAt.code, noAt.stderr).toBe(2)
    expect(none.code, none.stderr).toBe(1)
    expect(JSON.parse(none.stdout)).toMatchObject({
      error: { _tag: "NotARecoveryPoint", message: expect.stringMatching(/8 \(before\).*14 \(after\)/) }
    })
    expect(fs.existsSync(socket)).toBe(false)

    // By time: the newest point at or before a minute from now.
    const soon = new Date(Date.now() + 60_000).toISOString()
    const mount = await mountCli(["--dir", dir, "--at", soon, "--socket", socket, "--json"])
    const ready = JSON.parse(mount.line)
    expect(ready).toMatchObject({ uri: `nbd+unix:///${diskId}?socket=${socket}`, diskId, seq: 24 })
    expect(ready.time).toBeGreaterThan(0)
    expect(await mount.stop()).toEqual({ code: 0, signal: null })
    expect(mount.stderr()).toMatch(/mounted disk vm-damage at seq 24/)
    expect(fs.existsSync(socket)).toBe(false)
  })
})

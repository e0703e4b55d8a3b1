/**
 * Wire fuzzing against the real receiver (a child process, over TCP): the committed corpus
 * (test/fixtures/wire-corpus: valid conversations and mutated ones, with what the service
 * must make of each in expected.json), then conversations from a seeded fast-check 4
 * generator (test/support/wireFuzz.ts), each mutated once (flips, truncation, deletion,
 * garbage, forged header fields and payloads with valid CRCs) and written in random pieces.
 *
 * For every connection: the service logs the verdict the model expects (a typed
 * `WireError` with its reason, a refusal, or a clean end), and nothing else. Throughout,
 * a bystander on another disk is served. After a graceful stop, `points` lists exactly the
 * disks the model knows, and each disk's log holds exactly the records the model accepted,
 * byte for byte: nothing invalid reached it, and no acked record is missing.
 */
import * as fs from "node:fs"
import * as Net from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import * as Wire from "../../src/protocol/Wire.js"
import * as Restore from "../../src/receiver/Restore.js"
import * as Proc from "../support/receiverProcess.js"
import { bytesOf, generated, ServiceModel, type Verdict } from "../support/wireFuzz.js"

const CORPUS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/wire-corpus")
const SEED = Number(process.env.CDP_SYNC_FUZZ_SEED ?? 1313)
const RUNS = Math.round(150 * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1))

const running: Array<Proc.ReceiverProcess> = []
afterEach(async () => {
  for (const r of running.splice(0)) await r.kill()
})
const tempDir = tempDirs("cdp-fuzz-")

const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms))
const until = async (what: string, condition: () => boolean) => {
  for (let i = 0; i < 2000; i++) {
    if (condition()) return
    await sleep(5)
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** The verdict the service logged for the connection from `port` (in `log`, its lines since it began). */
const verdictIn = (log: string, port: number): Verdict | string => {
  const mine = log.split("\n").filter((line) => new RegExp(`peer=127\\.0\\.0\\.1:${port}(\\s|$)`).test(line))
  for (const line of mine) {
    const wire = /connection closed: wire protocol error \(([a-z-]+)\)/.exec(line)
    if (wire !== null) return `wire-error:${wire[1]}`
    const refused = /refused \((bad-geometry|geometry-mismatch|already-connected|log-failed)\)/.exec(line)
    if (refused !== null) return `refused:${refused[1]}`
    const other = /level=(WARN|ERROR) .*message="([^"]*)"/.exec(line)
    if (other !== null && !/watermark is beyond/.test(line)) return `unexpected: ${other[2]}`
    if (/connection lost/.test(line)) return "unexpected: connection lost"
  }
  return "clean"
}

/**
 * Writes `bytes` on a new connection (in pieces at `cuts`), ends its side, and waits until
 * the service logged the connection's end. Returns the verdict and the highest ack received.
 */
const replay = async (
  receiver: Proc.ReceiverProcess,
  bytes: Uint8Array,
  cuts: ReadonlyArray<number> = []
) => {
  const from = receiver.stderr().length
  const socket = await new Promise<Net.Socket>((resolve, reject) => {
    const s = Net.connect({ host: receiver.host, port: receiver.port }, () => resolve(s))
    s.once("error", reject)
  })
  const port = socket.localPort!
  const frames: Array<Wire.Frame> = []
  const decoder = Wire.makeDecoder()
  socket.on("data", (chunk) => decoder.pushInto(chunk, frames))
  socket.on("error", () => {})
  const closed = new Promise<void>((done) => socket.on("close", () => done()))
  const points = [...new Set(cuts.map((c) => c % (bytes.byteLength + 1)))].sort((a, b) => a - b)
  let at = 0
  for (const p of [...points, bytes.byteLength]) {
    if (socket.destroyed) break
    socket.write(bytes.subarray(at, p))
    at = p
    if (p < bytes.byteLength) await sleep(1)
  }
  socket.end()
  await closed
  const ended = new RegExp(`connection ended" peer=127\\.0\\.0\\.1:${port}(\\s|$)`, "m")
  await until(`the end of the connection from port ${port}`, () => ended.test(receiver.stderr().slice(from)))
  let acked = 0
  for (const f of frames) if (f._tag === "Ack") acked = Math.max(acked, f.seq)
  return { verdict: verdictIn(receiver.stderr().slice(from), port), acked }
}

/** A well-behaved filter on its own disk, sending one record after each conversation. */
const bystander = async (receiver: Proc.ReceiverProcess) => {
  const socket = await new Promise<Net.Socket>((resolve, reject) => {
    const s = Net.connect({ host: receiver.host, port: receiver.port }, () => resolve(s))
    s.once("error", reject)
  })
  const frames: Array<Wire.Frame> = []
  const decoder = Wire.makeDecoder()
  socket.on("data", (chunk) => decoder.pushInto(chunk, frames))
  socket.write(
    Wire.encode({ _tag: "Hello", diskId: "bystander", blockSize: 4096, blockCount: 16, watermark: 0 })
  )
  await until("the bystander's welcome", () => frames.length > 0)
  expect(frames[0]).toEqual({ _tag: "Welcome", durableSeq: 0 })
  let seq = 0
  return {
    /** One more record, acked. */
    step: async () => {
      seq++
      socket.write(
        Wire.encode({ _tag: "Write", seq, epoch: 0, offset: seq * 10, data: new Uint8Array(10).fill(seq) })
      )
      await until(`the bystander's ack ${seq}`, () => frames.some((f) => f._tag === "Ack" && f.seq >= seq))
    },
    seqs: () => seq,
    close: () => socket.destroy()
  }
}

/** After a graceful stop: the disks and their logs are exactly the model's. */
const expectLogs = async (dir: string, model: ServiceModel, bystanderSeqs: number) => {
  const listed = await Effect.runPromise(Restore.points(dir))
  const known = new Map([...model.disks].map(([id, disk]) => [id, disk.log.at(-1)?.record.seq ?? 0]))
  known.set("bystander", bystanderSeqs)
  expect(new Map(listed.map((d) => [d.diskId, d.lastSeq]))).toEqual(known)
  for (const [diskId, disk] of model.disks) {
    const { records } = await Proc.readLog(dir, diskId)
    expect(
      records.map((r) => r.seq),
      diskId
    ).toEqual(disk.log.map((p) => p.record.seq))
    disk.log.forEach((planned, i) => {
      expect(Proc.compare(records[i]!, planned), `${diskId} seq ${planned.record.seq}`).toBeUndefined()
    })
  }
}

const start = async () => {
  const dir = tempDir()
  const receiver = await Proc.start(dir)
  running.push(receiver)
  return { dir, receiver }
}

describe("wire fuzzing against the real receiver", () => {
  it("the committed corpus: each conversation ends as expected.json says, the logs hold exactly what it says", async () => {
    const expected = JSON.parse(fs.readFileSync(path.join(CORPUS, "expected.json"), "utf8")) as Record<
      string,
      { verdict: string; disk: string | null; appended: Array<number> }
    >
    const files = fs
      .readdirSync(CORPUS)
      .filter((f) => f.endsWith(".bin"))
      .map((f) => f.slice(0, -4))
      .sort()
    expect(files).toEqual(Object.keys(expected).sort())
    expect(files.length).toBeGreaterThanOrEqual(30)

    const { dir, receiver } = await start()
    const other = await bystander(receiver)
    const model = new ServiceModel()
    for (const name of files) {
      const bytes = new Uint8Array(fs.readFileSync(path.join(CORPUS, `${name}.bin`)))
      // The model agrees with the committed expectation (neither drifted)…
      const outcome = model.converse(bytes)
      expect(
        {
          verdict: outcome.verdict,
          disk: outcome.diskId ?? null,
          appended: outcome.appended.map((p) => p.record.seq)
        },
        name
      ).toEqual(expected[name])
      // …and the service with both.
      const { verdict, acked } = await replay(receiver, bytes)
      expect(verdict, name).toBe(expected[name]!.verdict)
      if (acked > 0) expect(expected[name]!.appended, name).toContain(acked)
      await other.step()
    }
    other.close()
    expect((await receiver.kill("SIGTERM")).code).toBe(0)
    await expectLogs(dir, model, other.seqs())
  })

  it(`seeded fast-check conversations (seed ${SEED}, ${RUNS} runs): the service does what the model says`, async () => {
    const { dir, receiver } = await start()
    const other = await bystander(receiver)
    const model = new ServiceModel()
    const verdicts = new Map<string, number>()
    for (let i = 0; i < RUNS; i++) {
      const [conversation] = fc.sample(generated(`g${i}`), { seed: SEED + i, numRuns: 1 })
      const bytes = bytesOf(conversation!)
      const outcome = model.converse(bytes)
      const { verdict, acked } = await replay(receiver, bytes, conversation!.cuts)
      // A failure names the case, to be added to the corpus (test/fixtures/wire-corpus/generate.ts).
      const hex = Buffer.from(bytes).toString("hex")
      const label = `case ${i} (seed ${SEED + i}): ${hex.length > 400 ? `${hex.slice(0, 400)}…` : hex}`
      expect(verdict, label).toBe(outcome.verdict)
      // Acked means logged: never beyond what the model says this disk holds.
      if (acked > 0 && outcome.diskId !== undefined)
        expect(
          model.disks.get(outcome.diskId)!.log.some((p) => p.record.seq === acked),
          label
        ).toBe(true)
      verdicts.set(outcome.verdict, (verdicts.get(outcome.verdict) ?? 0) + 1)
      await other.step()
    }
    other.close()
    expect((await receiver.kill("SIGTERM")).code).toBe(0)
    await expectLogs(dir, model, other.seqs())
    // The generator reaches clean ends, refusals and a spread of wire errors.
    expect(verdicts.get("clean") ?? 0).toBeGreaterThan(RUNS / 10)
    expect([...verdicts.keys()].filter((v) => v.startsWith("wire-error:")).length).toBeGreaterThanOrEqual(6)
    expect([...verdicts.keys()].some((v) => v.startsWith("refused:"))).toBe(true)
  })
})

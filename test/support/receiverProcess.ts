/**
 * The log receiver as a real child process, for tests and the bench: spawn it on
 * loopback (port 0), wait for its ready line, kill it (SIGKILL at any moment), run the
 * `restore` / `points` commands.
 *
 * The entry is the built CLI, `dist/cli/main.js` (test/support/globalSetup.ts
 * builds dist/ when the sources are newer); `CDP_SYNC_RECEIVER_ENTRY` names another.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Deferred, Effect, Exit, Fiber, Stream } from "effect"
import { expect } from "vitest"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as Wire from "../../src/protocol/Wire.js"
import { listDisks, openChain } from "../../src/receiver/internal/chain.js"
import {
  isRecoveryPoint,
  type RecordHeader,
  SEGMENT_HEADER_BYTES
} from "../../src/receiver/internal/format.js"
import { readRange } from "../../src/receiver/internal/segment.js"
import { prng } from "../../src/conformance/Simulation.js"
import * as Launcher from "../../src/simulator/internal/ReceiverProcess.js"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const built = path.join(root, "dist/cli/main.js")

let entryPromise: Promise<ReadonlyArray<string>> | undefined

/** The node arguments that run the receiver's `main` (bundled on first use). */
export const entry = (): Promise<ReadonlyArray<string>> => {
  entryPromise ??= (async () => {
    const given = process.env.CDP_SYNC_RECEIVER_ENTRY
    if (given !== undefined && given !== "") return [path.resolve(root, given)]
    // The suite's global setup builds dist/ from the sources before any test runs.
    return [built]
  })()
  return entryPromise
}

export type Exited = Launcher.Exited

export interface ReceiverProcess extends Launcher.Launched {
  /** Sends `signal` (default SIGKILL) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<Exited>
}

const collect = (child: ChildProcess) => {
  const out = { stdout: "", stderr: "" }
  child.stdout?.setEncoding("utf8").on("data", (s: string) => {
    out.stdout += s
  })
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    out.stderr += s
  })
  const exited = new Promise<Exited>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  return { out, exited }
}

/**
 * Starts `receiver --dir DIR --port 0 …extra` (the simulator's launcher, keeping all it
 * writes) and resolves once it prints its ready line; rejects (with its stderr) if it
 * exits first or takes longer than `timeoutMs`.
 */
export const start = async (
  dir: string,
  extra: ReadonlyArray<string> = [],
  /** `node`: node's own arguments before the entry (e.g. `--require` a preload). */
  options: { readonly timeoutMs?: number; readonly node?: ReadonlyArray<string> } = {}
): Promise<ReceiverProcess> => {
  const launched = await Effect.runPromise(
    Launcher.launch(
      [...(options.node ?? []), ...(await entry())],
      ["receiver", "--dir", dir, "--port", "0", ...extra],
      {
        timeoutMs: options.timeoutMs ?? 30_000,
        keepOutput: true,
        cwd: root
      }
    )
  )
  const { child, exited } = launched
  return {
    ...launched,
    kill: (signal = "SIGKILL") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    }
  }
}

export interface CliResult extends Exited {
  readonly stdout: string
  readonly stderr: string
}

/** Runs one of the CLI's commands (`restore`, `points`, …) to completion, or SIGKILLs it after `timeoutMs`. */
export const run = async (
  args: ReadonlyArray<string>,
  options: { readonly timeoutMs?: number } = {}
): Promise<CliResult> => {
  const child = spawn(process.execPath, [...(await entry()), ...args], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    ...(options.timeoutMs === undefined ? {} : { timeout: options.timeoutMs, killSignal: "SIGKILL" })
  })
  const { out, exited } = collect(child)
  const e = await exited
  return { ...e, stdout: out.stdout, stderr: out.stderr }
}

// ---------------------------------------------------------------------------------------------
// A workload and its expected images, and a streaming client over `LogReceiver.layerTcp`.

export interface Planned {
  readonly record: Wire.Record
  /** Whether the receiver must mark it a recovery point (an acked write in sync, a resync-end). */
  readonly recoveryPoint: boolean
}

export interface PlanOptions {
  readonly seed: number
  readonly records: number
  readonly blockSize: number
  readonly blockCount: number
  /** Write lengths are drawn from `[1, maxWrite]` (default one block). */
  readonly maxWrite?: number
  /** Chance that a record opens a resync block (markers and whole blocks), default 0.05. */
  readonly resyncChance?: number
}

/** A small deterministic PRNG (mulberry32), the simulated world's. */
export { prng }

const fillRandom = (bytes: Uint8Array, random: () => number): Uint8Array => {
  for (let i = 0; i < bytes.length; i += 4) {
    const n = (random() * 4294967296) >>> 0
    bytes[i] = n
    if (i + 1 < bytes.length) bytes[i + 1] = n >>> 8
    if (i + 2 < bytes.length) bytes[i + 2] = n >>> 16
    if (i + 3 < bytes.length) bytes[i + 3] = n >>> 24
  }
  return bytes
}

/**
 * Records with seqs 1..n (index i holds seq i + 1): writes in sync, and now and then a
 * resync (a resync-begin marker, whole blocks and a few writes, a resync-end).
 */
export const makePlan = (options: PlanOptions): ReadonlyArray<Planned> => {
  const random = prng(options.seed)
  const diskBytes = options.blockSize * options.blockCount
  const maxWrite = Math.min(options.maxWrite ?? options.blockSize, diskBytes)
  const plan: Array<Planned> = []
  let epoch = 0
  let resyncLeft = 0
  while (plan.length < options.records) {
    const seq = plan.length + 1
    const left = options.records - plan.length
    if (resyncLeft === 0 && left >= 3 && random() < (options.resyncChance ?? 0.05)) {
      epoch++
      resyncLeft = 1 + Math.floor(random() * Math.min(8, left - 2))
      plan.push({ record: { _tag: "ResyncBegin", seq, epoch, base: seq - 1 }, recoveryPoint: false })
      continue
    }
    if (resyncLeft > 0) {
      resyncLeft--
      if (resyncLeft === 0) {
        plan.push({ record: { _tag: "ResyncEnd", seq, epoch }, recoveryPoint: true })
        continue
      }
      if (random() < 0.8) {
        const block = Math.floor(random() * options.blockCount)
        const data = fillRandom(new Uint8Array(options.blockSize), random)
        plan.push({ record: { _tag: "Block", seq, epoch, block, data }, recoveryPoint: false })
        continue
      }
    }
    const length = 1 + Math.floor(random() * maxWrite)
    const offset = Math.floor(random() * (diskBytes - length + 1))
    const data = fillRandom(new Uint8Array(length), random)
    plan.push({ record: { _tag: "Write", seq, epoch, offset, data }, recoveryPoint: resyncLeft === 0 })
  }
  return plan
}

const apply = (image: Uint8Array, blockSize: number, record: Wire.Record) => {
  if (record._tag === "Write") image.set(record.data, record.offset)
  else if (record._tag === "Block") image.set(record.data, record.block * blockSize)
}

/** The expected images after each of `seqs` (the plan applied to a zeroed disk). */
export const imagesAt = (
  plan: ReadonlyArray<Planned>,
  geometry: { readonly blockSize: number; readonly blockCount: number },
  seqs: ReadonlyArray<number>
): Map<number, Uint8Array> => {
  const image = new Uint8Array(geometry.blockSize * geometry.blockCount)
  const wanted = [...new Set(seqs)].sort((a, b) => a - b)
  const out = new Map<number, Uint8Array>()
  let applied = 0
  for (const seq of wanted) {
    while (applied < seq) apply(image, geometry.blockSize, plan[applied++]!.record)
    out.set(seq, image.slice())
  }
  return out
}

export interface StreamResult {
  /** The receiver's durable seq in its welcome. */
  readonly welcome: number
  /** How many acks arrived. */
  readonly acks: number
  /** The highest ack received. */
  readonly lastAck: number
  readonly gaps: ReadonlyArray<number>
  /** How the stream ended: every planned record acked, or the connection's loss. */
  readonly outcome: "complete" | "lost" | "refused"
  readonly error?: unknown
}

/**
 * Connects, then sends the plan from `from(welcome)` (default: the record after the
 * welcome's durable seq) to the end and waits until all of it is acked — or until the
 * connection is lost (the receiver was killed). `progress` sees every ack.
 */
export const streamPlan = (options: {
  readonly host: string
  readonly port: number
  readonly hello: LogReceiver.Hello
  readonly plan: ReadonlyArray<Planned>
  readonly from?: (welcome: number) => number
  readonly sendBuffer?: number
  readonly progress?: (ack: number) => void
  /** Also wait for this many acks (e.g. the acks of resent duplicates). */
  readonly minAcks?: number
  /** At most this many records beyond the last ack (default: no limit but the send buffer). */
  readonly window?: number
}): Promise<StreamResult> => {
  let welcome = -1
  let lastAck = 0
  let acks = 0
  const gaps: Array<number> = []
  const program = Effect.scoped(
    Effect.gen(function* () {
      const receiver = yield* LogReceiver.LogReceiver
      const connection = yield* receiver.connect(options.hello)
      welcome = connection.durableSeq
      lastAck = welcome
      const done = yield* Deferred.make<void>()
      const total = options.plan.length
      const finished = () => lastAck >= total && acks >= (options.minAcks ?? 0)
      const waiting: Array<() => void> = []
      const window = options.window ?? Number.POSITIVE_INFINITY
      const consumer = yield* connection.messages.pipe(
        Stream.runForEach((m) =>
          Effect.sync(() => {
            if (m._tag === "Gap") gaps.push(m.expected)
            else if (m._tag === "Ack") {
              acks++
              lastAck = Math.max(lastAck, m.seq)
              options.progress?.(m.seq)
              if (finished()) Deferred.unsafeDone(done, Exit.void)
              for (const wake of waiting.splice(0)) wake()
            }
          })
        ),
        Effect.forkScoped
      )
      for (let seq = (options.from ?? ((w) => w + 1))(welcome); seq <= total; seq++) {
        while (seq - lastAck > window)
          yield* Effect.raceFirst(
            Effect.async<void>((resume) => {
              waiting.push(() => resume(Effect.void))
            }),
            Fiber.join(consumer)
          )
        yield* connection.send(options.plan[seq - 1]!.record)
      }
      // The consumer only ends by failing: the connection is lost.
      if (!finished()) yield* Effect.raceFirst(Deferred.await(done), Fiber.join(consumer))
    })
  ).pipe(
    Effect.provide(
      LogReceiver.layerTcp({ host: options.host, port: options.port, sendBuffer: options.sendBuffer ?? 128 })
    )
  )
  return Effect.runPromise(
    program.pipe(
      Effect.map((): StreamResult => ({ welcome, acks, lastAck, gaps, outcome: "complete" })),
      Effect.catchAll((error) =>
        Effect.succeed<StreamResult>({
          welcome,
          acks,
          lastAck,
          gaps,
          outcome: error._tag === "ReceiverRefused" ? "refused" : "lost",
          error
        })
      )
    )
  )
}

// ---------------------------------------------------------------------------------------------
// Reading a receiver directory back in-process (read-only, like `points` and `restore`).

export interface LoggedRecord extends RecordHeader {
  readonly segment: string
  readonly offset: number
  readonly payload: Buffer
}

/** Every record of a disk's log, in order, checked (CRC and continuity), with its payload. */
export const readLog = async (
  dir: string,
  diskId: string
): Promise<{ readonly baseSeq: number; readonly records: ReadonlyArray<LoggedRecord> }> => {
  const disk = (await listDisks(dir)).find((d) => d.meta.diskId === diskId)
  if (disk === undefined) throw new Error(`no disk ${diskId} in ${dir}`)
  const chain = await openChain(disk.diskDir, disk.meta, "read")
  const records: Array<LoggedRecord> = []
  for (const segment of chain.segments) {
    const file = path.join(disk.diskDir, segment.name)
    const handle = await fs.promises.open(file, "r")
    try {
      await readRange(
        handle,
        file,
        SEGMENT_HEADER_BYTES,
        segment.bytes,
        records.at(-1)?.seq,
        (h, payload, offset) => {
          records.push({ ...h, segment: segment.name, offset, payload: Buffer.from(payload) })
          return false
        }
      )
    } finally {
      await handle.close()
    }
  }
  return { baseSeq: chain.base.seq, records }
}

/** Why a logged record differs from the planned one (`undefined`: byte-identical, same flags). */
export const compare = (logged: LoggedRecord, planned: Planned): string | undefined => {
  const r = planned.record
  const position =
    r._tag === "Write" ? r.offset : r._tag === "Block" ? r.block : r._tag === "ResyncBegin" ? r.base : 0
  const data = r._tag === "Write" || r._tag === "Block" ? r.data : new Uint8Array(0)
  if (logged.seq !== r.seq) return `seq ${logged.seq}, planned ${r.seq}`
  if (logged.kind !== Wire.recordKindCode(r)) return `seq ${r.seq}: kind ${logged.kind}, planned ${r._tag}`
  if (logged.position !== position || logged.epoch !== r.epoch)
    return `seq ${r.seq}: position or epoch differ`
  if (!logged.payload.equals(Buffer.from(data.buffer, data.byteOffset, data.byteLength)))
    return `seq ${r.seq}: payload differs`
  if (isRecoveryPoint(logged) !== planned.recoveryPoint)
    return `seq ${r.seq}: recovery point ${isRecoveryPoint(logged)}, expected ${planned.recoveryPoint}`
  return undefined
}

/** `restore --at latest` of disk `vm` into `dir/name.img`: whether it equals `dir/disk.img`. */
export const restoredEqualsDisk = async (
  dir: string,
  receiverDir: string,
  name = "restored"
): Promise<boolean> => {
  const out = path.join(dir, `${name}.img`)
  const result = await run(["restore", "--dir", receiverDir, "--disk", "vm", "--at", "latest", "--out", out])
  expect(result.code, result.stderr).toBe(0)
  return fs.readFileSync(out).equals(fs.readFileSync(path.join(dir, "disk.img")))
}

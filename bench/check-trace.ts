/**
 * `cdp-sync check-trace` throughput: a trace of a few million events, written by
 * the reference decider fed a seeded workload with faults, checked
 * from a file the way the command does it (stream, decode, legality, fold),
 * against the plainest fast work on the same file: read it and `JSON.parse`
 * each line.
 */
import { closeSync, createReadStream, mkdtempSync, openSync, rmSync, statSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Either } from "effect"
import * as Config from "../dist/domain/Config.js"
import * as Decider from "../dist/domain/Decider.js"
import * as Input from "../dist/domain/Input.js"
import * as Simulation from "../dist/conformance/Simulation.js"
import type * as State from "../dist/domain/State.js"
import * as Trace from "../dist/domain/Trace.js"
import * as CheckTrace from "../dist/conformance/CheckTrace.js"
import { type BenchRow, QUICK, renderTable } from "./table.js"

/** 256 MiB disk of 64 KiB blocks, a drain window of 64, pull-ahead past 128 KiB unacked. */
export const benchConfig = Either.getOrThrow(
  Config.make({
    blockSize: 65536,
    blockCount: 4096,
    window: 64,
    congestionLimit: 128 << 10,
    initial: "full-sync"
  })
)

export interface Generated {
  readonly events: number
  readonly bytes: number
}

/**
 * A seeded stream of inputs for the reference decider: writes in waves of
 * pressure (calm live sync, then bursts past the congestion limit), service
 * rounds (a pump, then a cumulative ack of a random prefix of what was sent),
 * and now and then a fault: a link loss, a gap report, a reconnect that finds the
 * receiver behind (a rollback) or ahead of the watermark.
 */
export function* inputs(
  config: Config.Config,
  seed: number,
  read: () => State.State
): Generator<Input.Input> {
  const random = Simulation.prng(seed)
  const int = (n: number) => Math.floor(random() * n)
  const diskBytes = config.blockSize * config.blockCount
  const period = 400_000
  for (let tick = 0; ; tick++) {
    const state = read()
    if (state.link === "down") {
      const unacked = state.nextSeq - 1 - state.watermark
      // Mostly the receiver holds what was acked (and maybe more); rarely it lost acked data.
      const receiverSeq =
        random() < 0.02 && state.watermark > 0 ? int(state.watermark) : state.watermark + int(unacked + 1)
      yield Input.linkReestablished(receiverSeq)
      continue
    }
    const fault = random()
    if (fault < 0.0005) {
      yield Input.linkFailed(random() < 0.5 ? "connection-lost" : "ack-timeout")
      continue
    }
    if (fault < 0.0007 && state.nextSeq - 1 > state.watermark) {
      yield Input.gapReceived(state.watermark + 1 + int(state.nextSeq - 1 - state.watermark))
      continue
    }
    const pressure = 0.3 + 0.6 * ((Math.sin((2 * Math.PI * tick) / period) + 1) / 2) ** 3
    if (random() < pressure) {
      const length = (1 + int(4)) * (random() < 0.5 ? 4096 : 512)
      const offset = int((diskBytes - length) / 512 + 1) * 512
      yield Input.writeCompleted(offset, length)
      continue
    }
    yield Input.pumpTick(1 + int(config.window))
    const after = read()
    const unacked = after.nextSeq - 1 - after.watermark
    if (after.link === "up" && unacked > 0 && random() < 0.7)
      yield Input.ackReceived(after.watermark + 1 + int(unacked))
  }
}

/**
 * Writes the trace of the reference decider fed by `inputs` to `path`, streaming:
 * each event is encoded and flushed to the file as it is decided, so memory stays
 * flat at any size. Stops after `maxEvents` events or `maxBytes` bytes.
 */
export const generateTrace = (
  path: string,
  limits: { readonly maxEvents?: number; readonly maxBytes?: number },
  seed = 7,
  onProgress?: (generated: Generated) => void
): Generated => {
  const maxEvents = limits.maxEvents ?? Number.POSITIVE_INFINITY
  const maxBytes = limits.maxBytes ?? Number.POSITIVE_INFINITY
  let state = Decider.initialState(benchConfig)
  const fd = openSync(path, "w")
  let events = 0
  let bytes = 0
  let buffer = `${Trace.encodeHeader(benchConfig)}\n`
  let lastReport = 0
  try {
    for (const input of inputs(benchConfig, seed, () => state)) {
      const decided = Decider.decide(state, input)
      if (Either.isLeft(decided))
        throw new Error(`the generator fed a rejected input: ${decided.left.message}`)
      for (const event of decided.right) {
        state = Decider.evolve(state, event)
        buffer += `${Trace.encodeEvent(event)}\n`
        events++
      }
      if (buffer.length >= 1 << 20) {
        bytes += writeSync(fd, buffer)
        buffer = ""
        if (onProgress !== undefined && bytes - lastReport >= 64 << 20) {
          lastReport = bytes
          onProgress({ events, bytes })
        }
      }
      if (events >= maxEvents || bytes + buffer.length >= maxBytes) break
    }
    if (buffer.length > 0) bytes += writeSync(fd, buffer)
  } finally {
    closeSync(fd)
  }
  return { events, bytes }
}

const chunksOf = (path: string): AsyncIterable<string> =>
  createReadStream(path, { encoding: "utf8", highWaterMark: 1 << 20 }) as AsyncIterable<string>

/** The baseline: stream the file, split lines, `JSON.parse` each; the number of objects parsed. */
export const parseEveryLine = async (path: string): Promise<number> => {
  let carry = ""
  let parsed = 0
  let sink = 0
  for await (const chunk of chunksOf(path)) {
    const lines = (carry + chunk).split("\n")
    carry = lines.pop() ?? ""
    for (const line of lines) {
      if (line.length === 0) continue
      const value = JSON.parse(line) as { type?: unknown }
      if (value.type !== undefined) sink++
      parsed++
    }
  }
  if (carry.length > 0) {
    JSON.parse(carry)
    parsed++
  }
  return parsed + sink * 0
}

/** The checker as `cdp-sync check-trace FILE` runs it; throws unless the trace is valid. */
export const checkFile = async (path: string): Promise<CheckTrace.Outcome & { readonly valid: true }> => {
  const outcome = await CheckTrace.checkChunks(chunksOf(path), { quiescent: false })
  if (!outcome.valid) throw new Error(`the generated trace is invalid: ${CheckTrace.render(outcome)}`)
  return outcome
}

/** Best of `rounds` timings, in events per second. */
const rate = async (events: number, rounds: number, work: () => Promise<unknown>): Promise<number> => {
  let best = Number.POSITIVE_INFINITY
  for (let i = 0; i < rounds; i++) {
    const start = performance.now()
    await work()
    best = Math.min(best, performance.now() - start)
  }
  return (events / best) * 1000
}

/** Fewer in the quick pass (`--quick`). */
const EVENTS = QUICK ? 500_000 : 3_000_000

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  const dir = mkdtempSync(join(tmpdir(), "cdp-sync-bench-"))
  const path = join(dir, "trace.jsonl")
  try {
    const generated = generateTrace(path, { maxEvents: EVENTS })
    const mib = statSync(path).size / (1 << 20)
    const checked = await checkFile(path)
    const events = checked.summary.events
    const baseline = await rate(events, 3, () => parseEveryLine(path))
    const value = await rate(events, 3, () => checkFile(path))
    return [
      {
        name: `check-trace, ${(generated.events / 1e6).toFixed(1)} M events (${mib.toFixed(0)} MiB, ${checked.summary.epochs} epochs) from a file`,
        value,
        unit: "events/s",
        baseline,
        baselineName: "read + JSON.parse each line",
        higherIsBetter: true,
        target: { min: 1e6, text: ">= 1 M events/s" }
      }
    ]
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((rows) => console.log(renderTable("check-trace", rows)))
}

/**
 * `npx tsx bench/check-trace-1gb.ts [--gib N] [--keep]`: writes a ~1 GiB trace of
 * the reference decider (streaming to a temp file, never held in memory), checks
 * it the way `cdp-sync check-trace FILE` does, and prints events/s and the peak
 * resident memory, sampled while generating and while checking: memory stays flat
 * however long the trace.
 */
import { createReadStream, mkdtempSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as CheckTrace from "../dist/conformance/CheckTrace.js"
import { mib } from "../dist/internal/units.js"
import { generateTrace } from "./check-trace.js"

const args = process.argv.slice(2)
const gib = Number(args[args.indexOf("--gib") + 1] ?? 1) || 1
const keep = args.includes("--keep")

/** Samples the resident set size every 50 ms (and on demand) and keeps the peak. */
const sampler = () => {
  let peak = process.memoryUsage.rss()
  const sample = () => {
    peak = Math.max(peak, process.memoryUsage.rss())
  }
  const timer = setInterval(sample, 50)
  return {
    sample,
    stop: () => {
      clearInterval(timer)
      sample()
      return peak
    }
  }
}

const dir = mkdtempSync(join(tmpdir(), "cdp-sync-1gb-"))
const path = join(dir, "trace.jsonl")
try {
  console.log(`generating a ${gib} GiB trace in ${path} …`)
  const startRss = process.memoryUsage.rss()
  const genMemory = sampler()
  let t = performance.now()
  // Generation is synchronous: sample on each progress report (every 64 MiB written).
  const generated = generateTrace(path, { maxBytes: gib * 2 ** 30 }, 7, (g) => {
    genMemory.sample()
    const line = `  ${mib(g.bytes)} written, ${(g.events / 1e6).toFixed(1)} M events`
    if (process.stderr.isTTY) process.stderr.write(`\r${line}`)
    else if (g.bytes % (256 << 20) < 64 << 20) process.stderr.write(`${line}\n`)
  })
  const genSeconds = (performance.now() - t) / 1000
  const genPeak = genMemory.stop()
  if (process.stderr.isTTY) process.stderr.write("\n")
  const size = statSync(path).size
  console.log(
    `  ${(generated.events / 1e6).toFixed(2)} M events, ${mib(size)} in ${genSeconds.toFixed(1)} s (${(generated.events / genSeconds / 1e6).toFixed(2)} M events/s), peak RSS ${mib(genPeak)}`
  )

  console.log("checking it (as cdp-sync check-trace FILE) …")
  const checkMemory = sampler()
  const checkStartRss = process.memoryUsage.rss()
  t = performance.now()
  // RSS along the way: one sample per eighth of the file, to show it does not grow with it.
  const along: Array<string> = []
  async function* chunks(): AsyncGenerator<Uint8Array> {
    let read = 0
    let next = size / 8
    for await (const chunk of createReadStream(path, {
      highWaterMark: 1 << 20
    }) as AsyncIterable<Uint8Array>) {
      read += chunk.length
      if (read >= next) {
        next += size / 8
        checkMemory.sample()
        along.push(mib(process.memoryUsage.rss()))
      }
      yield chunk
    }
  }
  const outcome = await CheckTrace.checkChunks(chunks(), { quiescent: false })
  const seconds = (performance.now() - t) / 1000
  const checkPeak = checkMemory.stop()
  console.log(`  ${CheckTrace.render(outcome)}`)
  if (!outcome.valid) process.exitCode = 1
  const events = outcome.summary?.events ?? 0
  console.log(
    [
      "",
      `check-trace over ${mib(size)}: ${events} events in ${seconds.toFixed(1)} s`,
      `  throughput   ${(events / seconds / 1e6).toFixed(2)} M events/s, ${(size / seconds / (1 << 20)).toFixed(0)} MiB/s`,
      `  RSS          ${mib(startRss)} at start, ${mib(checkStartRss)} before checking, peak ${mib(checkPeak)} while checking (peak ${mib(genPeak)} while generating)`,
      `  RSS by 1/8   ${along.join(", ")}`,
      `  trace/RSS    the trace is ${(size / checkPeak).toFixed(1)}x the peak resident memory: it is streamed, never held`
    ].join("\n")
  )
} finally {
  if (keep) console.log(`kept ${path}`)
  else rmSync(dir, { recursive: true, force: true })
}

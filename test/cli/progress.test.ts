/**
 * Progress of long commands (`restore`, `simulate`): a bar with rate and ETA redrawn in
 * place on a terminal, a plain line every few seconds elsewhere, nothing for a short run;
 * with `json` (a command's `--json`), JSON lines at the plain lines' cadence and a final one.
 */
import { describe, expect, it } from "vitest"
import { progress, progressLine } from "../../src/cli/internal/progress.js"

const stream = (isTTY: boolean) => {
  const written: Array<string> = []
  return {
    written,
    stream: { isTTY, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream
  }
}

describe("progress", () => {
  it("a line: the bar, the rate and the time left", () => {
    expect(progressLine("restoring", 25, 100, 5000, (r) => `${r}/s`)).toBe(
      "restoring [########......................]  25% 5/s ETA 00:15"
    )
    expect(progressLine("restoring", 100, 100, 5000)).toMatch(/100% 20\/s ETA 00:00$/)
    expect(progressLine("x", 0, 100, 0)).toMatch(/ETA --:--$/)
  })

  it("off a terminal: a plain line every interval, the last state at the end, nothing for a short run", () => {
    let now = 0
    const out = stream(false)
    const p = progress({ label: "restoring", stream: out.stream, everyMillis: 5000, now: () => now })
    for (now = 0; now <= 12_000; now += 1000) p.update(now, 12_000)
    p.end()
    expect(out.written).toHaveLength(3)
    expect(out.written.every((l) => l.endsWith("\n") && !l.includes("\r") && !l.includes("\u001b"))).toBe(
      true
    )
    expect(out.written.at(-1)).toMatch(/^restoring \[#+\] 100% .* ETA 00:00\n$/)

    const quiet = stream(false)
    const short = progress({ label: "restoring", stream: quiet.stream, everyMillis: 5000, now: () => 10 })
    short.update(1, 1)
    short.end()
    expect(quiet.written).toEqual([])
  })

  it("on a terminal: redrawn in place, ended with a newline", () => {
    let now = 0
    const out = stream(true)
    const p = progress({ label: "restoring", stream: out.stream, now: () => now })
    for (now = 0; now <= 1000; now += 250) p.update(now, 1000)
    p.end()
    expect(out.written.slice(0, -1).every((l) => l.startsWith("\r"))).toBe(true)
    expect(out.written.at(-1)).toBe("\n")
  })

  it("json: a JSON line at the plain cadence, on a terminal too, and a final one even for a short run", () => {
    let now = 0
    const out = stream(true)
    const json = { phase: "writing", unit: "bytes" }
    const p = progress({ label: "restoring", stream: out.stream, everyMillis: 5000, now: () => now, json })
    for (now = 0; now <= 12_000; now += 1000) p.update(now * 10, 120_000)
    p.end()
    p.end()
    expect(out.written.every((l) => l.endsWith("\n") && !l.includes("\r"))).toBe(true)
    const lines = out.written.map((l) => JSON.parse(l).progress)
    expect(lines).toEqual([
      {
        phase: "writing",
        bytes: 50_000,
        total: 120_000,
        bytesPerSecond: 10_000,
        etaSeconds: 7,
        elapsedSeconds: 5,
        final: false
      },
      expect.objectContaining({ bytes: 100_000, etaSeconds: 2, elapsedSeconds: 10, final: false }),
      expect.objectContaining({
        bytes: 120_000,
        total: 120_000,
        etaSeconds: 0,
        elapsedSeconds: 13,
        final: true
      })
    ])

    const quiet = stream(false)
    const short = progress({ label: "x", stream: quiet.stream, now: () => 0, json: { phase: "indexing" } })
    short.update(0, 0)
    short.end()
    expect(quiet.written.map((l) => JSON.parse(l))).toEqual([
      {
        progress: {
          phase: "indexing",
          units: 0,
          total: 0,
          unitsPerSecond: 0,
          etaSeconds: 0,
          elapsedSeconds: 0,
          final: true
        }
      }
    ])
  })
})

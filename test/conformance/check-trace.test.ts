/**
 * `cdp-sync check-trace [FILE|-] [--quiescent] [--json]`: exit 0 and a one-line
 * summary for a valid trace; exit 1 naming the first offending line, the rule and
 * the model state for an invalid or malformed one; exit 2 when the file cannot be
 * read. Every case runs the command line in-process (the same `cli` the binary
 * runs); a representative set also runs the real binary as a child process.
 */
import { Either } from "effect"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Trace from "../../src/domain/Trace.js"
import * as CheckTrace from "../../src/conformance/CheckTrace.js"
import { designExample } from "../support/fixtures.js"
import { cdpSync, cdpSyncInProcess, ensureBuilt, type Run, tempDir } from "./cli.js"

const header = (initial = "in-sync", blockCount = 1024) =>
  `{"type":"header","version":1,"blockSize":65536,"blockCount":${blockCount},"initial":"${initial}"}`

/** The design example's lines, to splice bad events into (line n is `lines[n - 1]`). */
const lines = designExample.split("\n")
const withLine = (at: number, text: string) =>
  [...lines.slice(0, at - 1), text, ...lines.slice(at - 1)].join("\n")
const replaceLine = (at: number, text: string) => lines.map((l, i) => (i === at - 1 ? text : l)).join("\n")

const files = tempDir()
afterAll(() => files.remove())
beforeAll(ensureBuilt, 120_000)

let counter = 0
/**
 * `check-trace` on `trace` written to a file: in-process, or through the binary;
 * or on the binary's standard input with `-`.
 */
const check = (
  trace: string,
  flags: ReadonlyArray<string> = [],
  via: "in-process" | "binary" | "stdin" = "in-process"
): Promise<Run> => {
  if (via === "stdin") return cdpSync(["check-trace", "-", ...flags], trace)
  const args = ["check-trace", files.write(`t${counter++}.jsonl`, trace), ...flags]
  return via === "binary" ? cdpSync(args) : cdpSyncInProcess(args)
}

const json = (run: Run): Record<string, unknown> => JSON.parse(run.stdout) as Record<string, unknown>

async function* once(text: string): AsyncGenerator<string> {
  yield text
}
const inProcess = (trace: string, quiescent = false) => CheckTrace.checkChunks(once(trace), { quiescent })

describe("valid traces", () => {
  it("exit 0 and a one-line summary: events, epochs, mode changes, final mode (the binary)", async () => {
    const [binary, inProcess] = await Promise.all([check(designExample, [], "binary"), check(designExample)])
    expect(binary.code).toBe(0)
    expect(binary.stdout.trimEnd().split("\n")).toEqual([
      "valid: 13 events, 1 epochs, 2 mode changes, final mode sync (link up)"
    ])
    expect(inProcess).toEqual(binary)
  })

  it("--json: { valid: true, summary, lines }", async () => {
    const run = await check(designExample, ["--json"])
    expect(run.code).toBe(0)
    expect(json(run)).toEqual({
      valid: true,
      summary: { events: 13, epochs: 1, modeChanges: 2, finalMode: "sync", finalLink: "up" },
      lines: 14
    })
    expect(json(run)).toEqual(JSON.parse(JSON.stringify(await inProcess(designExample))))
  })

  it("standard input, with - or with no FILE at all; options before or after the -", async () => {
    const [dash, none, dashThenOptions] = await Promise.all([
      check(designExample, [], "stdin"),
      cdpSync(["check-trace"], designExample),
      check(designExample, ["--quiescent", "--json"], "stdin")
    ])
    for (const run of [dash, none]) {
      expect(run.code).toBe(0)
      expect(run.stdout).toMatch(/^valid: 13 events/)
    }
    // A bare "-" used to stop the option parser: "--quiescent" and "--json" were rejected.
    expect(dashThenOptions.code, dashThenOptions.stderr).toBe(1)
    expect(json(dashThenOptions)).toMatchObject({ valid: false, line: 14, rule: "not-quiescent" })
  })

  it("CRLF line ends, blank lines, unknown fields, a byte-order mark, no final newline", async () => {
    const messy = `\uFEFF${lines.map((l, i) => (i === 3 ? l.replace("}", ',"host":"vm-7","ts":1.5}') : l)).join("\r\n\r\n")}`
    const run = await check(messy, ["--json"])
    expect(run.code).toBe(0)
    expect(json(run)).toMatchObject({ valid: true, summary: { events: 13 }, lines: 27 })
  })

  it("a full-sync trace: every block owed until sent and acked", async () => {
    const trace = [
      header("full-sync", 2),
      '{"type":"ResyncBegun","epoch":1,"seq":1}',
      '{"type":"PassStarted","epoch":1,"blocks":2}',
      '{"type":"BlockSent","seq":2,"block":0}',
      '{"type":"BlockSent","seq":3,"block":1}',
      '{"type":"Acked","seq":3}',
      '{"type":"SyncActivated","epoch":1,"seq":4}',
      '{"type":"Acked","seq":4}'
    ].join("\n")
    const run = await check(trace, ["--quiescent"])
    expect(run.code).toBe(0)
    expect(run.stdout).toContain("valid: 7 events, 1 epochs, 1 mode changes, final mode sync")
  })
})

describe("invalid traces: exit 1, the first offending line, the rule, the model state", () => {
  it("a write streamed during a resync (the first of two bad events is named)", async () => {
    const trace = [
      ...lines.slice(0, 6),
      '{"type":"WriteStreamed","seq":2,"offset":0,"length":4096}',
      lines[6],
      '{"type":"Acked","seq":99}',
      ...lines.slice(7)
    ].join("\n")
    const run = await check(trace)
    expect(run.code).toBe(1)
    const out = run.stdout
    expect(out).toContain("invalid: line 7: mode-not-sync: a write was streamed live while in resync mode")
    expect(out).toContain('event: {"type":"WriteStreamed","seq":2,"offset":0,"length":4096}')
    expect(out).toContain("model: mode resync, link down, epoch 1, nextSeq 2, watermark 1, in flight 0")
    expect(out).toContain("obligations left: 2 (blocks 1, 2)")
  })

  it("sync resumed with a block record unacked: --json names the rule, the event and the state (the binary)", async () => {
    const trace = lines.filter((l) => l !== '{"type":"Acked","seq":4}').join("\n")
    const run = await check(trace, ["--json"], "binary")
    expect(run.code).toBe(1)
    const out = json(run)
    expect(out).toMatchObject({
      valid: false,
      line: 12,
      rule: "block-record-unacked",
      event: { type: "SyncActivated", epoch: 1, seq: 5 },
      state: { mode: "resync", blockRecordsUnacked: 2, unackedBlockRecordSeqs: [3, 4], obligations: 0 },
      summary: { events: 10 }
    })
    expect(typeof out.reason).toBe("string")
    expect(out).toEqual(JSON.parse(JSON.stringify(await inProcess(trace))))
    expect(await check(trace, ["--json"])).toEqual(run)
  })

  it("a skipped resync-begin marker, a seq gap, a watermark going back, a missing resync", async () => {
    const cases: ReadonlyArray<readonly [string, number, string]> = [
      [lines.filter((l) => !l.includes("ResyncBegun")).join("\n"), 9, "marker-not-sent"],
      [replaceLine(10, '{"type":"BlockSent","seq":4,"block":1}'), 10, "seq-not-next"],
      [withLine(4, '{"type":"Acked","seq":0}'), 4, "ack-regress"],
      [lines.filter((l) => !l.includes("ResyncActivated")).join("\n"), 5, "owed-resync"],
      [lines.slice(0, 4).join("\n"), 4, "owed-at-end"]
    ]
    const runs = await Promise.all(cases.map(([trace]) => check(trace, ["--json"])))
    runs.forEach((run, i) => {
      const [, line, rule] = cases[i]!
      expect(run.code, run.stdout).toBe(1)
      expect(json(run)).toMatchObject({ valid: false, line, rule })
    })
  })
})

describe("malformed lines: exit 1 with the line and the problem", () => {
  const cases: ReadonlyArray<readonly [string, string, number, string, RegExp]> = [
    ["bad JSON", withLine(3, '{"type":"Acked","seq":1'), 3, "bad-json", /JSON/],
    ["not an object", withLine(3, "[1,2,3]"), 3, "not-an-object", /JSON object/],
    [
      "unknown type",
      withLine(5, '{"type":"Frobnicated","seq":1}'),
      5,
      "unknown-type",
      /unknown event type "Frobnicated"/
    ],
    ["missing type", withLine(5, '{"seq":1}'), 5, "missing-field", /missing field "type"/],
    [
      "missing field",
      replaceLine(10, '{"type":"BlockSent","seq":3}'),
      10,
      "missing-field",
      /missing field "block"/
    ],
    [
      "mistyped field",
      replaceLine(2, '{"type":"WriteStreamed","seq":"1","offset":0,"length":4096}'),
      2,
      "wrong-type",
      /field "seq"/
    ],
    ["negative count", replaceLine(3, '{"type":"Acked","seq":-1}'), 3, "wrong-type", /field "seq"/],
    [
      "unknown resync reason",
      replaceLine(5, '{"type":"ResyncActivated","epoch":1,"reason":"boredom"}'),
      5,
      "wrong-type",
      /field "reason"/
    ],
    ["no header", lines.slice(1).join("\n"), 1, "missing-header", /header/],
    [
      "a bad header",
      `{"type":"header","version":1,"blockSize":1000,"blockCount":4,"initial":"in-sync"}\n`,
      1,
      "bad-header",
      /./
    ],
    ["an empty file", "", 0, "missing-header", /empty/]
  ]
  it("bad JSON through the binary", async () => {
    const run = await check(withLine(3, '{"type":"Acked","seq":1'), ["--json"], "binary")
    expect(run.code).toBe(1)
    expect(json(run)).toMatchObject({
      valid: false,
      line: 3,
      rule: "bad-json",
      event: '{"type":"Acked","seq":1'
    })
  })

  it.each(cases)("%s", async (_name, trace, line, rule, reason) => {
    const [human, machine] = await Promise.all([check(trace), check(trace, ["--json"])])
    expect(human.code).toBe(1)
    expect(human.stdout).toContain(`invalid: line ${line}: ${rule}`)
    expect(machine.code).toBe(1)
    const out = json(machine)
    expect(out).toMatchObject({ valid: false, line, rule })
    expect(out.reason).toMatch(reason)
  })
})

describe("--quiescent", () => {
  it("requires the trace to end in sync, link up, nothing in flight", async () => {
    const settled = `${designExample}\n{"type":"Acked","seq":6}\n`
    const midResync = lines.slice(0, 11).join("\n")
    const [open, quiet, plain, resync] = await Promise.all([
      check(designExample, ["--quiescent", "--json"]),
      check(settled, ["--quiescent"]),
      check(midResync),
      check(midResync, ["--quiescent", "--json"])
    ])
    expect(open.code).toBe(1)
    expect(json(open)).toMatchObject({
      valid: false,
      line: 14,
      rule: "not-quiescent",
      state: { inFlight: 2 }
    })
    expect(quiet.code).toBe(0)
    expect(quiet.stdout).toMatch(/^valid: 14 events/)
    expect(plain.code).toBe(0)
    expect(resync.code).toBe(1)
    expect(json(resync)).toMatchObject({ rule: "not-quiescent", line: 11, state: { mode: "resync" } })
  })
})

describe("unreadable input", () => {
  it("exit 2 and a message on standard error for a missing file (the binary); with --json the error object on stdout instead", async () => {
    const missing = `${files.dir}/no-such-trace.jsonl`
    const [human, machine] = await Promise.all([
      cdpSync(["check-trace", missing]),
      cdpSyncInProcess(["check-trace", missing, "--json"])
    ])
    for (const run of [human, machine]) expect(run.code).toBe(2)
    expect(human.stderr).toContain("cannot read")
    expect(human.stderr).toContain("no-such-trace.jsonl")
    expect(human.stdout).toBe("")
    expect(JSON.parse(machine.stdout)).toMatchObject({
      error: { _tag: "TraceUnreadable", message: expect.stringContaining("no-such-trace.jsonl") }
    })
  })

  it("exit 2 for a directory", async () => {
    const run = await cdpSyncInProcess(["check-trace", files.dir])
    expect(run.code).toBe(2)
  })
})

describe("long lines: refused past --max-line-bytes (default 1 MiB), in bounded memory", () => {
  const encoder = new TextEncoder()
  /** The design example with event line `at` padded (an unknown field) to exactly `length` bytes. */
  const padded = (at: number, length: number) => {
    const line = lines[at - 1]!
    const pad = length - line.length - ',"pad":""'.length
    return replaceLine(at, line.replace(/}$/, `,"pad":"${"x".repeat(pad)}"}`))
  }
  /** Byte offset of line `at`'s start in `text`. */
  const offsetOf = (text: string, at: number) =>
    encoder.encode(
      text
        .split("\n")
        .slice(0, at - 1)
        .join("\n")
    ).length + (at > 1 ? 1 : 0)

  async function* cut(bytes: Uint8Array, sizes: ReadonlyArray<number>): AsyncGenerator<Uint8Array> {
    for (let at = 0, i = 0; at < bytes.length; i++) {
      const n = sizes.length === 0 ? bytes.length : sizes[i % sizes.length]!
      yield bytes.subarray(at, at + n)
      at += n
    }
  }
  /** The text decoder's first error, if any. */
  const viaText = (text: string, sizes: ReadonlyArray<number>, maxLineBytes: number) => {
    const d = new Trace.Decoder({ maxLineBytes })
    const pieces: Array<string> = []
    for (let at = 0, i = 0; at < text.length; i++) {
      const n = sizes.length === 0 ? text.length : sizes[i % sizes.length]!
      pieces.push(text.slice(at, at + n))
      at += n
    }
    for (const r of [...pieces.flatMap((p) => d.push(p)), ...d.end()]) if (Either.isLeft(r)) return r.left
    return undefined
  }

  it("a line of exactly the cap is read, one byte more is line-too-long with its line and byte offset, in any chunking", async () => {
    const cases = fc.record({
      // Above the header's length (about 100 bytes): the padded line is the one at the cap.
      max: fc.integer({ min: 120, max: 400 }),
      at: fc.integer({ min: 2, max: lines.length }),
      over: fc.integer({ min: -2, max: 2 }),
      crlf: fc.boolean(),
      bom: fc.boolean(),
      sizes: fc.array(fc.integer({ min: 1, max: 500 }), { maxLength: 4 })
    })
    await fc.assert(
      fc.asyncProperty(cases, async ({ max, at, over, crlf, bom, sizes }) => {
        const lf = padded(at, max + over)
        const text = crlf ? lf.replaceAll("\n", "\r\n") : lf
        const whole = `${bom ? "\uFEFF" : ""}${text}`
        const outcome = await CheckTrace.checkChunks(cut(encoder.encode(whole), sizes), {
          quiescent: false,
          maxLineBytes: max
        })
        const offset = offsetOf(text, at) + (bom ? 3 : 0)
        const error = viaText(text, sizes, max)
        if (over <= 0) {
          expect(outcome).toMatchObject({ valid: true, lines: 14 })
          expect(error).toBeUndefined()
        } else {
          expect(outcome).toMatchObject({ valid: false, line: at, rule: "line-too-long", offset })
          expect((outcome as { reason: string }).reason).toBe(
            `the line starting at byte ${offset} is longer than ${max} bytes`
          )
          expect(error).toMatchObject({ kind: "line-too-long", line: at, offset: offset - (bom ? 3 : 0) })
        }
      }),
      { numRuns: 300 }
    )
  })

  it("a stream of zeros without a newline (like /dev/zero) stops after the cap, not at the end of memory", async () => {
    let pulled = 0
    async function* zeros(): AsyncGenerator<Uint8Array> {
      // 8 MiB at most, so that a reader without a cap still ends (with the wrong verdict).
      for (; pulled < 128; pulled++) yield new Uint8Array(64 * 1024)
    }
    const outcome = await CheckTrace.checkChunks(zeros(), { quiescent: false })
    expect(outcome).toMatchObject({ valid: false, line: 1, rule: "line-too-long", offset: 0 })
    // The cap (1 MiB) is 16 chunks: the reader stops at the 17th.
    expect(pulled).toBeLessThanOrEqual(17)
  })

  it("a long line after the header: through the binary on standard input, and --max-line-bytes", async () => {
    const long = `${header()}\n{"type":"Acked","seq":1,"pad":"${"y".repeat(2 * 1024 * 1024)}"}\n`
    const [stdin, capped, zeros] = await Promise.all([
      check(long, ["--json"], "stdin"),
      check(padded(3, 200), ["--max-line-bytes", "199"]),
      cdpSync(["check-trace", "-", "--json"], "\0".repeat(4 * 1024 * 1024))
    ])
    expect(stdin.code).toBe(1)
    expect(json(stdin)).toMatchObject({
      valid: false,
      line: 2,
      rule: "line-too-long",
      offset: header().length + 1,
      reason: `the line starting at byte ${header().length + 1} is longer than 1048576 bytes`
    })
    expect(capped.code).toBe(1)
    expect(capped.stdout).toContain(
      `invalid: line 3: line-too-long: the line starting at byte ${offsetOf(lines.join("\n"), 3)} is longer than 199 bytes`
    )
    expect(zeros.code).toBe(1)
    expect(json(zeros)).toMatchObject({ valid: false, line: 1, rule: "line-too-long", offset: 0 })
    // The human report shows the line's control characters escaped, not raw.
    const human = await cdpSyncInProcess([
      "check-trace",
      files.write("zeros.jsonl", "\0\u001b[2J".repeat(400_000))
    ])
    expect(human.stdout).toMatch(/^invalid: line 1: line-too-long: the line starting at byte 0 is longer/)
    expect(human.stdout).toContain("event: \\u0000\\u001b[2J\\u0000")
    // biome-ignore lint/suspicious/noControlCharactersInRegex: none may get through
    expect(human.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/)
  })

  it("--max-line-bytes must be a positive number", async () => {
    const run = await cdpSync([
      "check-trace",
      files.write("ok.jsonl", designExample),
      "--max-line-bytes",
      "0"
    ])
    expect(run.code).not.toBe(0)
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('--max-line-bytes "0": the size must be at least 1 byte')
  })
})

/**
 * The command line's manners (issue 16), on the built CLI as real child processes: results
 * on stdout, diagnostics on stderr; exit 0 success, 1 failure, 2 usage error; every bad
 * value one line naming the option, no stack trace unless `--log-level debug`; `--json`
 * with one shape in success and failure (`{"error": {"_tag", "message"}}`); help without
 * colour in a pipe, naming the program and the defaults; `replicate --quiesce --timeout`.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Proc from "../support/receiverProcess.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-manners-")

// biome-ignore lint/suspicious/noControlCharactersInRegex: looking for escapes is the point
const ANSI = /\u001b\[/
const STACK = /\n\s+at /

/** One usage error: exit 2, nothing on stdout, one line on stderr that names the option. */
const expectUsage = (run: Proc.CliResult, line: string, what: string) => {
  expect(run.code, `${what}\n${run.stderr}`).toBe(2)
  expect(run.stdout, what).toBe("")
  expect(run.stderr.trim().split("\n"), what).toEqual([line])
}

/** `replicate` for a new 1 MiB image in `dir`. */
const replicateArgs = (dir: string, receiver: string) => [
  "replicate",
  "--disk",
  path.join(dir, "d.img"),
  "--disk-size",
  "1MiB",
  "--journal",
  path.join(dir, "journal"),
  "--receiver",
  receiver
]

describe("cdp-sync's manners", () => {
  it("refuses each bad value of the issue's list on one line naming the option, exit 2", async () => {
    const dir = tempDir()
    // Each would reach the replicator or the receiver if the parser let it through: capped.
    const replicate = (...extra: Array<string>) => [...replicateArgs(dir, "127.0.0.1:1"), ...extra]
    const receiver = (...extra: Array<string>) => ["receiver", "--dir", dir, "--port", "0", ...extra]
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
      [
        replicateArgs(dir, "127.0.0.1:99999"),
        '--receiver "127.0.0.1:99999": expected HOST:PORT with a port from 0 to 65535'
      ],
      [["receiver", "--dir", dir, "--port", "-1"], "--port -1: expected an integer from 0 to 65535"],
      [["receiver", "--dir", dir, "--port", "70000"], "--port 70000: expected an integer from 0 to 65535"],
      [replicate("--window", "0"), "--window 0: expected a positive integer"],
      [replicate("--window", "-3"), "--window -3: expected a positive integer"],
      [replicate("--drain-rate", "0"), '--drain-rate "0": the size must be at least 1 byte'],
      [
        replicate("--drain-rate", "banana"),
        '--drain-rate "banana": expected a size such as 4096, 64k, 64MiB, 1G or 500MB'
      ],
      [replicate("--disk-id", ""), '--disk-id "": expected 1 to 1024 characters, not 0'],
      [
        replicate("--disk-id", "v".repeat(2000)),
        `--disk-id "${"v".repeat(40)}…": expected 1 to 1024 characters, not 2000`
      ],
      [
        replicate("--ack-timeout-ms", "-5"),
        '--ack-timeout "-5": expected a duration such as 500ms, 2s, 5m, 12h or 7d'
      ],
      [
        replicate("--ack-timeout", "soon"),
        '--ack-timeout "soon": expected a duration such as 500ms, 2s, 5m, 12h or 7d'
      ],
      [receiver("--max-frame-bytes", "0"), '--max-frame-bytes "0": the size must be at least 1 byte'],
      [receiver("--hello-timeout", "0"), '--hello-timeout "0": the duration must be at least 1ms'],
      [["simulate", "--seconds", "-1"], "--seconds -1: expected an integer of at least 0"],
      [["model", "--steps", "-5"], "--steps -5: expected a positive integer"],
      [
        ["model", "--block-size", "-64KiB"],
        '--block-size "-64KiB": expected a size such as 4096, 64k, 64MiB, 1G or 500MB'
      ],
      [replicate("--timeout", "5s"), "cdp-sync replicate: --timeout bounds --quiesce: give both, or neither"]
    ]
    const runs = await Promise.all(cases.map(([args]) => Proc.run(args, { timeoutMs: 60_000 })))
    for (const [i, run] of runs.entries())
      expectUsage(run, cases[i]![1], cases[i]![0].join(" ").slice(0, 200))
    // Nothing was created: each was refused before it started.
    expect(fs.existsSync(path.join(dir, "d.img"))).toBe(false)
  })

  it("a failure is one line on stderr (exit 1); --log-level after the subcommand adds the cause", async () => {
    const dir = tempDir()
    const [plain, debug, json, usageJson] = await Promise.all([
      Proc.run(["points", "--dir", dir]),
      Proc.run(["points", "--dir", dir, "--log-level", "debug"]),
      Proc.run(["points", "--dir", dir, "--json"]),
      Proc.run(["points", "--json"])
    ])
    expect(plain.code).toBe(1)
    expect(plain.stdout).toBe("")
    expect(plain.stderr).toBe(`cdp-sync points: ${dir} holds no disk\n`)
    expect(debug.code).toBe(1)
    expect(debug.stderr).toMatch(/level=DEBUG .*DiskNotFound/)
    expect(debug.stderr.trim().split("\n").at(-1)).toBe(`cdp-sync points: ${dir} holds no disk`)
    // --json: the failure on stdout in the shape every --json failure has, nothing on stderr.
    expect(json.code).toBe(1)
    expect(json.stderr).toBe("")
    expect(JSON.parse(json.stdout)).toEqual({
      error: { _tag: "DiskNotFound", message: `${dir} holds no disk` }
    })
    // A usage error with --json: exit 2, the message on stderr, the same shape on stdout.
    expect(usageJson.code).toBe(2)
    expect(usageJson.stderr.trim()).toBe("Expected to find option: '--dir'")
    expect(JSON.parse(usageJson.stdout)).toEqual({
      error: { _tag: "MissingValue", message: "Expected to find option: '--dir'" }
    })
  })

  it("check-trace --json on a missing file says so on stdout; model --steps N runs N steps", async () => {
    const missing = path.join(tempDir(), "missing.jsonl")
    const [trace, model] = await Promise.all([
      Proc.run(["check-trace", "--json", missing]),
      Proc.run(["model", "--steps", "3000", "--json"])
    ])
    expect(trace.code).toBe(2)
    expect(trace.stderr).toBe("")
    const error = JSON.parse(trace.stdout).error
    expect(error._tag).toBe("TraceUnreadable")
    expect(error.message).toContain(missing)
    expect(model.code).toBe(0)
    expect(model.stderr).toBe("")
    expect(JSON.parse(model.stdout)).toMatchObject({
      options: { steps: 3000 },
      steps: 3000,
      verdict: "match"
    })
  })

  it("help: no colour in a pipe, the program's name in the usage, the defaults", async () => {
    const runs = await Promise.all(["simulate", "receiver", "replicate"].map((c) => Proc.run([c, "--help"])))
    for (const run of runs) {
      expect(run.code).toBe(0)
      expect(run.stdout).not.toMatch(ANSI)
    }
    expect(runs[0]!.stdout).toContain("$ cdp-sync simulate [--seconds integer]")
    expect(runs[0]!.stdout).toContain("How long the workload runs (default: 20)")
    expect(runs[1]!.stdout).toContain("(default: 10s)")
    expect(runs[2]!.stdout).toContain("(--ack-timeout, --ack-timeout-ms DURATION)")
    expect(runs[2]!.stdout).toContain("(default: 2s)")
  })

  describe("against a receiver", () => {
    let receiver: Proc.ReceiverProcess | undefined
    let receiverDir: string
    beforeAll(async () => {
      receiverDir = tempDir()
      receiver = await Proc.start(receiverDir)
    })
    afterAll(async () => {
      await receiver?.kill()
    })

    it("replicate, points and restore: --json in success and failure, a human summary without it", async () => {
      const dir = tempDir()
      const args = [
        ...replicateArgs(dir, `127.0.0.1:${receiver!.port}`),
        "--disk-id",
        "manners",
        "--quiesce",
        "--timeout",
        "60s"
      ]
      const json = await Proc.run([...args, "--json"], { timeoutMs: 90_000 })
      expect(json.code, json.stderr).toBe(0)
      expect(JSON.parse(json.stdout)).toMatchObject({ mode: "sync", link: "up", quiescent: true })
      const human = await Proc.run(args, { timeoutMs: 90_000 })
      expect(human.code, human.stderr).toBe(0)
      expect(human.stdout).toMatch(
        /^replicated disk "manners" to 127\.0\.0\.1:\d+: mode sync, link up, .*\n$/
      )
      expect(human.stderr).not.toMatch(/WARN|ERROR/)

      const out = path.join(dir, "restored.img")
      const [points, restore] = await Promise.all([
        Proc.run(["points", "--dir", receiverDir, "--disk", "manners", "--json"]),
        Proc.run([
          "restore",
          "--dir",
          receiverDir,
          "--disk",
          "manners",
          "--at",
          "latest",
          "--out",
          out,
          "--json"
        ])
      ])
      expect(points.code, points.stderr).toBe(0)
      expect(JSON.parse(points.stdout).disks[0]).toMatchObject({ diskId: "manners" })
      expect(restore.code, restore.stderr).toBe(0)
      expect(JSON.parse(restore.stdout)).toMatchObject({ diskId: "manners", out, bytes: 2 ** 20 })
      const refused = await Proc.run([
        "restore",
        "--dir",
        receiverDir,
        "--at",
        "999999",
        "--out",
        out,
        "--json"
      ])
      expect(refused.code).toBe(1)
      expect(Object.keys(JSON.parse(refused.stdout).error).sort()).toEqual(["_tag", "message"])
    })
  })

  it("replicate --quiesce against no receiver: warns with the cause, gives up at --timeout (exit 1)", async () => {
    const args = (dir: string) => [...replicateArgs(dir, "127.0.0.1:1"), "--quiesce", "--timeout", "2s"]
    const [plain, json] = await Promise.all([
      Proc.run(args(tempDir()), { timeoutMs: 60_000 }),
      Proc.run([...args(tempDir()), "--json"], { timeoutMs: 60_000 })
    ])
    expect(plain.code).toBe(1)
    expect(plain.stdout).toBe("")
    expect(plain.stderr).toMatch(/WARN .*cannot reach the receiver, retrying with backoff: .*ECONNREFUSED/)
    // Rate-limited: one warning for the same cause, not one per backoff step.
    expect(plain.stderr.match(/WARN/g)).toHaveLength(1)
    expect(plain.stderr).not.toMatch(STACK)
    expect(plain.stderr.trim().split("\n").at(-1)).toBe(
      "cdp-sync replicate: --quiesce: the replica was not whole after 2s (mode resync, link down, 0 dirty blocks, 0 records in flight): is the receiver at 127.0.0.1:1 running?"
    )
    expect(json.code).toBe(1)
    expect(JSON.parse(json.stdout).error).toMatchObject({ _tag: "CommandFailed" })
  })
})

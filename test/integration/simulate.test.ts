/**
 * `cdp-sync simulate --json`: the whole system as a newcomer runs it, read by a program.
 * And its fault injector's receiver kill: a run ending in the middle of it must not leave
 * the receiver dead (issue 13, finding 7).
 */
import { execFile } from "node:child_process"
import { existsSync, writeFileSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { Effect, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import * as ReceiverProcess from "../../src/simulator/internal/ReceiverProcess.js"

const CLI = path.resolve(import.meta.dirname, "../../dist/cli/main.js")
const run = promisify(execFile)

describe("cdp-sync simulate", () => {
  it("--json prints one JSON object with the verdict and the paths to check by hand", async () => {
    const keep = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-simulate-test-"))
    try {
      const { stdout } = await run(
        process.execPath,
        [
          CLI,
          "simulate",
          "--seconds",
          "5",
          "--faults",
          "chaos",
          "--seed",
          "3",
          "--disk-size",
          "32MiB",
          "--json",
          "--keep",
          keep
        ],
        { maxBuffer: 1 << 20 }
      )
      const report = JSON.parse(stdout)
      expect(report).toMatchObject({
        verdict: "match",
        diskImage: path.join(keep, "disk.img"),
        receiverDir: path.join(keep, "receiver")
      })
      expect(report.writes).toBeGreaterThan(0)
      expect(report.bytes).toBeGreaterThan(0)
      expect(report.recoveryPoints).toBeGreaterThan(0)
      expect(typeof report.modeChanges).toBe("object")
      expect(Object.values(report.faults).reduce((a: number, b) => a + (b as number), 0)).toBeGreaterThan(0)
      expect(report.diskSha256).toMatch(/^[0-9a-f]{64}$/)
      expect(report.replicaSha256).toBe(report.diskSha256)
      await fs.access(report.diskImage)
    } finally {
      await fs.rm(keep, { recursive: true, force: true })
    }
  })
})

/**
 * A stand-in for the receiver's CLI: each launch leaves `launch-N` (its pid) in its `--dir`;
 * the first says it listens at once, later ones only once `go` exists there. So a test can
 * hold a restart between the kill and the ready line for as long as it needs.
 */
const FAKE_RECEIVER = `
import * as fs from "node:fs"
import * as path from "node:path"
const dir = process.argv[process.argv.indexOf("--dir") + 1]
const n = fs.readdirSync(dir).filter((f) => f.startsWith("launch-")).length + 1
fs.writeFileSync(path.join(dir, "launch-" + n), String(process.pid))
const ready = () => process.stdout.write("listening 127.0.0.1:40000\\n")
if (n === 1) ready()
else {
  const wait = setInterval(() => {
    if (fs.existsSync(path.join(dir, "go"))) {
      clearInterval(wait)
      ready()
    }
  }, 5)
}
setInterval(() => {}, 1 << 30)
`

describe("the simulator's receiver kill", () => {
  it("an interruption between the kill and the restart waits for the restart", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-receiver-process-"))
    try {
      const entry = path.join(dir, "fake-receiver.mjs")
      await fs.writeFile(entry, FAKE_RECEIVER)
      const after = await Effect.runPromise(
        Effect.scoped(
          Effect.gen(function* () {
            const receiver = yield* ReceiverProcess.make({ dir, entry })
            const first = receiver.pid()
            const restart = yield* Effect.fork(receiver.killAndRestart)
            // The first receiver is gone and the second is starting, not yet listening.
            while (!existsSync(path.join(dir, "launch-2"))) yield* Effect.sleep("5 millis")
            // The run ends now (the simulator interrupts its fault injector)…
            const interrupting = yield* Effect.fork(Fiber.interrupt(restart))
            yield* Effect.sleep("50 millis")
            // …and the new receiver comes up.
            writeFileSync(path.join(dir, "go"), "")
            yield* Fiber.join(interrupting)
            const pid = receiver.pid()
            const alive =
              pid !== undefined && (yield* Effect.try(() => process.kill(pid, 0)).pipe(Effect.either))
            return { first, pid, alive }
          })
        )
      )
      expect(after.pid, "no receiver after the interrupted restart").toBeDefined()
      expect(after.pid).not.toBe(after.first)
      expect(after.alive === false ? "not alive" : after.alive._tag).toBe("Right")
      expect(Number(await fs.readFile(path.join(dir, "launch-2"), "utf8"))).toBe(after.pid)
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})

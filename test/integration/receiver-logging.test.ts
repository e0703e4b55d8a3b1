/**
 * The receiver's log (`cdp-sync receiver`): logfmt on stderr, one line per record, and
 * only that. A disk id is the peer's to choose: one holding a newline used to forge a
 * line in the pretty copy the root CLI's logger printed beside the logfmt one (issue 13,
 * finding 8).
 */
import { spawn } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import * as Proc from "../support/receiverProcess.js"

const CLI = path.resolve(import.meta.dirname, "../../bin/cdp-sync.js")
const tempDir = tempDirs("cdp-receiver-logging-")

/** `cdp-sync receiver --dir DIR --port 0` (the root CLI, as operators run it) until it listens. */
const startRoot = async (dir: string) => {
  const child = spawn(process.execPath, [CLI, "receiver", "--dir", dir, "--port", "0"], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = ""
  let stderr = ""
  child.stderr.setEncoding("utf8").on("data", (s: string) => {
    stderr += s
  })
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      stdout += s
      const m = /^listening \S+:(\d+)$/m.exec(stdout)
      if (m !== null) resolve(Number(m[1]))
    })
    void exited.then(() => reject(new Error(`receiver exited before listening: ${stderr}`)))
  })
  return {
    port,
    stderr: () => stderr,
    stop: async () => {
      child.kill("SIGTERM")
      await exited
    }
  }
}

const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

describe("the receiver's log", () => {
  it("a disk id with newlines and escape sequences stays inside one logfmt line", async () => {
    const dir = tempDir()
    const forged = [
      "vm",
      "[12:00:00.000] ERROR (#1): forged",
      'timestamp=2026-01-01T00:00:00.000Z level=ERROR fiber=#1 message="forged"',
      "\u001b[2J\r\u2028"
    ].join("\n")
    const receiver = await startRoot(dir)
    try {
      const result = await Proc.streamPlan({
        host: "127.0.0.1",
        port: receiver.port,
        hello: { diskId: forged, blockSize: 4096, blockCount: 16, watermark: 0 },
        plan: []
      })
      expect(result.welcome).toBe(0)
    } finally {
      await receiver.stop()
    }
    const lines = receiver.stderr().trimEnd().split("\n")
    // Every line is one logfmt record: no pretty copy, no forged line.
    for (const line of lines) expect(line).toMatch(/^timestamp=\S+ level=[A-Z]+ fiber=#\d+ message="/)
    // The id's records ("created", "connected", "connection ended") each hold it whole,
    // escaped, in their message: every mention is the id followed by what happened.
    const mentions = lines.filter((l) => l.includes("forged"))
    const messages = mentions.map((l) => /message=("(?:[^"\\]|\\.)*")/.exec(l)?.[1])
    expect(messages).toEqual(
      expect.arrayContaining([JSON.stringify(`${forged}: created`), JSON.stringify(`${forged}: connected`)])
    )
    for (const m of messages)
      expect(m).toMatch(new RegExp(`^${literal(JSON.stringify(forged).slice(0, -1))}: [a-z ]+"$`))
    // biome-ignore lint/suspicious/noControlCharactersInRegex: none may reach the log raw
    expect(receiver.stderr()).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/)
    expect(lines.at(-1)).toMatch(/message="receiver stopped"/)
  })
})

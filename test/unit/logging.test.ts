/**
 * The CLI's human-readable log (`cdp-sync replicate`, `simulate`, …): a logged value may
 * come from a peer (a refusal's detail, a disk id), so its control characters are escaped
 * and cannot forge a record's line or drive the terminal (issue 13, finding 8).
 */
import { Effect, Logger } from "effect"
import { afterEach, describe, expect, it, vi } from "vitest"
import * as Logging from "../../src/cli/internal/logging.js"

afterEach(() => {
  vi.restoreAllMocks()
})

const forged = "vm\n[12:00:00.000] ERROR (#1): forged\u001b[2J\r\t\u0085\u2028end"

/** What `logger` writes to standard error for one record carrying `forged`: one entry per line it prints. */
const written = (logger: Logger.Logger<unknown, unknown>): Array<string> => {
  const out: Array<string> = []
  // The pretty logger prints the record's head, then each annotation (indented by console.group).
  vi.spyOn(console, "error").mockImplementation((...args: Array<unknown>) => {
    out.push(args.map(String).join(" "))
  })
  vi.spyOn(console, "group").mockImplementation(() => undefined)
  vi.spyOn(console, "groupEnd").mockImplementation(() => undefined)
  Effect.runSync(
    Effect.logWarning(`${forged}: hello refused`).pipe(
      Effect.annotateLogs({ detail: forged, count: 3 }),
      Effect.provide(Logger.replace(Logger.defaultLogger, logger))
    )
  )
  vi.restoreAllMocks()
  return out
}

/** A line printed for the record that holds a line break: what follows it reads as a line of its own. */
const forgesALine = (lines: ReadonlyArray<string>): string | undefined => {
  for (const line of lines) {
    const parts = line.split(/\r\n|[\n\r\u0085\u2028\u2029]/)
    if (parts.length > 1) return parts[1]
  }
  return undefined
}

describe("the human-readable log", () => {
  it("escapes control characters in the message and string annotations", () => {
    const lines = written(Logging.prettyStderr)
    expect(forgesALine(lines)).toBeUndefined()
    // biome-ignore lint/suspicious/noControlCharactersInRegex: none may reach the log raw
    for (const line of lines) expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/)
    const escaped = "vm\\n[12:00:00.000] ERROR (#1): forged\\u001b[2J\\r\\t\\u0085\\u2028end"
    expect(lines).toHaveLength(3)
    expect(lines[0]).toMatch(/^\[[\d:.]+\] WARN \(#\d+\): /)
    expect(lines[0]).toContain(`${escaped}: hello refused`)
    expect(lines.slice(1).sort()).toEqual(["count: 3", `detail: ${escaped}`])
  })

  it("the check catches the logger the CLI used before (a pretty logger without escaping)", () => {
    expect(forgesALine(written(Logger.prettyLogger({ stderr: true, colors: false })))).toBe(
      "[12:00:00.000] ERROR (#1): forged\u001b[2J"
    )
  })

  it("escapeControls: line ends, tabs and every other control character", () => {
    expect(Logging.escapeControls("a\nb\rc\td\u0000e\u001bf\u007fg\u2029h")).toBe(
      "a\\nb\\rc\\td\\u0000e\\u001bf\\u007fg\\u2029h"
    )
    expect(Logging.escapeControls("plain é 😀")).toBe("plain é 😀")
  })
})

/**
 * The CLI's loggers. Logged values come from peers too (a disk id in a hello, a refusal's
 * detail): a newline or an escape sequence in one must not start a line that reads as
 * another record, nor drive the terminal. So every control character in a message or a
 * string annotation is escaped (`\n`, `\u001b`) before the record is formatted.
 */
import { Effect, FiberRef, HashMap, HashSet, Logger } from "effect"

// biome-ignore lint/suspicious/noControlCharactersInRegex: finding them is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g

const ESCAPES: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" }

/** `text` with its control characters (and line separators) written as escapes. */
export const escapeControls = (text: string): string =>
  text.replace(CONTROL, (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

const escapeValue = (value: unknown): unknown =>
  typeof value === "string" ? escapeControls(value) : Array.isArray(value) ? value.map(escapeValue) : value

/** A logger that sees every message and string annotation with its control characters escaped. */
export const escaping = <Output>(logger: Logger.Logger<unknown, Output>): Logger.Logger<unknown, Output> =>
  Logger.mapInputOptions(logger, (options) => ({
    ...options,
    message: escapeValue(options.message),
    annotations: HashMap.map(options.annotations, escapeValue)
  }))

/** Whether to colour what goes to `stream`: a terminal, and no `NO_COLOR` (https://no-color.org). */
export const colours = (stream: { readonly isTTY?: boolean }): boolean =>
  stream.isTTY === true && (process.env.NO_COLOR ?? "") === ""

// biome-ignore lint/suspicious/noControlCharactersInRegex: finding them is the point
const ANSI = /\u001b\[[0-9;]*[A-Za-z]/g

/** `text` without its ANSI escape sequences (colours, bold). */
export const stripAnsi = (text: string): string => text.replace(ANSI, "")

/** The human-readable log on standard error (`cdp-sync` commands but the receiver's), coloured only on a terminal. */
export const prettyStderr = escaping(Logger.prettyLogger({ stderr: true, colors: colours(process.stderr) }))

/** logfmt on standard error, one line per record (the receiver's log, read by programs): logfmt quotes and escapes values itself. */
export const logfmtStderr = Logger.withConsoleError(Logger.logfmtLogger)

/** Runs `self` with `logger` as its only logger, whatever the runtime installed. */
export const only =
  (logger: Logger.Logger<unknown, unknown>) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.locally(self, FiberRef.currentLoggers, HashSet.make(logger))

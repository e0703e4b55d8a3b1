/**
 * The `cdp-sync` command line around a set of commands: the root command, the argument
 * fixes, the console, how usage errors and failures end, and `mainOf`, what a bundle's
 * `main` runs. Each bundle (`internal/bundles.ts`) holds the commands it serves and no
 * other: a start runs the top-level code of what its bundle holds, nothing more.
 */
// Deep entries: the package root also loads its HTTP client (undici, a quarter of the bundle).
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Command, HelpDoc, ValidationError } from "@effect/cli"
import { Cause, Console, Effect, Logger } from "effect"
import { withIoScheduler } from "../internal/IoScheduler.js"
import * as Logging from "./internal/logging.js"
import * as Outcome from "./internal/outcome.js"

/** A subcommand: any name, options and errors; it may need what Node's context provides. */
// biome-ignore lint/suspicious/noExplicitAny: @effect/cli's own bound for a subcommand
type AnyCommand = Command.Command<any, NodeContext.NodeContext, any, any>
export type Commands = readonly [AnyCommand, ...Array<AnyCommand>]

/** The root command over `subcommands` (the same name, description and version in every bundle). */
export const rootOf = (subcommands: Commands) =>
  Command.make("cdp-sync").pipe(
    Command.withDescription(
      "Continuous data protection for a virtual machine's disk: the reference model and its tools."
    ),
    Command.withSubcommands(subcommands)
  )

/**
 * `check-trace - --json`: @effect/cli stops matching options at a bare "-" (it
 * looks like a flag), so the options after it were rejected; the "-" (standard
 * input) is moved after them.
 */
const stdinLast = (argv: ReadonlyArray<string>): ReadonlyArray<string> => {
  const rest = argv.slice(3)
  if (argv[2] !== "check-trace" || !rest.includes("-") || rest.includes("--")) return argv
  return [...argv.slice(0, 3), ...rest.filter((a) => a !== "-"), "-"]
}

/**
 * Global options (`--log-level`) are accepted before or after the subcommand: @effect/cli
 * takes them only before it, so they are moved there.
 */
export const globalsFirst = (argv: ReadonlyArray<string>): ReadonlyArray<string> => {
  const globals: Array<string> = []
  const rest: Array<string> = []
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]!
    if (a === "--") {
      rest.push(...argv.slice(i))
      break
    }
    if (a.startsWith("--log-level=")) globals.push(a)
    else if (a === "--log-level" && i + 1 < argv.length) globals.push(`--log-level=${argv[++i]}`)
    else rest.push(a)
  }
  return [...argv.slice(0, 2), ...globals, ...rest]
}

/** What @effect/cli prints: no colour unless on a terminal (and no NO_COLOR); usage lines name the program. */
const plainConsole = Effect.map(Effect.console, (console): Console.Console => {
  const fix = (stream: NodeJS.WriteStream) => (value: unknown) => {
    if (typeof value !== "string") return value
    const text = Logging.colours(stream) ? value : Logging.stripAnsi(value)
    return text.includes("USAGE") ? text.replace(/^\$ (?!cdp-sync\b)/gm, "$ cdp-sync ") : text
  }
  return {
    ...console,
    log: (...args) => console.log(...args.map(fix(process.stdout))),
    error: (...args) => console.error(...args.map(fix(process.stderr)))
  }
})

/**
 * The command line over `subcommands`: each command reports its own failures
 * (`internal/outcome.ts`); a usage error (an unknown or missing option, a bad value),
 * printed by @effect/cli on stderr, exits 2 (with `--json` also `{"error": …}` on stdout);
 * anything else left exits 1 on one line.
 */
export const commandLine = (subcommands: Commands) => {
  const run = Command.run(rootOf(subcommands), { name: "cdp-sync", version: "0.1.0" })
  return (argv: ReadonlyArray<string>) => {
    const args = stdinLast(globalsFirst(argv))
    const json = args.includes("--json")
    return Effect.flatMap(plainConsole, (console) =>
      run(args).pipe(
        Effect.catchAllCause((cause) => {
          if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
          const error = Cause.squash(cause)
          if (ValidationError.isValidationError(error)) {
            const doc = (error as { readonly error?: HelpDoc.HelpDoc }).error
            const message = doc === undefined ? error._tag : Logging.stripAnsi(HelpDoc.toAnsiText(doc)).trim()
            return Effect.zipRight(
              json ? Console.log(Outcome.errorJson({ _tag: error._tag, message })) : Effect.void,
              Effect.sync(() => {
                process.exitCode = Outcome.EXIT_USAGE
              })
            )
          }
          return Effect.zipRight(
            Effect.logDebug("cdp-sync failed", cause),
            Outcome.fail(args.slice(2).find((a) => !a.startsWith("-")) ?? "", error, json)
          )
        }),
        Effect.withConsole(console)
      )
    )
  }
}

// Logs go to stderr: stdout is for results (`--json` prints one object there and nothing else).
// Control characters in logged values are escaped: a value cannot forge a line.
const stderrLogger = Logger.replace(Logger.defaultLogger, Logging.prettyStderr)

/**
 * A bundle's `main` over `subcommands`: runs the command `argv` names (`process.argv`: node,
 * the script, then the arguments) until it exits.
 */
export const mainOf = (subcommands: Commands) => {
  const cli = commandLine(subcommands)
  return (argv: ReadonlyArray<string>): void =>
    // Every command is I/O-bound: let socket and file callbacks run between batches of fiber work.
    cli(argv).pipe(
      withIoScheduler,
      Effect.provide(NodeContext.layer),
      Effect.provide(stderrLogger),
      NodeRuntime.runMain({ disableErrorReporting: false, disablePrettyLogger: true })
    )
}

/**
 * The `cdp-sync` command line, run: the commands (`cli.ts`) on Node, logging to stderr.
 * Bundled into `dist/cli/main.cjs` (scripts/bundle-cli.mjs), which `main.ts` loads.
 */
// Deep entries: the package root also loads its HTTP client (undici, a quarter of the bundle).
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Logger } from "effect"
import { cli } from "./cli.js"
import { withIoScheduler } from "../internal/IoScheduler.js"
import { prettyStderr } from "./internal/logging.js"

// Logs go to stderr: stdout is for results (`--json` prints one object there and nothing else).
// Control characters in logged values are escaped: a value cannot forge a line.
const stderrLogger = Logger.replace(Logger.defaultLogger, prettyStderr)

/** Runs the command `argv` names (`process.argv`: node, the script, then the arguments) until it exits. */
export const main = (argv: ReadonlyArray<string>): void =>
  // Every command is I/O-bound: let socket and file callbacks run between batches of fiber work.
  cli(argv).pipe(
    withIoScheduler,
    Effect.provide(NodeContext.layer),
    Effect.provide(stderrLogger),
    NodeRuntime.runMain({ disableErrorReporting: false, disablePrettyLogger: true })
  )

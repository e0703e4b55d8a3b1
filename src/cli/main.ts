/**
 * Entry point of the `cdp-sync` binary.
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

// Every command is I/O-bound: let socket and file callbacks run between batches of fiber work.
cli(process.argv).pipe(
  withIoScheduler,
  Effect.provide(NodeContext.layer),
  Effect.provide(stderrLogger),
  NodeRuntime.runMain({ disableErrorReporting: false, disablePrettyLogger: true })
)

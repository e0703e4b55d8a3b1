/**
 * A runnable entry for the receiver's commands alone (`receiver`, `restore`, `points`, `scrub`),
 * so they can be run and tested without the root CLI:
 * `node dist/programs/receiver/main.js receiver --dir DIR --port 0`.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Command, ValidationError } from "@effect/cli"
import { Effect } from "effect"
import { withIoScheduler } from "../IoScheduler.js"
import { points, receiver, restore, scrub } from "./commands.js"

const root = Command.make("cdp-sync").pipe(
  Command.withDescription("The log receiver of cdp-sync: the service, restore and recovery points."),
  Command.withSubcommands([receiver, restore, points, scrub])
)

Command.run(root, { name: "cdp-sync", version: "0.1.0" })(process.argv).pipe(
  // A usage error is printed by @effect/cli; it exits 2.
  Effect.catchIf(ValidationError.isValidationError, () =>
    Effect.sync(() => {
      process.exitCode = 2
    })
  ),
  withIoScheduler,
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: false })
)

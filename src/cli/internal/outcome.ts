/**
 * How a command ends, the same way for every command: a result on stdout (exit 0); a
 * failure as one line on stderr, `cdp-sync <command>: <message>`, or with `--json` as
 * `{"error": {"_tag", "message"}}` on stdout (exit 1); a usage error exits 2. The whole
 * cause (a stack trace) is logged at debug level only (`--log-level debug`).
 */
import { Cause, Console, Data, Effect } from "effect"
// The error module alone: the replicator's own would bring all of it into every bundle.
import { describeStop, ReplicatorStopped } from "../../replicator/internal/errors.js"

/** A usage error found after parsing (two options that exclude each other, …): exit 2. */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

/** Exit codes: 0 success, 1 failure, 2 usage error. */
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

/** The failure's tag and its message on one line. */
export const describe = (error: unknown): { readonly _tag: string; readonly message: string } => {
  const tag =
    typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string"
      ? error._tag
      : error instanceof Error
        ? error.name
        : "Error"
  const text =
    error instanceof ReplicatorStopped
      ? describeStop(error)
      : typeof error === "object" && error !== null && "message" in error
        ? String(error.message)
        : String(error)
  return { _tag: tag, message: text.replace(/\s*\n\s*/g, " ").trim() }
}

/** `{"error": {"_tag", "message"}}`, the shape every `--json` failure has. */
export const errorJson = (error: unknown): string => JSON.stringify({ error: describe(error) })

/** Prints `error` as `command` failing (stderr, or stdout as JSON) and sets the exit code. */
export const fail = (command: string, error: unknown, json: boolean, code = EXIT_FAILURE) =>
  Effect.zipRight(
    json ? Console.log(errorJson(error)) : Console.error(`cdp-sync ${command}: ${describe(error).message}`),
    Effect.sync(() => {
      process.exitCode = error instanceof UsageError ? EXIT_USAGE : code
    })
  )

/**
 * A command's handler with its failures reported (see above): never fails but when
 * interrupted (SIGINT/SIGTERM end a long command cleanly).
 */
export const reportFailure =
  (command: string, json = false) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A | undefined, never, R> =>
    Effect.catchAllCause(self, (cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.failCause(cause as Cause.Cause<never>)
        : Effect.gen(function* () {
            yield* Effect.logDebug(`${command} failed`, cause)
            yield* fail(command, Cause.squash(cause), json)
            return undefined
          })
    )

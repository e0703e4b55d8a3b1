/**
 * `--metrics HOST:PORT` on the commands that run for a while (`replicate`, `serve`,
 * `receiver`): the process's metrics in the Prometheus text format on
 * `http://HOST:PORT/metrics` (docs/metrics.md).
 *
 * The exporter (src/adapters/Metrics.ts, with OpenTelemetry's SDK) is imported only when
 * `--metrics` is given: a bundle runs a module's top-level code at start unless the module
 * is reached only through `import()`, and OpenTelemetry's is about 25 ms of every start.
 */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import { Console, Effect, Either, Option, type Scope } from "effect"
import type * as Metrics from "../../adapters/Metrics.js"

const exporter = Effect.promise(() => import("../../adapters/Metrics.js"))

export const metricsOption = Options.text("metrics").pipe(
  Options.optional,
  Options.mapEffect((text) =>
    Option.isNone(text)
      ? Effect.succeed(Option.none<Metrics.Address>())
      : Effect.flatMap(exporter, (M) => {
          const parsed = M.parseAddress(text.value)
          return Either.isRight(parsed)
            ? Effect.succeed(Option.some(parsed.right))
            : Effect.fail(ValidationError.invalidValue(HelpDoc.p(`--metrics: ${parsed.left}`)))
        })
  ),
  Options.withDescription(
    "Serve Prometheus metrics on http://HOST:PORT/metrics (port 0 picks a free one; the address is printed on stderr)"
  )
)

/** Serves the metrics until the scope closes, if `--metrics` was given; says where on stderr. */
export const serveMetrics = (address: Option.Option<Metrics.Address>) =>
  Option.isNone(address)
    ? Effect.void
    : Effect.flatMap(exporter, (M) =>
        Effect.flatMap(M.serve(address.value), (endpoint) => Console.error(`metrics ${endpoint.url}`))
      )

/** `self` with the metrics served (if asked) while it runs. */
export const withMetrics =
  (address: Option.Option<Metrics.Address>) =>
  <A, E, R>(
    self: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | Metrics.MetricsError, Exclude<R, Scope.Scope>> =>
    Effect.scoped(Effect.zipRight(serveMetrics(address), self))

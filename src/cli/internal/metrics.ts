/**
 * `--metrics HOST:PORT` on the commands that run for a while (`replicate`, `serve`,
 * `receiver`): the process's metrics in the Prometheus text format on
 * `http://HOST:PORT/metrics` (docs/metrics.md).
 */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import { Console, Effect, Either, Option, type Scope } from "effect"
import * as Metrics from "../../adapters/Metrics.js"

export const metricsOption = Options.text("metrics").pipe(
  Options.optional,
  Options.mapEffect((text) => {
    if (Option.isNone(text)) return Effect.succeed(Option.none<Metrics.Address>())
    const parsed = Metrics.parseAddress(text.value)
    return Either.isRight(parsed)
      ? Effect.succeed(Option.some(parsed.right))
      : Effect.fail(ValidationError.invalidValue(HelpDoc.p(`--metrics: ${parsed.left}`)))
  }),
  Options.withDescription(
    "Serve Prometheus metrics on http://HOST:PORT/metrics (port 0 picks a free one; the address is printed on stderr)"
  )
)

/** Serves the metrics until the scope closes, if `--metrics` was given; says where on stderr. */
export const serveMetrics = (address: Option.Option<Metrics.Address>) =>
  Option.isNone(address)
    ? Effect.void
    : Effect.flatMap(Metrics.serve(address.value), (endpoint) => Console.error(`metrics ${endpoint.url}`))

/** `self` with the metrics served (if asked) while it runs. */
export const withMetrics =
  (address: Option.Option<Metrics.Address>) =>
  <A, E, R>(
    self: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | Metrics.MetricsError, Exclude<R, Scope.Scope>> =>
    Effect.scoped(Effect.zipRight(serveMetrics(address), self))

/**
 * The process's Effect metrics — the replicator's (`Replicator.metrics`), the receiver's
 * (`LogStore.metrics`) and any other — for OpenTelemetry and for Prometheus
 * (docs/metrics.md). Both go through `@effect/opentelemetry`'s metric producer, which
 * reads Effect's metric registry on every collection: `layer` hands it to the
 * OpenTelemetry readers an embedder chooses, `serve` to OpenTelemetry's Prometheus
 * exporter on an HTTP endpoint of its own (`--metrics HOST:PORT`).
 *
 * Effect metrics carry no unit, so the producer would say `1` for all; the unit is
 * taken from the name instead (`_seconds`, `_bytes`, Prometheus' convention).
 */
import * as http from "node:http"
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as Resource from "@effect/opentelemetry/Resource"
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus"
import type { MetricProducer, MetricReader } from "@opentelemetry/sdk-metrics"
import { Data, Effect, Either, Layer, type Scope } from "effect"

/** The unit a metric's name ends in, in UCUM (OpenTelemetry's units): `s`, `By`, or `1`. */
export const unitOf = (name: string): string =>
  /_seconds(_total)?$/.test(name) ? "s" : /_bytes(_total)?$/.test(name) ? "By" : "1"

/** `inner`, with each metric's unit set by `unit` from its name. */
const withUnits = (inner: MetricProducer, unit: (name: string) => string): MetricProducer => ({
  collect: (options) =>
    inner.collect(options).then((result) => ({
      ...result,
      resourceMetrics: {
        ...result.resourceMetrics,
        scopeMetrics: result.resourceMetrics.scopeMetrics.map((scope) => ({
          ...scope,
          metrics: scope.metrics.map((m) => ({
            ...m,
            descriptor: { ...m.descriptor, unit: unit(m.descriptor.name) }
          }))
        }))
      }
    }))
})

/** `@effect/opentelemetry`'s producer over Effect's metrics, with units (`unitOf`). */
export const producer: Effect.Effect<MetricProducer, never, Resource.Resource> = Effect.map(
  OtelMetrics.makeProducer,
  (inner) => withUnits(inner, unitOf)
)

/**
 * Registers Effect's metrics with OpenTelemetry `readers` (a periodic OTLP exporter, a
 * Prometheus exporter, an in-memory reader) for as long as the layer lives; they are
 * shut down with it. Needs a `Resource` (`Resource.layer({ serviceName })`).
 */
export const layer = (readers: () => MetricReader | readonly [MetricReader, ...Array<MetricReader>]) =>
  Layer.scopedDiscard(Effect.flatMap(producer, (p) => OtelMetrics.registerProducer(p, readers)))

export class MetricsError extends Data.TaggedError("MetricsError")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

export interface Address {
  readonly host: string
  readonly port: number
}

/** `HOST:PORT` (`[::1]:PORT` for IPv6; `:PORT` for loopback) → its parts; port 0 picks a free one. */
export const parseAddress = (text: string): Either.Either<Address, string> => {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text)
  const port = m === null ? Number.NaN : Number(m[3])
  if (m === null || port > 65535)
    return Either.left(`expected HOST:PORT (port 0 … 65535), not ${JSON.stringify(text)}`)
  return Either.right({ host: m[1] ?? (m[2] === "" ? "127.0.0.1" : m[2]!), port })
}

export interface Endpoint extends Address {
  /** `http://HOST:PORT/metrics`, with the port bound. */
  readonly url: string
}

/**
 * Serves the Prometheus text format (version 0.0.4) on `http://HOST:PORT/metrics` until
 * the scope closes: OpenTelemetry's Prometheus exporter over `producer`, without the
 * `# UNIT` lines (not part of that format: the unit is in the name), the `target_info`
 * series and the `otel_scope_name` label. Fails if the address cannot be bound.
 */
export const serve = (address: Address): Effect.Effect<Endpoint, MetricsError, Scope.Scope> =>
  Effect.gen(function* () {
    const exporter = new PrometheusExporter({
      preventServerStart: true,
      withoutScopeInfo: true,
      withoutTargetInfo: true
    })
    const inner = yield* OtelMetrics.makeProducer.pipe(
      Effect.provide(Resource.layer({ serviceName: "cdp-sync" }))
    )
    yield* OtelMetrics.registerProducer(
      withUnits(inner, () => ""),
      () => exporter
    )
    const server = http.createServer((request, response) => {
      if (request.method === "GET" && new URL(request.url ?? "/", "http://x").pathname === "/metrics")
        exporter.getMetricsRequestHandler(request, response)
      else {
        response.statusCode = 404
        response.end()
      }
    })
    const bound = yield* Effect.acquireRelease(
      Effect.async<Address, MetricsError>((resume) => {
        const failed = (error: Error) =>
          resume(
            Effect.fail(
              new MetricsError({
                detail: `cannot serve metrics on ${address.host}:${address.port}: ${error.message}`
              })
            )
          )
        server.once("error", failed)
        server.listen({ host: address.host, port: address.port }, () => {
          server.off("error", failed)
          const a = server.address()
          resume(
            Effect.succeed(typeof a === "object" && a !== null ? { host: a.address, port: a.port } : address)
          )
        })
      }),
      () =>
        Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    )
    const host = bound.host.includes(":") ? `[${bound.host}]` : bound.host
    return { ...bound, url: `http://${host}:${bound.port}/metrics` }
  })

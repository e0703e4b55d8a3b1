/**
 * The metrics (issue 16): two replicators in one process keep their own series (a `disk`
 * tag; the `shareMetricSeries` mutant drops it and is caught), the series reach
 * OpenTelemetry through `@effect/opentelemetry` with their types and units (an in-memory
 * reader), and `Metrics.serve` answers in the Prometheus text format with counter,
 * gauge and histogram types.
 */
import { Resource } from "@effect/opentelemetry"
import { DataPointType, type MetricData, MetricReader } from "@opentelemetry/sdk-metrics"
import { Effect, Either, Layer, Logger, LogLevel, Metric } from "effect"
import { describe, expect, it } from "vitest"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as Metrics from "../../src/adapters/Metrics.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"
import * as Config from "../../src/domain/Config.js"
import * as ReplicatorMutants from "../../src/replicator/internal/mutants.js"
import * as Replicator from "../../src/replicator/Replicator.js"

const BS = 4096
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: 64, window: 8, congestionLimit: 1 << 20 })
)

/** A replicator over in-memory parts, with `writes` one-block writes, quiesced. */
const replicate = (diskId: string, writes: number) =>
  Effect.scoped(
    Effect.gen(function* () {
      const replicator = yield* Replicator.Replicator
      for (let i = 0; i < writes; i++) yield* replicator.write(i * BS, new Uint8Array(BS).fill(i + 1))
      yield* replicator.quiesce
    }).pipe(
      Logger.withMinimumLogLevel(LogLevel.Warning),
      Effect.provide(
        Replicator.layer({ diskId, config, switchoverHold: 0 }).pipe(
          Layer.provide(
            Layer.mergeAll(
              VirtualDisk.layerMemory(config),
              EventJournal.layerMemory(),
              LogReceiver.layerMemory()
            )
          )
        )
      )
    )
  )

/** Two disks in one process, concurrently: 3 and 5 writes. */
const twoDisks = (a: string, b: string) =>
  Effect.all([replicate(a, 3), replicate(b, 5)], { concurrency: 2, discard: true })

let unique = 0
const ids = () => {
  unique++
  return [`a-${process.pid}-${unique}`, `b-${process.pid}-${unique}`] as const
}

const written = (disk: string) =>
  Effect.runSync(Metric.value(Metric.tagged(Replicator.metrics.bytesWritten, "disk", disk))).count

/** What the issue asks: each disk's series holds its own figures. */
const ownSeries = (a: string, b: string) => written(a) === 3 * BS && written(b) === 5 * BS

/** An OpenTelemetry reader that collects on demand. */
class InMemoryReader extends MetricReader {
  protected override onShutdown() {
    return Promise.resolve()
  }
  protected override onForceFlush() {
    return Promise.resolve()
  }
}

describe("the replicator's metrics", () => {
  it("keep a series per disk when two replicators share a process", async () => {
    const [a, b] = ids()
    await Effect.runPromise(twoDisks(a, b))
    expect(written(a)).toBe(3 * BS)
    expect(written(b)).toBe(5 * BS)
    expect(ownSeries(a, b)).toBe(true)
    const sent = (disk: string) =>
      Effect.runSync(Metric.value(Metric.tagged(Replicator.metrics.bytesSent, "disk", disk))).count
    expect(sent(a)).toBeGreaterThanOrEqual(3 * BS)
    expect(sent(b)).toBeGreaterThanOrEqual(5 * BS)
  })

  it("MUTANT: series shared by every disk (no disk tag) are caught", async () => {
    const [a, b] = ids()
    await Effect.runPromise(
      twoDisks(a, b).pipe(Effect.provide(ReplicatorMutants.layer({ shareMetricSeries: true })))
    )
    expect(ownSeries(a, b)).toBe(false)
  })

  it("reach OpenTelemetry through @effect/opentelemetry: counters as monotonic sums, histograms in seconds, units from the names", async () => {
    const [a, b] = ids()
    await Effect.runPromise(twoDisks(a, b))
    const reader = new InMemoryReader()
    const collected = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          yield* Layer.build(Metrics.layer(() => reader))
          return yield* Effect.promise(() => reader.collect())
        })
      ).pipe(Effect.provide(Resource.layer({ serviceName: "metrics-test" })))
    )
    const all = collected.resourceMetrics.scopeMetrics.flatMap((s) => s.metrics)
    const named = (name: string): MetricData => {
      const m = all.find((x) => x.descriptor.name === name)
      if (m === undefined) throw new Error(`no ${name} among ${all.map((x) => x.descriptor.name).join(", ")}`)
      return m
    }
    const bytes = named("cdp_sync_guest_written_bytes_total")
    expect(bytes.dataPointType).toBe(DataPointType.SUM)
    expect(bytes.dataPointType === DataPointType.SUM && bytes.isMonotonic).toBe(true)
    expect(bytes.descriptor.unit).toBe("By")
    const byDisk = new Map(bytes.dataPoints.map((p) => [p.attributes.disk, p.value]))
    expect(byDisk.get(a)).toBe(3 * BS)
    expect(byDisk.get(b)).toBe(5 * BS)

    const commit = named("cdp_sync_journal_commit_seconds")
    expect(commit.dataPointType).toBe(DataPointType.HISTOGRAM)
    expect(commit.descriptor.unit).toBe("s")
    const point = commit.dataPoints.find((p) => p.attributes.disk === a)
    expect(point).toBeDefined()
    const histogram = point!.value as { buckets: { boundaries: Array<number> }; count: number; sum: number }
    expect(histogram.count).toBeGreaterThan(0)
    // Seconds: the largest bound is one second (in milliseconds it was 1000).
    expect(Math.max(...histogram.buckets.boundaries)).toBe(1)

    const dirty = named("cdp_sync_dirty_blocks")
    expect(dirty.dataPointType).toBe(DataPointType.GAUGE)
    expect(dirty.descriptor.unit).toBe("1")
    expect(dirty.dataPoints.find((p) => p.attributes.disk === b)?.value).toBe(0)
  })
})

describe("Metrics.serve", () => {
  it("answers GET /metrics in the Prometheus text format, with the types and the disk label", async () => {
    const [a, b] = ids()
    await Effect.runPromise(twoDisks(a, b))
    const { text, other, url } = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const endpoint = yield* Metrics.serve({ host: "127.0.0.1", port: 0 })
          const get = (u: string) => Effect.promise(() => fetch(u))
          const response = yield* get(endpoint.url)
          expect(response.headers.get("content-type")).toMatch(/^text\/plain/)
          const text = yield* Effect.promise(() => response.text())
          const other = (yield* get(endpoint.url.replace(/\/metrics$/, "/other"))).status
          return { text, other, url: endpoint.url }
        })
      )
    )
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
    expect(other).toBe(404)
    expect(text).toContain("# TYPE cdp_sync_guest_written_bytes_total counter")
    expect(text).toContain("# TYPE cdp_sync_sent_bytes_total counter")
    expect(text).toContain("# TYPE cdp_sync_drain_blocks_sent_total counter")
    expect(text).toContain("# TYPE cdp_sync_journal_commit_seconds histogram")
    expect(text).toContain("# TYPE cdp_sync_dirty_blocks gauge")
    expect(text).toContain(`cdp_sync_guest_written_bytes_total{disk="${a}"} ${3 * BS}`)
    expect(text).toContain(`cdp_sync_guest_written_bytes_total{disk="${b}"} ${5 * BS}`)
    expect(text).toMatch(
      new RegExp(`cdp_sync_journal_commit_seconds_bucket\\{disk="${a}",le="\\+Inf"\\} \\d+`)
    )
    // The text format 0.0.4: no OpenMetrics `# UNIT` lines, no scope label, no target_info.
    expect(text).not.toContain("# UNIT")
    expect(text).not.toContain("otel_scope")
    expect(text).not.toContain("target_info")
    // Closed with its scope.
    await expect(fetch(url)).rejects.toThrow()
  })

  it("fails with a typed error on an address it cannot bind, and parses HOST:PORT", async () => {
    const taken = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const first = yield* Metrics.serve({ host: "127.0.0.1", port: 0 })
          return yield* Effect.flip(Metrics.serve({ host: "127.0.0.1", port: first.port }))
        })
      )
    )
    expect(taken._tag).toBe("MetricsError")
    expect(taken.message).toMatch(/cannot serve metrics on 127\.0\.0\.1:\d+: .*EADDRINUSE/)
    expect(Metrics.parseAddress("0.0.0.0:9464")).toEqual(Either.right({ host: "0.0.0.0", port: 9464 }))
    expect(Metrics.parseAddress("[::1]:0")).toEqual(Either.right({ host: "::1", port: 0 }))
    expect(Metrics.parseAddress(":9464")).toEqual(Either.right({ host: "127.0.0.1", port: 9464 }))
    for (const bad of ["9464", "host:", "host:65536", "host:-1", "host:12a", ""])
      expect(Either.isLeft(Metrics.parseAddress(bad)), bad).toBe(true)
  })
})

/**
 * The log receiver's metrics, per disk (`disk` tag): what it made durable and how long
 * its group commits take. Names follow Prometheus conventions (`_total` counters,
 * `_seconds`, `_bytes`); counters are incremental (monotonic sums once exported).
 */
import { Metric, MetricBoundaries } from "effect"

export const metrics = {
  records: Metric.counter("cdp_sync_receiver_records_total", {
    description: "records made durable (fsynced) in the log",
    incremental: true
  }),
  bytes: Metric.counter("cdp_sync_receiver_logged_bytes_total", {
    description: "bytes made durable in the log (record headers included)",
    incremental: true
  }),
  durableSeq: Metric.gauge("cdp_sync_receiver_durable_seq", {
    description: "the highest seq made durable (what the filter was last acked)"
  }),
  /** Acks wait for the commit: its latency is the filter's ack latency, less the network. */
  commit: Metric.histogram(
    "cdp_sync_receiver_commit_seconds",
    MetricBoundaries.fromIterable([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]),
    "one group commit of a disk's log (write and fdatasync)"
  )
}

export type Metrics = typeof metrics

/** The metrics of one disk: each tagged `disk=<diskId>`. */
export const forDisk = (diskId: string): Metrics => ({
  records: Metric.tagged(metrics.records, "disk", diskId),
  bytes: Metric.tagged(metrics.bytes, "disk", diskId),
  durableSeq: Metric.tagged(metrics.durableSeq, "disk", diskId),
  commit: Metric.tagged(metrics.commit, "disk", diskId)
})

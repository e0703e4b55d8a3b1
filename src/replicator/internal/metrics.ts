/**
 * The replicator's metrics (re-exported by Replicator.ts as `metrics`), updated by its
 * stages through `forDisk`: every series carries a `disk` tag, so the replicators of two
 * disks in one process keep series of their own. Names follow Prometheus conventions
 * (`_total` counters, `_seconds` and `_bytes` units); counters are incremental, so they
 * export as monotonic sums (Prometheus counters), not gauges.
 */
import { Duration, Metric, MetricBoundaries } from "effect"

/** Seconds, from 0.5 ms to 1 s: a journal or activity-log commit is one fsync. */
const commitSeconds = MetricBoundaries.fromIterable([
  0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1
])

export const metrics = {
  mode: Metric.gauge("cdp_sync_mode", { description: "0 sync, 1 resync" }),
  epoch: Metric.gauge("cdp_sync_epoch", { description: "resync activations" }),
  dirtyBlocks: Metric.gauge("cdp_sync_dirty_blocks", { description: "blocks owed to the receiver" }),
  dirtyBytes: Metric.gauge("cdp_sync_dirty_bytes", {
    description: "bytes owed to the receiver (dirty blocks times the block size)"
  }),
  drainSent: Metric.counter("cdp_sync_drain_blocks_sent_total", {
    description: "block records sent by resync drains",
    incremental: true
  }),
  blocksCompared: Metric.counter("cdp_sync_checksum_compared_blocks_total", {
    description: "owed blocks compared with the receiver's checksum instead of sent (checksum-based resync)",
    incremental: true
  }),
  blocksMatched: Metric.counter("cdp_sync_checksum_matched_blocks_total", {
    description: "compared blocks the receiver already held: proven without sending them",
    incremental: true
  }),
  checksumSent: Metric.counter("cdp_sync_checksum_sent_blocks_total", {
    description: "compared blocks sent because they differed (or the receiver could not check its copy)",
    incremental: true
  }),
  lagRecords: Metric.gauge("cdp_sync_lag_records", { description: "records sent and not yet acked" }),
  lagSeconds: Metric.gauge("cdp_sync_lag_seconds", { description: "age of the oldest unacked record" }),
  bytesWritten: Metric.counter("cdp_sync_guest_written_bytes_total", {
    description: "bytes the guest wrote to the disk",
    incremental: true
  }),
  bytesSent: Metric.counter("cdp_sync_sent_bytes_total", {
    description: "record payload bytes sent to the receiver (resends included)",
    incremental: true
  }),
  activeExtents: Metric.gauge("cdp_sync_active_extents", {
    description: "extents the activity log holds: what an unclean start would resync"
  }),
  /** A guest write to an extent not in the activity log waits for one such commit. */
  activityCommit: Metric.histogram(
    "cdp_sync_activity_commit_seconds",
    commitSeconds,
    "one transaction of the activity log (write and fdatasync)"
  ),
  /** Live records wait for their events' commit before they are sent: its latency is theirs. */
  journalCommit: Metric.histogram(
    "cdp_sync_journal_commit_seconds",
    commitSeconds,
    "one group commit of the filter's journal (append and fsync)"
  )
}

export type Metrics = typeof metrics

/** The metrics of one disk: each tagged `disk=<diskId>`. */
export const forDisk = (diskId: string): Metrics => {
  const tagged = {} as Record<keyof Metrics, unknown>
  for (const [name, metric] of Object.entries(metrics))
    tagged[name as keyof Metrics] = Metric.tagged(
      metric as Metric.Metric<unknown, unknown, unknown>,
      "disk",
      diskId
    )
  return tagged as Metrics
}

/** Records how long `self` took, in seconds, in `histogram`. */
export const timed = (histogram: Metrics["journalCommit"]) =>
  Metric.trackDurationWith(histogram, Duration.toSeconds)

/** The replicator's metrics (re-exported by Replicator.ts as `metrics`), updated by its stages. */
import { Metric } from "effect"

export const metrics = {
  mode: Metric.gauge("cdp_sync_mode", { description: "0 sync, 1 resync" }),
  epoch: Metric.gauge("cdp_sync_epoch", { description: "resync activations" }),
  dirtyBlocks: Metric.gauge("cdp_sync_dirty_blocks", { description: "blocks owed to the receiver" }),
  drainSent: Metric.counter("cdp_sync_drain_blocks_sent", { description: "block records sent" }),
  lagRecords: Metric.gauge("cdp_sync_lag_records", { description: "records not yet acked" }),
  lagSeconds: Metric.gauge("cdp_sync_lag_seconds", { description: "age of the oldest unacked record" }),
  bytesWritten: Metric.counter("cdp_sync_guest_bytes", { description: "guest bytes written" }),
  bytesSent: Metric.counter("cdp_sync_bytes_sent", { description: "record payload bytes sent" }),
  activeExtents: Metric.gauge("cdp_sync_active_extents", {
    description: "extents the activity log holds: what an unclean start would resync"
  }),
  /** A guest write to an extent not in the activity log waits for one such commit. */
  activityCommit: Metric.timerWithBoundaries(
    "cdp_sync_activity_commit",
    [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    "one transaction of the activity log (write and fdatasync), in milliseconds"
  ),
  /** Live records wait for their events' commit before they are sent: its latency is theirs. */
  journalCommit: Metric.timerWithBoundaries(
    "cdp_sync_journal_commit",
    [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    "one group commit of the filter's journal (append and fsync), in milliseconds"
  )
}

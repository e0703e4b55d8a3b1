/**
 * The control endpoint of the commands that run the filter (`replicate`, `serve`) and
 * its option: the replicator's `Status` as the status command reads it.
 */
import * as path from "node:path"
import { Options } from "@effect/cli"
import { Clock, Effect, Option } from "effect"
import { blockRuns } from "../../internal/blockRuns.js"
import * as Control from "../../internal/control.js"
import {
  ageSeconds,
  type BlockRange,
  type FilterDisk,
  iso,
  MAX_VERIFY_RANGES,
  type VerifyReport
} from "../../internal/controlProtocol.js"
import type * as Replicator from "../../replicator/Replicator.js"

export const CONTROL_FILE = "control.sock"

/** `--control PATH`: where the command answers `cdp-sync status`. */
export const controlOption = {
  control: Options.text("control").pipe(
    Options.optional,
    Options.withDescription(
      `The unix socket on which it answers \`cdp-sync status\` (default: ${CONTROL_FILE} in the journal or receiver directory)`
    )
  )
}

/** The control socket: `--control`, or `control.sock` in `dir`. */
export const controlPath = (control: Option.Option<string>, dir: string): string =>
  Option.getOrElse(control, () => path.join(dir, CONTROL_FILE))

/** The filter's status as the control endpoint reports it, at `now` (ms since the epoch). */
export const filterDisk = (
  s: Replicator.Status,
  where: { readonly diskId: string; readonly receiver: string },
  now: number
): FilterDisk => ({
  role: "filter",
  disk: where.diskId,
  receiver: where.receiver,
  mode: s.mode,
  link: s.link,
  epoch: s.epoch,
  nextSeq: s.nextSeq,
  watermark: s.watermark,
  blockSize: s.blockSize,
  dirtyBlocks: s.dirtyBlocks,
  dirtyBytes: s.dirtyBytes,
  inFlight: s.inFlight,
  lagRecords: s.lagRecords,
  lagSeconds: s.lagMillis / 1000,
  drain: s.drain === undefined ? null : { ...s.drain, progress: Math.min(1, Math.max(0, s.drain.progress)) },
  lastRecoveryPoint:
    s.lastRecoveryPoint === undefined
      ? null
      : {
          seq: s.lastRecoveryPoint.seq,
          at: iso(s.lastRecoveryPoint.at),
          ageSeconds: ageSeconds(s.lastRecoveryPoint.at, now)
        },
  lastError: s.lastError === undefined ? null : { message: s.lastError.message, at: iso(s.lastError.at) },
  stopped:
    s.stopped === undefined
      ? null
      : { reason: s.stopped.reason, detail: s.stopped.detail, at: iso(s.stopped.at) },
  checksums: s.checksums
})

/** A verify's result as the control endpoint reports it: the differing blocks as ranges. */
export const verifyReport = (
  r: Replicator.VerifyResult,
  where: { readonly diskId: string; readonly blockSize: number }
): VerifyReport => {
  const runs = blockRuns(r.differing, Number.POSITIVE_INFINITY)
  const ranges: Array<BlockRange> = runs
    .slice(0, MAX_VERIFY_RANGES)
    .map(([first, count]) => ({ first, count }))
  return {
    disk: where.diskId,
    blockSize: where.blockSize,
    blocks: r.blocks,
    verified: r.verified,
    differing: r.differing.length,
    ranges,
    rangesOmitted: runs.length - ranges.length,
    rechecked: r.rechecked,
    unverified: r.unverified,
    resync: r.resync,
    seconds: r.seconds,
    bytesPerSecond: r.bytesPerSecond,
    algorithm: r.algorithm
  }
}

/** Answers `cdp-sync status` and `cdp-sync verify` for `replicator` on `socket` until the scope closes. */
export const serveFilterControl = (
  socket: string,
  where: { readonly diskId: string; readonly receiver: string },
  replicator: Replicator.Replicator.Service
) =>
  Control.serve({
    path: socket,
    status: Effect.gen(function* () {
      const s = yield* replicator.status
      const now = yield* Clock.currentTimeMillis
      return { role: "filter" as const, pid: process.pid, at: iso(now), disks: [filterDisk(s, where, now)] }
    }),
    verify: (request, progress) =>
      Effect.gen(function* () {
        const { blockSize } = yield* replicator.status
        const result = yield* replicator.verify({
          bytesPerSecond: request.bytesPerSecond,
          resync: request.resync,
          onProgress: progress
        })
        return verifyReport(result, { diskId: where.diskId, blockSize })
      }).pipe(Effect.mapError((e) => new Control.VerifyFailed({ detail: e.message })))
  })

/** `serveFilterControl` for a command's options: `--control`, or `control.sock` in the journal. */
export const filterControl = (
  o: {
    readonly control: Option.Option<string>
    readonly journal: string
    readonly diskId: string
    readonly receiver: { readonly host: string; readonly port: number }
  },
  replicator: Replicator.Replicator.Service
) =>
  serveFilterControl(
    controlPath(o.control, o.journal),
    { diskId: o.diskId, receiver: `${o.receiver.host}:${o.receiver.port}` },
    replicator
  )

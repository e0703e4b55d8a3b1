/**
 * The write path, run on the caller's fiber: a guest write is checked, copied, admitted
 * (room among the writes not yet journaled, no overlap with a write in progress, its extents in the
 * activity log, no switchover hold), written to the disk, and queued for the loop as a
 * completed write. It returns once the disk has it, and never waits for the network.
 */
import { Deferred, Effect } from "effect"
import { makeSlabPool, type Lease } from "../../internal/slab.js"
import { type DiskError, SECTOR_SIZE, type VirtualDisk } from "../../adapters/VirtualDisk.js"
import type { Config } from "../../domain/Config.js"
import * as Geometry from "../../domain/Geometry.js"
import * as Input from "../../domain/Input.js"
import { type ReplicatorError, ReplicatorStopped, WriteRejected } from "./errors.js"
import type { GuestWrite } from "./status.js"
import type * as Activity from "./activity.js"
import { askFor, nextCommit } from "./activityStage.js"
import type { Mutants } from "./mutants.js"
import { type GateEntry, makeOverlapGate } from "./overlapGate.js"
import type { Shared } from "./shared.js"
import { waitWhileHeld } from "./switchover.js"

/** A checked guest write with its own copy of the data, the blocks and the extents it spans. */
interface Admissible {
  readonly offset: number
  readonly data: Lease
  readonly first: number
  readonly last: number
  readonly firstExtent: number
  readonly lastExtent: number
}

/** A waiting write's reservation in the activity log, kept across its retries. */
interface Hold {
  reservation: Activity.Reservation | undefined
}

export interface WritePath {
  readonly write: (offset: number, bytes: Uint8Array) => Effect.Effect<void, ReplicatorError>
  readonly writeAll: (writes: ReadonlyArray<GuestWrite>) => Effect.Effect<void, ReplicatorError>
}

export const makeWritePath = (
  shared: Shared,
  disk: VirtualDisk.Service,
  config: Config,
  mutants: Pick<Mutants, "skipOverlapGate" | "releaseCopiesEarly" | "skipActivityWait">
): WritePath => {
  const { pendingWrites, activity } = shared
  const extentBytes = activity?.extentBytes ?? 0
  // Writes in progress, by block: an overlapping write waits, so the disk and the loop see one order.
  const gate = makeOverlapGate()
  // Copies of guest data: recycled once the connection has written them, so large
  // writes stop turning over fresh memory (at 64 KiB the copies and the collections
  // they set off were a fifth of the filter's CPU).
  const copies = makeSlabPool({ slabBytes: 1 << 20, largest: 1 << 17, keep: 32 })
  const closed = new ReplicatorStopped({ reason: "the replicator is closing", cause: undefined })

  /** Why the guest's write is refused, if it is. */
  const rejection = (offset: number, length: number): WriteRejected | undefined => {
    const invalid = Geometry.validateRange(config, offset, length)
    if (invalid !== undefined) return new WriteRejected({ offset, length, reason: invalid.reason })
    if (offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0)
      return new WriteRejected({ offset, length, reason: `not aligned to ${SECTOR_SIZE}-byte sectors` })
    return undefined
  }

  const check = (offset: number, bytes: Uint8Array): Admissible | WriteRejected => {
    const length = bytes.length
    const rejected = rejection(offset, length)
    if (rejected !== undefined) return rejected
    return {
      offset,
      // The data streamed live must be what was written, even if the caller reuses its buffer.
      data: copies.copy(bytes),
      first: Geometry.firstBlock(config, offset),
      last: Geometry.lastBlock(config, offset, length),
      firstExtent: extentBytes === 0 ? 0 : Math.floor(offset / extentBytes),
      lastExtent: extentBytes === 0 ? 0 : Math.floor((offset + length - 1) / extentBytes)
    }
  }

  /**
   * Runs uninterruptibly, waits excepted: once a disk write starts it must be folded,
   * and an interruption in between would leave data on the disk that no event accounts
   * for. Admits the longest run from `from` that fits the pending bound and overlaps no write
   * in progress (its own included), writes it, and goes on with the rest. Checks are
   * synchronous: the filter's own cost per guest write must stay small beside a 4 KiB
   * disk write.
   */
  const admitFrom = (
    writes: ReadonlyArray<Admissible>,
    from: number,
    hold: Hold | undefined
  ): Effect.Effect<void, ReplicatorError> =>
    Effect.suspend(() => {
      // A stopped replicator folds nothing: refuse before the disk is touched.
      if (shared.hasStopped) return Deferred.await(shared.stopped)
      if (shared.held)
        return Effect.zipRight(Effect.interruptible(waitWhileHeld(shared)), admitFrom(writes, from, hold))
      if (pendingWrites.isClosing()) return Effect.fail(closed)
      const entries: Array<GateEntry> = []
      let to = from
      let bytes = 0
      for (; to < writes.length; to++) {
        const w = writes[to]!
        const length = w.data.bytes.length
        if (!pendingWrites.fits(to - from + 1, bytes + length)) {
          if (to > from) break
          return Effect.zipRight(pendingWrites.waitForChange(), admitFrom(writes, from, hold))
        }
        const blocker = mutants.skipOverlapGate ? undefined : gate.blockerOf(w.first, w.last)
        if (blocker !== undefined) {
          if (to > from) break
          return Effect.zipRight(Effect.interruptible(gate.waitFor(blocker)), admitFrom(writes, from, hold))
        }
        if (activity !== undefined) {
          const tracker = activity.tracker
          if (!tracker.tryEnter(w.firstExtent, w.lastExtent)) {
            if (mutants.skipActivityWait) askFor(activity, w.firstExtent, w.lastExtent)
            else {
              if (to > from) break
              // The write that waits reserves its extents, so no commit retires one it
              // needs while bringing in another; the rest of the batch only asks (one
              // commit for a guest queue).
              hold!.reservation ??= tracker.reserve(w.firstExtent, w.lastExtent)
              for (let k = from + 1; k < writes.length; k++)
                tracker.request(writes[k]!.firstExtent, writes[k]!.lastExtent)
              activity.signal.offer(undefined)
              return Effect.zipRight(nextCommit(shared, activity), admitFrom(writes, from, hold))
            }
          } else if (to === from && hold!.reservation !== undefined) {
            // Entered: its pending count keeps the extents in the log from now on.
            hold!.reservation.release()
            hold!.reservation = undefined
          }
        }
        entries.push(gate.enter(w.first, w.last))
        bytes += length
      }
      pendingWrites.take(to - from, bytes)
      const written = writeRun(writes, entries, from, from, to)
      return to === writes.length ? written : Effect.zipRight(written, admitFrom(writes, to, hold))
    })

  /** Runs a batch from its start; with an activity log, whatever ends it releases the reservation of a write still waiting. */
  const admit = (writes: ReadonlyArray<Admissible>): Effect.Effect<void, ReplicatorError> => {
    if (activity === undefined) return Effect.uninterruptible(admitFrom(writes, 0, undefined))
    const hold: Hold = { reservation: undefined }
    return Effect.ensuring(
      Effect.uninterruptible(admitFrom(writes, 0, hold)),
      Effect.sync(() => hold.reservation?.release())
    )
  }

  /** Queues a written guest write for the loop, then opens its gate entry. */
  const written = (w: Admissible, entry: GateEntry): void => {
    if (mutants.releaseCopiesEarly) w.data.release()
    const input = Input.writeCompleted(w.offset, w.data.bytes.length)
    shared.inbox.offer({ _tag: "Input", input, data: w.data })
    // Queued before the gate opens, so an overlapping write completes after it.
    gate.leave(entry)
  }

  /** A disk write of `writes[i]` failed: undoes the admission of `writes[i, to)`. */
  const failed = (
    writes: ReadonlyArray<Admissible>,
    entries: ReadonlyArray<GateEntry>,
    from: number,
    i: number,
    to: number
  ): void => {
    for (let k = i - from; k < entries.length; k++) {
      gate.leave(entries[k]!)
      writes[from + k]!.data.release()
      // The failed write keeps its extents in the activity log: what reached the disk is unknown.
      const w = writes[from + k]!
      if (activity !== undefined && k > i - from) activity.tracker.leave(w.firstExtent, w.lastExtent)
    }
    let unwritten = 0
    for (let k = i; k < to; k++) unwritten += writes[k]!.data.bytes.length
    pendingWrites.release(to - i, unwritten)
  }

  const writeSync = disk.writeSync
  /**
   * Writes `writes[start, to)` (of a run admitted from `from`) in order on this thread
   * (the disk's `writeSync`), each queued for the loop once the disk has it: no step of
   * the runtime between the admission and the inbox. The error of the first that
   * failed, if one did.
   */
  const writeRunSync = (
    write: (offset: number, bytes: Uint8Array) => DiskError | undefined,
    writes: ReadonlyArray<Admissible>,
    entries: ReadonlyArray<GateEntry>,
    from: number,
    start: number,
    to: number
  ): DiskError | undefined => {
    for (let i = start; i < to; i++) {
      const w = writes[i]!
      const error = write(w.offset, w.data.bytes)
      if (error !== undefined) {
        failed(writes, entries, from, i, to)
        return error
      }
      written(w, entries[i - from]!)
    }
    return undefined
  }

  /** Writes `writes[i, to)` in order, each queued for the loop once the disk has it. */
  const writeRun = (
    writes: ReadonlyArray<Admissible>,
    entries: ReadonlyArray<GateEntry>,
    from: number,
    i: number,
    to: number
  ): Effect.Effect<void, DiskError> => {
    if (writeSync !== undefined)
      return Effect.suspend(() => {
        const error = writeRunSync(writeSync, writes, entries, from, i, to)
        return error === undefined ? Effect.void : Effect.fail(error)
      })
    const w = writes[i]!
    return Effect.matchCauseEffect(disk.write(w.offset, w.data.bytes), {
      onFailure: (cause) => {
        failed(writes, entries, from, i, to)
        return Effect.failCause(cause)
      },
      onSuccess: () => {
        written(w, entries[i - from]!)
        return i + 1 === to ? Effect.void : writeRun(writes, entries, from, i + 1, to)
      }
    })
  }

  return {
    // Uninterruptible from the check on: the fast path admits synchronously, and an
    // interruption between its admission and the disk write would leak the admission.
    // The waits of the slow path (admitFrom) are interruptible, as before.
    write: (offset, bytes) =>
      Effect.uninterruptible(
        Effect.suspend(() => {
          const length = bytes.length
          const rejected = rejection(offset, length)
          if (rejected !== undefined) return Effect.fail(rejected)
          // The common case in one step, without the admission loop: nothing to wait for.
          const free =
            activity === undefined &&
            !shared.hasStopped &&
            !shared.held &&
            !pendingWrites.isClosing() &&
            pendingWrites.fits(1, length)
          const first = Geometry.firstBlock(config, offset)
          const last = Geometry.lastBlock(config, offset, length)
          if (free && (mutants.skipOverlapGate || gate.blockerOf(first, last) === undefined)) {
            // The data streamed live must be what was written, even if the caller reuses its buffer.
            const data = copies.copy(bytes)
            pendingWrites.take(1, length)
            if (writeSync !== undefined) {
              // Written and queued before this returns: no other fiber runs in between, so
              // the write needs no gate entry (none can see it) and no step of the runtime.
              const error = writeSync(offset, data.bytes)
              if (error !== undefined) {
                data.release()
                pendingWrites.release(1, length)
                return Effect.fail(error)
              }
              if (mutants.releaseCopiesEarly) data.release()
              shared.inbox.offer({ _tag: "Input", input: Input.writeCompleted(offset, length), data })
              return Effect.void
            }
            const w: Admissible = { offset, data, first, last, firstExtent: 0, lastExtent: 0 }
            return writeRun([w], [gate.enter(first, last)], 0, 0, 1)
          }
          const checked = check(offset, bytes)
          return checked instanceof WriteRejected ? Effect.fail(checked) : admit([checked])
        })
      ),
    writeAll: (writes) =>
      Effect.suspend(() => {
        const checked: Array<Admissible> = []
        for (const w of writes) {
          const c = check(w.offset, w.bytes)
          if (c instanceof WriteRejected) {
            for (const earlier of checked) earlier.data.release()
            return Effect.fail(c)
          }
          checked.push(c)
        }
        return checked.length === 0 ? Effect.void : admit(checked)
      })
  }
}

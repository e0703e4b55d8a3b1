/**
 * The WRITEs a connection had already received when its reader would have waited, as one
 * `Device.writeAll` — for the protected disk one trip through the filter
 * (`Replicator.writeAll`): a guest's queue costs one admission, one fiber and one run
 * through the write path instead of one each (issue 15's profile: per-request fibers and
 * replies were most of the server's own CPU at 4 KiB).
 *
 * Each request was checked on its own before it joined (`check`: a refused one is
 * answered and never joins), so a batch holds only writes the device accepts and
 * one bad request cannot fail its neighbours. Writes land in request order (overlapping
 * ones too: `writeAll` applies them in array order). Should the device still refuse
 * the batch whole (`Device.refusedWhole`: the replicator's `WriteRejected`), each write
 * goes again on its own and gets its own answer. If the disk fails one, `writeAll` leaves
 * the earlier ones written and the later ones untouched without saying which: every write
 * of the batch is answered with the error (NBD lets a failed write leave its range either
 * way). FUA writes are answered after one shared durability point once the batch is written.
 */
import { Cause, Effect } from "effect"
import type { Request } from "./codec.js"
import type { Device, DeviceWrite } from "./device.js"
import type { Durability } from "./durability.js"
import type { Mutants } from "./mutants.js"
import * as P from "./protocol.js"

/** A checked WRITE with its payload; `answered` when a mutant already replied to it. */
export interface QueuedWrite {
  readonly request: Request
  readonly payload: Uint8Array
  readonly answered: boolean
}

/**
 * A connection's bounds: requests in progress and payload bytes held. Taken by the
 * reading fiber (synchronously when there is room, so it can tell when it must hand its
 * batch over first), given back by the request fibers and the socket's write callbacks.
 */
export class Bounds {
  private wake: (() => void) | undefined = undefined

  constructor(
    private slots: number,
    private bytes: number
  ) {}

  tryTake(bytes: number): boolean {
    if (this.slots < 1 || this.bytes < bytes) return false
    this.slots -= 1
    this.bytes -= bytes
    return true
  }

  /** Waits until a slot and `bytes` are free, and takes them. */
  take(bytes: number): Effect.Effect<void> {
    return Effect.suspend(() =>
      this.tryTake(bytes)
        ? Effect.void
        : Effect.zipRight(
            Effect.async<void>((resume) => {
              this.wake = () => resume(Effect.void)
              return Effect.sync(() => {
                this.wake = undefined
              })
            }),
            this.take(bytes)
          )
    )
  }

  release(slots: number, bytes: number): void {
    this.slots += slots
    this.bytes += bytes
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }
}

export interface BatchTarget {
  readonly device: Device
  readonly durability: Durability
  readonly reply: (cookie: bigint, error: number) => void
  readonly bounds: Bounds
  readonly mutants: Pick<Mutants, "batchUnchecked" | "batchReversed">
}

const fua = (w: QueuedWrite) => (w.request.flags & P.CMD_FLAG_FUA) !== 0

const describe = (writes: ReadonlyArray<QueuedWrite>) => {
  const first = writes[0]!.request
  return writes.length === 1
    ? `nbd: WRITE at ${first.offset} (${first.length} bytes) failed`
    : `nbd: a batch of ${writes.length} WRITEs from ${first.offset} failed`
}

/**
 * Writes the batch and answers each request once (slots and budget go back as each is
 * answered: the device has written the data by then).
 */
export const writeBatch = (writes: ReadonlyArray<QueuedWrite>, target: BatchTarget): Effect.Effect<void> => {
  const { device, durability, reply, bounds, mutants } = target
  const answer = (w: QueuedWrite, error: number) => {
    if (!w.answered) reply(w.request.cookie, error)
    bounds.release(1, w.request.length)
  }
  const failAll = (group: ReadonlyArray<QueuedWrite>, error: unknown) =>
    Effect.logWarning(describe(group), error).pipe(
      Effect.zipRight(
        Effect.sync(() => {
          const errno = device.errnoOf(error)
          for (const w of group) answer(w, errno)
        })
      )
    )
  /** Answers the non-FUA writes now and the FUA ones after one durability point. */
  const written = (group: ReadonlyArray<QueuedWrite>): Effect.Effect<void> => {
    const durable: Array<QueuedWrite> = []
    for (const w of group) {
      if (fua(w)) durable.push(w)
      else answer(w, 0)
    }
    if (durable.length === 0) return Effect.void
    return durability.sync.pipe(
      Effect.matchCauseEffect({
        onSuccess: () =>
          Effect.sync(() => {
            for (const w of durable) answer(w, 0)
          }),
        onFailure: (cause) => failAll(durable, Cause.squash(cause))
      })
    )
  }
  const run = (group: ReadonlyArray<QueuedWrite>, alone: boolean): Effect.Effect<void> => {
    const work = device.writeAll(
      (mutants.batchReversed ? [...group].reverse() : group).map(
        (w): DeviceWrite => ({ offset: w.request.offset, bytes: w.payload })
      )
    )
    return work.pipe(
      Effect.matchCauseEffect({
        onSuccess: () => written(group),
        onFailure: (cause) => {
          const error = Cause.squash(cause)
          // One the checks let through and the device refused: nothing was written,
          // so each goes again alone and only the refused one fails.
          if (device.refusedWhole?.(error) === true && !alone && group.length > 1 && !mutants.batchUnchecked)
            return Effect.forEach(group, (w) => run([w], true), { discard: true })
          return failAll(group, error)
        }
      })
    )
  }
  return run(writes, false)
}

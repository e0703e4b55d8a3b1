/**
 * The receiver's clocks (docs/receiver.md, "Receive times and ages").
 *
 * A record's receive time comes from the wall clock, but never runs backwards within a
 * log: while the wall clock is behind the last stamp (it was stepped back, or the log
 * holds times from a clock that ran ahead), the receive time advances from the last
 * stamp at the monotonic clock's rate instead of freezing there. So points keep
 * distinct, increasing times whatever the wall clock does.
 *
 * Ages (retention) are judged on the monotonic clock alone. A record received by this
 * process carries the monotonic time it was stamped at; a record from before the log
 * was opened has only its wall time, and is placed on the monotonic clock once, when
 * the log is opened, as old as the wall clock said then.
 */

export interface Clocks {
  /** Wall clock, ms since the Unix epoch (may jump either way). */
  readonly wall: () => number
  /** Monotonic clock, ms from an arbitrary origin: never goes backwards, runs at the real rate. */
  readonly monotonic: () => number
}

export const systemClocks: Clocks = { wall: Date.now, monotonic: () => performance.now() }

export interface Stamp {
  /** Receive time written in the record: ms since the Unix epoch, never below the previous one. */
  readonly time: number
  /** The monotonic clock when it was received. */
  readonly monotonic: number
}

/** One log's receive clock. */
export class ReceiveClock {
  /** The last stamp, unrounded (the monotonic path advances by fractions of a millisecond). */
  private last: number
  private lastMonotonic: number
  private readonly openedWall: number
  readonly openedMonotonic: number

  /** `lastTime`: the newest receive time the log already holds (0 for an empty log). */
  constructor(
    private readonly clocks: Clocks,
    lastTime: number
  ) {
    this.openedMonotonic = clocks.monotonic()
    this.openedWall = clocks.wall()
    this.last = lastTime
    this.lastMonotonic = this.openedMonotonic
  }

  /** The receive time of a record received now. */
  stamp(): Stamp {
    const monotonic = Math.max(this.lastMonotonic, this.clocks.monotonic())
    const wall = this.clocks.wall()
    // The wall clock when it is ahead; else the last stamp plus the real time elapsed since
    // (so records a millisecond or more apart get distinct times). A non-finite wall
    // reading fails the comparison and takes the monotonic path too.
    this.last = wall > this.last ? wall : this.last + (monotonic - this.lastMonotonic)
    this.lastMonotonic = monotonic
    return { time: Math.floor(this.last), monotonic }
  }

  /**
   * Where a record received before the log was opened lies on the monotonic clock: its
   * age is what the wall clock said when the log was opened (never negative), and grows
   * at the monotonic rate from then on, whatever the wall clock does later.
   */
  monotonicOf(time: number): number {
    const age = this.openedWall - time
    // A wall reading that is not a number says nothing: the record counts as new.
    return Number.isFinite(age) && age > 0 ? this.openedMonotonic - age : this.openedMonotonic
  }
}

/**
 * The filter's side of the activity log (as in DRBD): which extents a guest write may
 * touch now. A write may reach the disk only in an extent that the activity log holds
 * durably as active, and an extent may leave the log only once every write that touched
 * it is in the journal, so after a crash the extents in the log cover every disk write
 * the journal may lack.
 *
 * Synchronous bookkeeping, run on the write path and the journal stage; the replicator
 * commits the transactions it hands out. Only extents in use have an entry, so the cost
 * does not grow with the disk.
 */

/** Where an extent is on its way into the log, in it, or out of it. */
const Phase = {
  /** Asked for by a waiting write; in no transaction yet. */
  Wanted: 0,
  /** In a transaction being committed; not yet usable. */
  Activating: 1,
  /** Durable in the log: writes may enter. */
  Active: 2,
  /** Chosen to leave the log; still durable, but no write may enter. */
  Retiring: 3
} as const
type Phase = (typeof Phase)[keyof typeof Phase]

interface Extent {
  phase: Phase
  /** Writes that entered and are not yet journaled. */
  pending: number
  /** When a write last entered or asked for it (a tick), for least-recently-used retiring. */
  lastUse: number
  /** A write asked for it while it was retiring: it comes back after the commit. */
  wantedAgain: boolean
  /** Waiting writes that span it: it may not retire while one does. */
  reserved: number
}

/** A waiting write's hold on its extents: see `reserve`. */
export interface Reservation {
  /** Lets the extents retire again; the second call does nothing. */
  readonly release: () => void
}

export interface Transaction {
  readonly activate: ReadonlyArray<number>
  readonly retire: ReadonlyArray<number>
}

export interface ActivityTracker {
  /**
   * True when every extent in `[first, last]` is active: the write is counted in each
   * and may go to the disk. Otherwise nothing changes; see `request`.
   */
  readonly tryEnter: (first: number, last: number) => boolean
  /** Asks for the inactive extents in `[first, last]`; `changed` fires once a commit lands. */
  readonly request: (first: number, last: number) => void
  /**
   * `request`, for the write that waits: until released, no extent in `[first, last]`
   * retires, so once each is active the write can enter. Without it a write spanning more
   * extents than are idle could see each commit retire one it needs to bring in another,
   * and wait for ever. Release it once the write entered or gave up.
   */
  readonly reserve: (first: number, last: number) => Reservation
  /**
   * A write that entered `[first, last]` no longer holds them: its event is journaled, or
   * it never reached the disk. (A write the disk failed keeps them: its bytes are unknown.)
   */
  readonly leave: (first: number, last: number) => void
  /**
   * The next transaction, or `undefined` when there is nothing to commit: no extent is
   * asked for, and the log is within its capacity or has no idle extent to let go.
   */
  readonly nextTransaction: () => Transaction | undefined
  /** The transaction `nextTransaction` handed out is durable. */
  readonly committed: (transaction: Transaction) => void
  /** Extents active, activating or retiring: what the durable log holds at most. */
  readonly size: () => number
  /**
   * True while a transaction is due: some extent is asked for and not yet in one, or the
   * log grew past its capacity while every extent was busy and one has since gone idle
   * (without that retire-only commit, a log that overflowed under load would stay full
   * while no new extent is asked for, and a crash would resync all of it).
   */
  readonly hasWork: () => boolean
}

/**
 * `capacity` bounds how many extents stay in the log: a transaction retires the least
 * recently used extents with no pending write to make room. It is a soft bound: when
 * every extent in the log has pending writes, asked-for extents are activated anyway,
 * so no write waits on another's journal commit for room (that could deadlock a write
 * spanning more extents than the log holds); once extents go idle, a retire-only
 * transaction brings the log back to `capacity`. `recovered` is the durable set at start.
 */
export const make = (options: {
  readonly capacity: number
  readonly recovered: ReadonlyArray<number>
  /** A deliberately broken variant for the test suite's mutants: retire extents whose writes are not journaled. */
  readonly unsafeRetireBusy?: boolean
  /** A deliberately broken variant for the test suite's mutants: retire extents a waiting write reserved. */
  readonly unsafeIgnoreReservations?: boolean
  /** A deliberately broken variant for the test suite's mutants: retire only when a new extent is asked for. */
  readonly unsafeRetireOnlyOnRequest?: boolean
}): ActivityTracker => {
  const extents = new Map<number, Extent>()
  let tick = 0
  let wanted = 0
  /** Extents activating, active or retiring: what the durable log may hold. */
  let inLog = 0
  /** An extent went idle while the log held more than `capacity`: a retire-only commit is due. */
  let shrinkDue = false
  for (const e of options.recovered)
    extents.set(e, { phase: Phase.Active, pending: 0, lastUse: 0, wantedAgain: false, reserved: 0 })
  inLog = extents.size
  shrinkDue = inLog > options.capacity && options.unsafeRetireOnlyOnRequest !== true
  const retireBusy = options.unsafeRetireBusy === true
  const ignoreReservations = options.unsafeIgnoreReservations === true
  const shrinks = options.unsafeRetireOnlyOnRequest !== true

  const tryEnter = (first: number, last: number): boolean => {
    for (let e = first; e <= last; e++) if (extents.get(e)?.phase !== Phase.Active) return false
    tick++
    for (let e = first; e <= last; e++) {
      const x = extents.get(e)!
      x.pending++
      x.lastUse = tick
    }
    return true
  }

  const request = (first: number, last: number): void => {
    tick++
    for (let e = first; e <= last; e++) {
      const x = extents.get(e)
      if (x === undefined) {
        extents.set(e, { phase: Phase.Wanted, pending: 0, lastUse: tick, wantedAgain: false, reserved: 0 })
        wanted++
      } else if (x.phase === Phase.Retiring) x.wantedAgain = true
      else x.lastUse = tick
    }
  }

  const reserve = (first: number, last: number): Reservation => {
    request(first, last)
    for (let e = first; e <= last; e++) extents.get(e)!.reserved++
    let held = true
    return {
      release: () => {
        if (!held) return
        held = false
        // An extent only wanted stays wanted: the next transaction brings it in, and it may retire later.
        for (let e = first; e <= last; e++) {
          const x = extents.get(e)
          if (x !== undefined && x.reserved > 0) x.reserved--
        }
      }
    }
  }

  const leave = (first: number, last: number): void => {
    for (let e = first; e <= last; e++) {
      const x = extents.get(e)
      if (x !== undefined && x.pending > 0 && --x.pending === 0 && inLog > options.capacity)
        shrinkDue = shrinks
    }
  }

  const nextTransaction = (): Transaction | undefined => {
    if (wanted === 0 && !shrinkDue) return undefined
    shrinkDue = false
    const activate: Array<number> = []
    const idle: Array<[number, Extent]> = []
    for (const [e, x] of extents) {
      if (x.phase === Phase.Wanted) {
        x.phase = Phase.Activating
        activate.push(e)
      } else if (
        x.phase === Phase.Active &&
        (x.pending === 0 || retireBusy) &&
        (x.reserved === 0 || ignoreReservations)
      )
        idle.push([e, x])
    }
    wanted = 0
    const over = inLog + activate.length - options.capacity
    inLog += activate.length
    const retire: Array<number> = []
    if (over > 0) {
      idle.sort((a, b) => a[1].lastUse - b[1].lastUse)
      for (const [e, x] of idle.slice(0, over)) {
        x.phase = Phase.Retiring
        retire.push(e)
      }
    }
    if (activate.length === 0 && retire.length === 0) return undefined
    activate.sort((a, b) => a - b)
    retire.sort((a, b) => a - b)
    return { activate, retire }
  }

  const committed = (transaction: Transaction): void => {
    tick++
    for (const e of transaction.activate) {
      const x = extents.get(e)!
      x.phase = Phase.Active
      // Most recently used, so the write that asked for it is not pushed out before it enters.
      x.lastUse = tick
    }
    for (const e of transaction.retire) {
      const x = extents.get(e)!
      inLog--
      if (x.wantedAgain) {
        x.phase = Phase.Wanted
        x.wantedAgain = false
        x.lastUse = tick
        wanted++
      } else extents.delete(e)
    }
  }

  return {
    tryEnter,
    request,
    reserve,
    leave,
    nextTransaction,
    committed,
    size: () => inLog,
    hasWork: () => wanted > 0 || shrinkDue
  }
}

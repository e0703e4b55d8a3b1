/**
 * Shared pieces of the ActivityLog layers: errors, the slot codec (pure, checked,
 * never throws on any bytes), widening between extent sizes, recovery from the two
 * slots, and the commit logic. A layer only supplies how a slot's bytes are written,
 * so the memory and file layers refuse, write and recover alike.
 *
 * A slot is, little-endian:
 * `[8 bytes "CDPSAL01"][u32 CRC32C of every byte after this field][u32 extentBytes]
 *  [f64 seq][u32 count][count × u32 extent, strictly ascending]`.
 */
import { Data, Effect, Either, Option } from "effect"
import type { ActivityLog } from "../ActivityLog.js"
import { crc32c } from "../../internal/crc32c.js"

export const DEFAULT_EXTENT_BYTES = 4 * 1024 * 1024
export const SECTOR_BYTES = 512
/** The largest multiple of 512 that fits the format's u32 field. */
export const MAX_EXTENT_BYTES = 0xffff_fe00
/** Extents are stored as u32. */
export const MAX_EXTENT = 0xffff_ffff
/**
 * A widened set larger than this is reported as unreadable (`none`) rather than built:
 * only a stored set of huge extents reopened with tiny ones gets there, and `none`
 * (assume every extent may be dirty) is always safe.
 */
export const MAX_WIDENED_EXTENTS = 1 << 24

export const MAGIC = Uint8Array.from("CDPSAL01", (c) => c.charCodeAt(0))
export const HEADER_BYTES = 28
const CRC_AT = 8
const EXTENT_BYTES_AT = 12
const SEQ_AT = 16
const COUNT_AT = 24

export type ActivityLogOp = "open" | "commit"

/** The operating system failed an I/O call (or the log is closed). */
export class ActivityLogIoError extends Data.TaggedError("ActivityLogIoError")<{
  readonly op: ActivityLogOp
  readonly cause: unknown
}> {
  override get message() {
    return `activity log ${this.op} failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** A commit the log refuses before writing anything. */
export class ActivityLogInvalidRequest extends Data.TaggedError("ActivityLogInvalidRequest")<{
  readonly reason: string
}> {
  override get message() {
    return `activity log request refused: ${this.reason}`
  }
}

export type ActivityLogError = ActivityLogIoError | ActivityLogInvalidRequest

export const isValidExtentBytes = (n: number): boolean =>
  Number.isSafeInteger(n) && n > 0 && n <= MAX_EXTENT_BYTES && n % SECTOR_BYTES === 0

/**
 * A bad `extentBytes` is a programming error, not a condition to handle: the layers
 * die with this message rather than add an error to their types.
 */
export const checkExtentBytes = (n: number): Effect.Effect<void> =>
  isValidExtentBytes(n)
    ? Effect.void
    : Effect.dieMessage(
        `ActivityLog: extentBytes must be a positive multiple of ${SECTOR_BYTES} up to ${MAX_EXTENT_BYTES}, got ${n}`
      )

// ---------------------------------------------------------------------------
// The slot codec.

export interface Slot {
  /** Which commit wrote it: the higher of two valid slots is the newer. */
  readonly seq: number
  readonly extentBytes: number
  /** Strictly ascending. */
  readonly extents: ReadonlyArray<number>
}

/** Encodes a slot. The caller passes strictly ascending u32 extents and a valid seq and extentBytes. */
export const encodeSlot = (slot: Slot): Uint8Array => {
  const out = new Uint8Array(HEADER_BYTES + 4 * slot.extents.length)
  const view = new DataView(out.buffer)
  out.set(MAGIC, 0)
  view.setUint32(EXTENT_BYTES_AT, slot.extentBytes, true)
  view.setFloat64(SEQ_AT, slot.seq, true)
  view.setUint32(COUNT_AT, slot.extents.length, true)
  for (let i = 0; i < slot.extents.length; i++) view.setUint32(HEADER_BYTES + 4 * i, slot.extents[i]!, true)
  view.setUint32(CRC_AT, crc32c(out.subarray(EXTENT_BYTES_AT)), true)
  return out
}

export interface DecodeOptions {
  /** A deliberately broken decoder for the test suite's mutants: never set it otherwise. */
  readonly unsafeSkipCrc?: boolean | undefined
}

/** Decodes a slot, or says why these bytes are not one. Total: never throws. */
export const decodeSlot = (bytes: Uint8Array, options?: DecodeOptions): Either.Either<Slot, string> => {
  if (bytes.length < HEADER_BYTES)
    return Either.left(`${bytes.length} bytes, shorter than the ${HEADER_BYTES}-byte header`)
  for (let i = 0; i < MAGIC.length; i++)
    if (bytes[i] !== MAGIC[i]) return Either.left("bad magic (not an activity log slot)")
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const count = view.getUint32(COUNT_AT, true)
  if (bytes.length !== HEADER_BYTES + 4 * count)
    return Either.left(
      `${bytes.length} bytes, but a slot of ${count} extents has ${HEADER_BYTES + 4 * count}`
    )
  if (
    options?.unsafeSkipCrc !== true &&
    crc32c(bytes.subarray(EXTENT_BYTES_AT)) !== view.getUint32(CRC_AT, true)
  )
    return Either.left("CRC32C mismatch")
  const extentBytes = view.getUint32(EXTENT_BYTES_AT, true)
  if (!isValidExtentBytes(extentBytes)) return Either.left(`implausible extentBytes ${extentBytes}`)
  const seq = view.getFloat64(SEQ_AT, true)
  if (!Number.isSafeInteger(seq) || seq < 1) return Either.left(`implausible seq ${seq}`)
  const extents = new Array<number>(count)
  for (let i = 0; i < count; i++) {
    const extent = view.getUint32(HEADER_BYTES + 4 * i, true)
    if (i > 0 && extent <= extents[i - 1]!) return Either.left(`extents not strictly ascending at index ${i}`)
    extents[i] = extent
  }
  return Either.right({ seq, extentBytes, extents })
}

// ---------------------------------------------------------------------------
// Widening between extent sizes.

/**
 * The extents of size `to` that overlap any extent of size `from` in `extents`
 * (ascending): stored extent `s` covers bytes [s·from, (s+1)·from). Ascending and
 * deduplicated. `undefined` when the result holds an extent beyond `MAX_EXTENT` or
 * more than `MAX_WIDENED_EXTENTS` extents (the set cannot be represented at `to`).
 */
export const widen = (
  extents: ReadonlyArray<number>,
  from: number,
  to: number
): ReadonlyArray<number> | undefined => {
  if (from === to) return extents
  // Bytes reach 2^64 at the format's limits: BigInt keeps the arithmetic exact.
  const bigFrom = BigInt(from)
  const bigTo = BigInt(to)
  const out: Array<number> = []
  let next = 0 // the lowest extent not yet pushed
  for (const s of extents) {
    const start = BigInt(s) * bigFrom
    const first = Number(start / bigTo)
    const last = Number((start + bigFrom - 1n) / bigTo)
    if (last > MAX_EXTENT) return undefined
    const begin = Math.max(first, next)
    if (last >= begin && out.length + (last - begin + 1) > MAX_WIDENED_EXTENTS) return undefined
    for (let e = begin; e <= last; e++) out.push(e)
    next = Math.max(next, last + 1)
  }
  return out
}

// ---------------------------------------------------------------------------
// Recovery: what two slots hold.

/** One slot as found: absent, or its bytes (as read from storage). */
export type SlotFound = Option.Option<Uint8Array>

export type SlotState =
  | { readonly _tag: "Absent" }
  | { readonly _tag: "Damaged"; readonly reason: string }
  | { readonly _tag: "Valid"; readonly slot: Slot }

export interface Recovered {
  readonly recovered: Option.Option<ReadonlyArray<number>>
  readonly states: readonly [SlotState, SlotState]
}

const stateOf = (found: SlotFound, options?: DecodeOptions): SlotState =>
  Option.match(found, {
    onNone: (): SlotState => ({ _tag: "Absent" }),
    onSome: (bytes) =>
      Either.match(decodeSlot(bytes, options), {
        onLeft: (reason): SlotState => ({ _tag: "Damaged", reason }),
        onRight: (slot): SlotState => ({ _tag: "Valid", slot })
      })
  })

const describeState = (state: SlotState): string =>
  state._tag === "Absent"
    ? "absent"
    : state._tag === "Damaged"
      ? state.reason
      : `valid, seq ${state.slot.seq}`

const union = (a: ReadonlyArray<number>, b: ReadonlyArray<number>): ReadonlyArray<number> =>
  Array.from(new Set([...a, ...b])).sort((x, y) => x - y)

/**
 * Chooses what two slots recover to, at `extentBytes`, and logs why: the valid slot
 * with the highest seq (both, united, on a tie that only a hand-made file has);
 * nothing present is a fresh log; present but none valid is `none`, with a warning.
 * Never changes a slot: the next commit overwrites a damaged one.
 */
export const recover = (
  names: readonly [string, string],
  found: readonly [SlotFound, SlotFound],
  extentBytes: number,
  options?: DecodeOptions
): Effect.Effect<Recovered> =>
  Effect.gen(function* () {
    const states = [stateOf(found[0], options), stateOf(found[1], options)] as const
    const report = `${names[0]}: ${describeState(states[0])}; ${names[1]}: ${describeState(states[1])}`
    const valid = states.flatMap((s) => (s._tag === "Valid" ? [s.slot] : []))
    if (valid.length === 0) {
      if (states[0]._tag === "Absent" && states[1]._tag === "Absent")
        return { recovered: Option.some([]), states }
      yield* Effect.logWarning(
        `ActivityLog: no slot can be read (${report}); every extent must be assumed dirty`
      )
      return { recovered: Option.none(), states }
    }
    const seq = Math.max(...valid.map((slot) => slot.seq))
    const newest = valid.filter((slot) => slot.seq === seq)
    let widened: ReadonlyArray<number> = []
    for (const slot of newest) {
      const set = widen(slot.extents, slot.extentBytes, extentBytes)
      if (set === undefined) {
        yield* Effect.logWarning(
          `ActivityLog: the set stored with extentBytes ${slot.extentBytes} cannot be represented with extentBytes ${extentBytes} (${report}); every extent must be assumed dirty`
        )
        return { recovered: Option.none(), states }
      }
      widened = newest.length === 1 ? set : union(widened, set)
    }
    if (states.some((s) => s._tag === "Damaged"))
      yield* Effect.logInfo(`ActivityLog: recovered from the valid slot (${report})`)
    if (newest.some((slot) => slot.extentBytes !== extentBytes))
      yield* Effect.logInfo(
        `ActivityLog: widened ${newest[0]!.extents.length} extents of ${newest[0]!.extentBytes} bytes to ${widened.length} of ${extentBytes}`
      )
    return { recovered: Option.some(widened), states }
  })

// ---------------------------------------------------------------------------
// Commits.

const isExtent = (e: number) => Number.isInteger(e) && e >= 0 && e <= MAX_EXTENT

/** Why a commit is refused, checked before anything is written. */
export const checkRequest = (
  activate: ReadonlyArray<number>,
  retire: ReadonlyArray<number>
): ActivityLogInvalidRequest | undefined => {
  for (const [list, name] of [
    [activate, "activate"],
    [retire, "retire"]
  ] as const)
    for (const e of list)
      if (!isExtent(e))
        return new ActivityLogInvalidRequest({
          reason: `${name}: ${e} is not an extent (an integer 0 … ${MAX_EXTENT})`
        })
  const activated = new Set(activate)
  for (const e of retire)
    if (activated.has(e))
      return new ActivityLogInvalidRequest({ reason: `extent ${e} is both activated and retired` })
  return undefined
}

/** `active` with `activate` added and `retire` removed, ascending. */
export const apply = (
  active: ReadonlyArray<number>,
  activate: ReadonlyArray<number>,
  retire: ReadonlyArray<number>
): ReadonlyArray<number> => {
  const set = new Set(active)
  for (const e of activate) set.add(e)
  for (const e of retire) set.delete(e)
  return Array.from(set).sort((a, b) => a - b)
}

const sameSet = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) =>
  a.length === b.length && a.every((e, i) => e === b[i])

/** Writes a slot's whole new content durably; on failure the slot may be damaged. */
export type WriteSlot = (slot: 0 | 1, bytes: Uint8Array) => Effect.Effect<void, ActivityLogIoError>

/**
 * The service over two slots, from what opening recovered. Commits are serialized;
 * each writes the whole set, seq one higher, into a damaged or absent slot if there
 * is one, else the older one: the other slot keeps the last durable set throughout.
 */
export const makeService = (
  extentBytes: number,
  opened: Recovered,
  write: WriteSlot
): Effect.Effect<ActivityLog.Service> =>
  Effect.gen(function* () {
    const lock = yield* Effect.makeSemaphore(1)
    const seqOf = (s: SlotState) => (s._tag === "Valid" ? s.slot.seq : 0)
    // Only a valid slot has a seq; a damaged or absent one (seq 0) is written first.
    let seqs: [number, number] = [seqOf(opened.states[0]), seqOf(opened.states[1])]
    let active = Option.getOrElse(opened.recovered, (): ReadonlyArray<number> => [])

    const commit = (
      activate: ReadonlyArray<number>,
      retire: ReadonlyArray<number>
    ): Effect.Effect<void, ActivityLogError> =>
      Effect.suspend((): Effect.Effect<void, ActivityLogError> => {
        const invalid = checkRequest(activate, retire)
        if (invalid !== undefined) return Effect.fail(invalid)
        return lock.withPermits(1)(
          // Uninterruptible: a write left running behind an interrupted commit could race the next one.
          Effect.uninterruptible(
            Effect.suspend(() => {
              const next = apply(active, activate, retire)
              // The set on disk already is `next` (or, after a `none`, covers it): nothing to make durable.
              if (sameSet(next, active)) return Effect.void
              const target: 0 | 1 = seqs[0] <= seqs[1] ? 0 : 1
              const seq = Math.max(seqs[0], seqs[1]) + 1
              if (!Number.isSafeInteger(seq))
                return Effect.dieMessage("ActivityLog: the commit seq is exhausted")
              const bytes = encodeSlot({ seq, extentBytes, extents: next })
              return write(target, bytes).pipe(
                Effect.tapError(() =>
                  // The slot may be torn: write it again next time (the other one holds the durable set).
                  Effect.sync(() => {
                    seqs = target === 0 ? [0, seqs[1]] : [seqs[0], 0]
                  })
                ),
                Effect.tap(() =>
                  Effect.sync(() => {
                    seqs = target === 0 ? [seq, seqs[1]] : [seqs[0], seq]
                    active = next
                  })
                )
              )
            })
          )
        )
      }).pipe(Effect.withSpan("ActivityLog.commit"))

    const service: ActivityLog.Service = {
      extentBytes,
      recovered: opened.recovered,
      active: Effect.sync(() => active),
      commit
    }
    return service
  })

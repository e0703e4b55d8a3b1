/**
 * One run of a foreign implementation in the simulated world: the adapter is
 * wrapped as a `Simulation.Filter` (via `Simulation.foreign`), every event it
 * reports is validated through the trace codec, and whatever it throws becomes a
 * failure instead of escaping.
 */
import { Either } from "effect"
import type { Config } from "../../domain/Config.js"
import type * as Event from "../../domain/Event.js"
import type { Input } from "../../domain/Input.js"
import * as Legality from "../../domain/Legality.js"
import * as Simulation from "../Simulation.js"
import * as State from "../../domain/State.js"
import * as Trace from "../../domain/Trace.js"

/** What a foreign implementation supplies: start a filter, feed it inputs, get back the events it recorded. */
export interface Implementation<H> {
  readonly name: string
  /** Start a fresh filter for this configuration (initial "in-sync" or "full-sync"). */
  readonly start: (config: Config) => H
  /** Feed one input; return the events the implementation recorded for it, in order. May throw: that is reported as a failure. */
  readonly feed: (handle: H, input: Input) => ReadonlyArray<Event.Event>
}

/** The invariants a run can be checked for (design §4 and the kit's own). */
export type Invariant =
  | Exclude<Simulation.InvariantName, "rejected-input">
  /** Every completed write is recorded exactly once, by its own input, with its offset and length. */
  | "write-recorded"

/** The world's invariants (but its own `rejected-input`), then the kit's. */
export const allInvariants: ReadonlyArray<Invariant> = [
  ...Simulation.allInvariants.filter(
    (i): i is Exclude<Simulation.InvariantName, "rejected-input"> => i !== "rejected-input"
  ),
  "write-recorded"
]

/** Why a run failed: a broken invariant, or something the implementation did that cannot be checked at all. */
export type FailureKind =
  | Invariant
  /** `start` or `feed` threw. */
  | "exception"
  /** `feed` returned something that is not a list of well-formed events. */
  | "malformed-event"

/** What `cdp-sync check-trace` says about a failing run's trace. */
export interface TraceVerdict {
  /** 1-based line of the offending event (the last line when the end of the trace is at fault). */
  readonly line: number
  readonly rule: Legality.Rule
  readonly reason: string
  /** Whether the verdict needs `--quiescent` (the run was healed and did not converge). */
  readonly quiescent: boolean
  /** The model state that explains it. */
  readonly state: Readonly<Record<string, unknown>>
}

export interface RunFailure {
  readonly invariant: FailureKind
  readonly detail: string
  /** 1-based step at which it broke; beyond the scenario's steps when it broke while the world healed. */
  readonly step: number
  /** Whether it broke while the world was healing (link up, no more faults) after the scenario's steps. */
  readonly healing: boolean
}

export interface RunResult {
  readonly failure: RunFailure | undefined
  /** The events the implementation recorded, in order (the offending batch included). */
  readonly events: ReadonlyArray<Event.Event>
  /** The run as a design §5 trace (JSON Lines, header first, newline-terminated). */
  readonly trace: string
  /** What the legality checker says about `trace`; `undefined` when it checks clean. */
  readonly verdict: TraceVerdict | undefined
}

/** Aborts a run from inside the world: the implementation did something the world cannot go on with. */
class Abort {
  constructor(
    readonly invariant: FailureKind,
    readonly detail: string,
    /** Events the implementation reported for the offending input (not folded by the world). */
    readonly events: ReadonlyArray<Event.Event> = []
  ) {}
}

const describeInput = (input: Input): string => {
  const { _tag, ...fields } = input
  return `${_tag} ${JSON.stringify(fields)}`
}

const messageOf = (cause: unknown): string =>
  cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)

const isWrite = (e: Event.Event): boolean => e.type === "WriteStreamed" || e.type === "WriteTracked"

/** Calls `feed`, turns a throw into an `Abort`, and validates what came back through the trace codec. */
const guarded =
  <H>(impl: Implementation<H>, checkWrites: boolean) =>
  (handle: H, input: Input): ReadonlyArray<Event.Event> => {
    let reported: unknown
    try {
      reported = impl.feed(handle, input)
    } catch (cause) {
      throw new Abort("exception", `feed threw on ${describeInput(input)}: ${messageOf(cause)}`)
    }
    if (!Array.isArray(reported))
      throw new Abort(
        "malformed-event",
        `feed returned ${typeof reported} for ${describeInput(input)}, not an array of events`
      )
    const events: Array<Event.Event> = []
    for (let i = 0; i < reported.length; i++) {
      // Round-trip through the codec: the world gets exactly what a trace line would carry.
      let text: string
      try {
        text = JSON.stringify(reported[i]) ?? "undefined"
      } catch (cause) {
        throw new Abort("malformed-event", `event ${i} for ${describeInput(input)}: ${messageOf(cause)}`)
      }
      const decoded = Trace.decodeEvent(text, 0)
      if (Either.isLeft(decoded))
        throw new Abort(
          "malformed-event",
          `event ${i} for ${describeInput(input)}: ${decoded.left.kind}: ${decoded.left.detail}: ${text}`
        )
      events.push(decoded.right)
    }
    if (checkWrites) {
      const writes = events.filter(isWrite)
      if (input._tag === "WriteCompleted") {
        const w = writes[0]
        if (
          writes.length !== 1 ||
          w === undefined ||
          (w.type !== "WriteStreamed" && w.type !== "WriteTracked") ||
          w.offset !== input.offset ||
          w.length !== input.length
        )
          throw new Abort(
            "write-recorded",
            `a completed write (offset ${input.offset}, length ${input.length}) must be recorded exactly once, as a WriteStreamed or WriteTracked with its offset and length; got ${JSON.stringify(writes)}`,
            events
          )
      } else if (writes.length > 0)
        throw new Abort(
          "write-recorded",
          `${describeInput(input)} is not a write, but the implementation recorded ${JSON.stringify(writes)}`,
          events
        )
    }
    return events
  }

/**
 * The header and events as a design §5 trace: version 1 unless an event needs version 2
 * (checksum-based resync), so a version 1 run's trace is what it always was.
 */
export const traceOf = (config: Config, events: ReadonlyArray<Event.Event>): string => {
  const lines = [Trace.encodeHeader({ ...config, version: Trace.versionFor(events) })]
  for (const e of events) lines.push(Trace.encodeEvent(e))
  return `${lines.join("\n")}\n`
}

/** What the legality checker (the same one as `cdp-sync check-trace`) says about the events. */
export const verdictOf = (
  config: Config,
  events: ReadonlyArray<Event.Event>,
  quiescent: boolean
): TraceVerdict | undefined => {
  const found = Legality.checkAll(State.initial(config), events, { quiescent })
  if (found === undefined) return undefined
  const atEnd = found.violation.event === undefined
  return {
    // Line 1 is the header; event i is on line i + 2.
    line: atEnd ? events.length + 1 : found.index + 2,
    rule: found.violation.rule,
    reason: found.violation.reason,
    quiescent,
    state: found.violation.context
  }
}

/**
 * Drives the implementation through the steps, then heals the world and lets it
 * settle (unless the run already failed). Never throws.
 */
export const runSteps = <H>(
  impl: Implementation<H>,
  config: Config,
  steps: ReadonlyArray<Simulation.Step>,
  invariants: ReadonlyArray<Invariant> = allInvariants,
  /** Pumps ask for comparisons while at least this many blocks are owed (trace version 2); default never. */
  compareFrom?: number,
  /** With `compareFrom`: in runs of at most this many blocks (trace version 3); default block by block. */
  compareRun?: number
): RunResult => {
  const filter = Simulation.foreign(
    impl.name,
    impl.start,
    guarded(impl, invariants.includes("write-recorded"))
  )
  const checks: Array<Simulation.InvariantName> = []
  for (const i of invariants) if (i !== "write-recorded") checks.push(i)
  let world: Simulation.World<H> | undefined
  let failure: RunFailure | undefined
  let extra: ReadonlyArray<Event.Event> = []
  try {
    try {
      world = new Simulation.World(config, filter, {
        checks,
        ...(compareFrom === undefined ? {} : { compareFrom }),
        ...(compareRun === undefined ? {} : { compareRun })
      })
    } catch (cause) {
      throw new Abort("exception", `start threw for ${JSON.stringify(config)}: ${messageOf(cause)}`)
    }
    for (const step of steps) {
      world.step(step)
      if (world.failure !== undefined) break
    }
    if (world.failure === undefined) world.settle()
    const f = world.failure
    if (f !== undefined)
      failure = {
        invariant: f.invariant as FailureKind,
        detail: f.detail,
        step: f.step,
        healing: f.step > steps.length
      }
  } catch (cause) {
    const step = world?.stats.steps ?? 0
    if (cause instanceof Abort) {
      failure = { invariant: cause.invariant, detail: cause.detail, step, healing: step > steps.length }
      extra = cause.events
    } else
      failure = {
        invariant: "exception",
        detail: `the simulated world failed on the implementation's events: ${messageOf(cause)}`,
        step,
        healing: step > steps.length
      }
  }
  const events = extra.length === 0 ? (world?.events ?? []) : [...(world?.events ?? []), ...extra]
  return {
    failure,
    events,
    trace: traceOf(config, events),
    verdict:
      failure === undefined ? undefined : verdictOf(config, events, failure.invariant === "convergence")
  }
}

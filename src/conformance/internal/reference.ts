/**
 * The reference decider behind the conformance adapter: the worked example of
 * docs/conformance.md, and the implementation every check must pass.
 */
import { Either } from "effect"
import type { Config } from "../../domain/Config.js"
import * as Decider from "../../domain/Decider.js"
import type * as Event from "../../domain/Event.js"
import type { Input } from "../../domain/Input.js"
import type * as State from "../../domain/State.js"
import type { Implementation } from "./runner.js"

/** A mutable box around the immutable state: a foreign implementation keeps its state inside. */
export interface Box {
  state: State.State
}

export const start = (config: Config): Box => ({ state: Decider.initialState(config) })

/** Decide, fold, report. An input the decider refuses (a stale gap report) records nothing. */
export const feed = (box: Box, input: Input): ReadonlyArray<Event.Event> => {
  const decided = Decider.decide(box.state, input)
  if (Either.isLeft(decided)) return []
  box.state = Decider.evolveAll(box.state, decided.right)
  return decided.right
}

export const reference: Implementation<Box> = { name: "reference", start, feed }

/**
 * Deliberately broken variants of the simulated world's program and receiver, for the
 * tests that prove the comparison properties catch them (checksum-based resync, trace
 * version 2). Nothing in the library imports this module and no entry point exports it:
 * each variant is a `World` subclass overriding a protected hook.
 */
import type { Config } from "../../domain/Config.js"
import type * as Event from "../../domain/Event.js"
import { type Filter, type Step, World, type WorldOptions } from "../Simulation.js"

/**
 * The program hashes the disk's blocks ahead, when a pass starts, and compares with those
 * checksums: a write that completes between that read and the comparison's decision is
 * marked, the decision clears the mark, and the match proves only the older content.
 */
class HashAhead<S> extends World<S> {
  private readonly ahead = new Map<number, number>()
  protected override noted(event: Event.Event): void {
    if (event.type !== "PassStarted") return
    for (let b = 0; b < this.disk.length; b++) this.ahead.set(b, this.disk[b]!)
  }
  protected override comparisonRead(block: number): number {
    return this.ahead.get(block) ?? super.comparisonRead(block)
  }
}

/** The receiver hashes the next block instead of the one asked for. */
class WrongBlock<S> extends World<S> {
  protected override receiverChecksum(block: number): number {
    return this.newestVersion((block + 1) % this.disk.length)
  }
}

/**
 * The receiver hashes what its replica held before it made the records accepted ahead of
 * the request durable: one of them is missing from the version it hashes.
 */
class StaleVersion<S> extends World<S> {
  protected override receiverChecksum(_block: number, beforeFlush: number): number {
    return beforeFlush
  }
}

export const variants = {
  "hash-ahead": HashAhead,
  "wrong-block": WrongBlock,
  "stale-version": StaleVersion
} as const

export type Variant = keyof typeof variants

/** `Simulation.run` in a broken world: the steps, then the heal-and-settle. */
export const runIn = <S>(
  variant: Variant,
  config: Config,
  filter: Filter<S>,
  steps: Iterable<Step>,
  options?: WorldOptions
): World<S> => {
  const world: World<S> = new variants[variant](config, filter, options)
  for (const step of steps) {
    world.step(step)
    if (world.failure !== undefined) return world
  }
  world.settle()
  return world
}

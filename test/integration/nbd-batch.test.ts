/**
 * The batched write path (src/nbd/internal/writeBatch.ts): the WRITEs a client pipelines
 * reach the replicator together, as one `writeAll`. A burst sent in one segment holds
 * good writes, refused ones in the middle (unaligned: EINVAL; past the end: ENOSPC), a
 * FUA write, and overlapping writes. Only the refused ones fail; every other lands, reads
 * back in request order, and replicates (the replica equals the disk). Kept mutants: a
 * batch that skips the checks and fails whole (the neighbours of a bad request get its
 * error), and a batch applied out of order (overlapping writes land wrong).
 */
import { Effect, type Scope } from "effect"
import { describe, expect, it } from "vitest"
import type * as NbdMutants from "../../src/nbd/internal/mutants.js"
import { DISK_BYTES, make, pattern } from "../support/nbdHarness.js"
import { errnoOf, P, transmitting } from "../support/nbdRaw.js"

const run = <A>(use: Effect.Effect<A, unknown, Scope.Scope>): Promise<A> =>
  Effect.runPromise(Effect.scoped(use))

interface Sent {
  readonly offset: number
  readonly length: number
  readonly fua?: boolean
  /** What the server must answer. */
  readonly expect: number | "ok"
}

/** One burst at `base`: its requests in order. */
const burst = (base: number): ReadonlyArray<Sent> => [
  { offset: base, length: 1024, expect: "ok" },
  { offset: base + 4096, length: 512, expect: "ok" },
  { offset: base + 8192 + 100, length: 512, expect: P.EINVAL },
  { offset: base + 12288, length: 512, fua: true, expect: "ok" },
  { offset: DISK_BYTES - 512, length: 1024, expect: P.ENOSPC },
  // Overlapping: each later one wins where it lands.
  { offset: base + 16384, length: 2048, expect: "ok" },
  { offset: base + 16384 + 512, length: 512, expect: "ok" },
  { offset: base + 16384, length: 1024, expect: "ok" },
  { offset: base + 20480, length: 512, expect: "ok" }
]

/** Sends bursts in one segment each; what was answered wrong and what reads back wrong. */
const pipelinedBursts = (mutants: Partial<NbdMutants.Mutants>) =>
  run(
    Effect.gen(function* () {
      const h = yield* make({ mutants })
      const c = yield* transmitting(h.endpoint)
      const expected = new Uint8Array(DISK_BYTES)
      const wrongAnswers: Array<string> = []
      for (let round = 0; round < 3; round++) {
        const base = round * 65536
        const sent = burst(base)
        c.socket.cork()
        const answers = sent.map((s, i) => {
          const data = pattern(round * 100 + i, s.offset, s.length)
          if (s.expect === "ok") expected.set(data, s.offset)
          return errnoOf(
            c.sendNow({
              type: P.CMD_WRITE,
              flags: s.fua === true ? P.CMD_FLAG_FUA : 0,
              offset: s.offset,
              length: s.length,
              payload: data
            })
          )
        })
        c.socket.uncork()
        const got = yield* Effect.all(answers, { concurrency: "unbounded" })
        got.forEach((answer, i) => {
          if (answer !== sent[i]!.expect)
            wrongAnswers.push(`round ${round} request ${i}: ${answer}, expected ${sent[i]!.expect}`)
        })
      }
      const back = yield* c.raw({ type: P.CMD_READ, offset: 0, length: 3 * 65536 })
      const firstWrong = back.findIndex((b, i) => b !== expected[i])
      yield* c.raw({ type: P.CMD_FLUSH })
      return { wrongAnswers, firstWrong, replicated: yield* h.replicaEqualsDisk }
    })
  )

describe("pipelined WRITEs go to the replicator as a batch", () => {
  it("only the refused requests fail; the rest land in request order and replicate", async () => {
    expect(await pipelinedBursts({})).toEqual({ wrongAnswers: [], firstWrong: -1, replicated: true })
  })

  it("the mutant whose batch skips the checks (a bad request fails its neighbours) is caught", async () => {
    const result = await pipelinedBursts({ batchUnchecked: true })
    expect(result.wrongAnswers.length).toBeGreaterThan(0)
  })

  it("the mutant that applies a batch out of order is caught", async () => {
    const result = await pipelinedBursts({ batchReversed: true })
    expect(result.firstWrong).toBeGreaterThanOrEqual(16384)
  })
})

/**
 * Online verify's judgement (src/replicator/internal/verify.ts) against a simulated filter
 * and receiver that keep the contract verify relies on: writes race every step (a write is
 * decided, marks its block, and reaches the receiver's durable copy later), the receiver
 * answers only after making what was sent before the request durable, and some replica
 * blocks are damaged (silently, or detected and refused). Property: verify reports every
 * damaged block no write repaired, and nothing that was never damaged (a damaged block a
 * write repaired may be reported or not: it differed until then); with `resync` it marks
 * exactly what it reports.
 * Two broken filters are caught: one that does not mark written blocks, one that believes
 * an answer that misses writes decided before the batch.
 */
import { createHash } from "node:crypto"
import { Effect } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import type * as Wire from "../../src/protocol/Wire.js"
import { type Opened, type VerifyPort, verify } from "../../src/replicator/internal/verify.js"

const BLOCK = 16

interface Scenario {
  readonly blocks: number
  readonly silent: ReadonlyArray<number>
  readonly refused: ReadonlyArray<number>
  /** Per port call: how many guest writes happen, to which blocks, and how many sent records become durable. */
  readonly moves: ReadonlyArray<{
    readonly writes: ReadonlyArray<number>
    readonly deliver: number
    readonly sent: number
  }>
}

const scenario: fc.Arbitrary<Scenario> = fc.integer({ min: 1, max: 40 }).chain((blocks) =>
  fc.record({
    blocks: fc.constant(blocks),
    silent: fc.uniqueArray(fc.nat({ max: blocks - 1 }), { maxLength: 4 }),
    refused: fc.uniqueArray(fc.nat({ max: blocks - 1 }), { maxLength: 3 }),
    moves: fc.array(
      fc.record({
        writes: fc.array(fc.nat({ max: blocks - 1 }), { maxLength: 3 }),
        deliver: fc.nat({ max: 3 }),
        sent: fc.nat({ max: 3 })
      }),
      { maxLength: 60 }
    )
  })
)

type Broken = "no-touched" | "believes-short-answers" | undefined

/** The simulated filter and receiver, stepping the scenario's moves at each port call. */
const world = (s: Scenario, broken: Broken) => {
  const disk = Array.from({ length: s.blocks }, (_, b) => new Uint8Array(BLOCK).fill(b))
  const replica = disk.map((d) => d.slice())
  for (const b of s.silent) replica[b] = new Uint8Array(BLOCK).fill(0xee)
  const refusing = new Set(s.refused)
  const damaged = new Set([...s.silent, ...s.refused])
  const everDamaged = new Set(damaged)
  const touched = new Set<number>()
  const marked: Array<number> = []
  /** Decided records not yet durable: [seq, block, data]; the first `sentCount` are on the wire. */
  const pipeline: Array<readonly [number, number, Uint8Array<ArrayBuffer>]> = []
  let decided = 0
  let durable = 0
  let version = 1000
  let move = 0
  const deliver = (n: number) => {
    for (let k = 0; k < n && pipeline.length > 0; k++) {
      const [seq, block, data] = pipeline.shift()!
      replica[block] = data
      refusing.delete(block)
      durable = seq
    }
  }
  const step = () => {
    const m = s.moves[move++]
    if (m === undefined) return
    for (const b of m.writes) {
      const data = new Uint8Array(BLOCK).fill(version++ & 0xff)
      data[0] = version >> 8
      disk[b] = data
      decided++
      if (broken !== "no-touched") touched.add(b)
      pipeline.push([decided, b, data])
      damaged.delete(b) // the write's record repairs the replica's copy
    }
    deliver(Math.min(m.deliver, m.sent))
  }
  const port: VerifyPort = {
    blockSize: BLOCK,
    blockCount: s.blocks,
    digest: () => "sha256",
    unsupported: () => Effect.void,
    open: (blocks) =>
      Effect.sync(() => {
        step()
        for (const b of blocks) touched.delete(b)
        return { link: 1, epoch: 0, decidedBefore: decided }
      }),
    read: (first, into) =>
      Effect.sync(() => {
        step()
        for (let i = 0; i < into.length / BLOCK; i++) into.set(disk[first + i]!, i * BLOCK)
      }),
    ask: (_opened: Opened, blocks) =>
      Effect.sync((): Wire.ChecksumReply | Wire.ChecksumRefused => {
        step()
        // Some of the decided records are on the wire: those are made durable before the answer.
        const m = s.moves[move - 1]
        deliver(Math.min(pipeline.length, m === undefined ? pipeline.length : m.sent))
        if (blocks.some((b) => refusing.has(b)))
          return { _tag: "ChecksumRefused", id: 1, reason: "damaged", detail: "test" }
        const digests = new Uint8Array(blocks.length * 32)
        for (const [i, b] of blocks.entries())
          digests.set(createHash("sha256").update(replica[b]!).digest(), i * 32)
        return {
          _tag: "ChecksumReply",
          algorithm: 0,
          id: 1,
          through: broken === "believes-short-answers" ? Math.max(durable, decided) : durable,
          digests
        }
      }),
    still: () => Effect.succeed(true),
    touched: (b) => touched.has(b),
    differ: (b) => Effect.sync(() => void marked.push(b)),
    // Time passing in the simulated world: the writes and deliveries go on.
    pause: () => Effect.sync(step)
  }
  return { port, damaged, everDamaged, marked }
}

const judged = (s: Scenario, broken: Broken, resync = true) => {
  const w = world(s, broken)
  const result = Effect.runSync(verify(w.port, { resync }))
  return {
    result,
    damaged: [...w.damaged].sort((a, b) => a - b),
    everDamaged: w.everDamaged,
    marked: w.marked.sort((a, b) => a - b)
  }
}

describe("online verify's judgement (simulated filter and receiver)", () => {
  it("reports exactly the damaged blocks no write repaired, and marks them with resync", () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const { result, damaged, everDamaged, marked } = judged(s, undefined)
        // A block every attempt raced cannot be judged; none here (the moves run out).
        expect(result.unverified).toBe(0)
        expect(result.verified).toBe(s.blocks)
        expect(result.differing.filter((b) => !everDamaged.has(b))).toEqual([])
        expect(damaged.filter((b) => !result.differing.includes(b))).toEqual([])
        expect(marked).toEqual(result.differing)
      }),
      { numRuns: 400 }
    )
  })

  it("the scenarios race: writes are set aside and rechecked, answers fall short, refusals are narrowed", () => {
    let rechecked = 0
    let refusedAndRepaired = 0
    fc.assert(
      fc.property(scenario, (s) => {
        const { result } = judged(s, undefined)
        if (result.rechecked > 0) rechecked++
        if (s.refused.length > 0 && result.differing.length < s.refused.length + s.silent.length)
          refusedAndRepaired++
      }),
      { numRuns: 200, seed: 7 }
    )
    expect(rechecked).toBeGreaterThan(20)
    expect(refusedAndRepaired).toBeGreaterThan(5)
  })

  it("a reply with the wrong number of digests judges nothing: its blocks are asked again, not reported", () => {
    const s: Scenario = { blocks: 8, silent: [5], refused: [], moves: [] }
    const w = world(s, undefined)
    let truncated = 0
    const ask = w.port.ask
    const port: VerifyPort = {
      ...w.port,
      ask: (opened, blocks, algorithm) =>
        Effect.map(ask(opened, blocks, algorithm), (answer) => {
          if (answer?._tag !== "ChecksumReply" || truncated++ > 0) return answer
          return { ...answer, digests: answer.digests.subarray(0, 32) }
        })
    }
    const result = Effect.runSync(verify(port, { resync: true }))
    expect(truncated).toBeGreaterThan(1)
    expect(result).toMatchObject({ differing: [5], verified: 8, rechecked: 8 })
    expect(w.marked).toEqual([5])
  })

  it("blocks read in several runs through one reused buffer are each judged against their own digest", () => {
    // 256 KiB blocks: a read holds 4 of them, so a batch is several reads into one buffer,
    // and the recheck of scattered written blocks reads shorter runs over what a longer one left.
    const big = 256 * 1024
    const blocks = 23
    const content = (b: number, version: number) => {
      const out = new Uint8Array(big).fill(b)
      out[big - 1] = version
      return out
    }
    const disk = Array.from({ length: blocks }, (_, b) => content(b, 0))
    const replica = disk.map((d) => d.slice())
    replica[13] = content(13, 9) // damaged: differs only in its last byte
    replica[21] = content(21, 9)
    const touched = new Set<number>()
    const written = [2, 5, 6, 11, 17, 22]
    const reads: Array<number> = []
    let asked = 0
    const port: VerifyPort = {
      blockSize: big,
      blockCount: blocks,
      digest: () => "sha256",
      unsupported: () => Effect.void,
      open: (bs) =>
        Effect.sync(() => {
          for (const b of bs) touched.delete(b)
          return { link: 1, epoch: 0, decidedBefore: 0 }
        }),
      read: (first, into) =>
        Effect.sync(() => {
          reads.push(into.length / big)
          for (let i = 0; i < into.length / big; i++) into.set(disk[first + i]!, i * big)
        }),
      ask: (_opened, bs) =>
        Effect.sync((): Wire.ChecksumReply => {
          // While the first batch was read, guest writes reached these blocks (and the receiver).
          if (asked++ === 0)
            for (const b of written) {
              disk[b] = content(b, 1)
              replica[b] = disk[b]!.slice()
              touched.add(b)
            }
          const digests = new Uint8Array(bs.length * 32)
          for (const [i, b] of bs.entries())
            digests.set(createHash("sha256").update(replica[b]!).digest(), i * 32)
          return { _tag: "ChecksumReply", algorithm: 0, id: 1, through: 0, digests }
        }),
      still: () => Effect.succeed(true),
      touched: (b) => touched.has(b),
      differ: () => Effect.void,
      pause: () => Effect.void
    }
    const result = Effect.runSync(verify(port))
    expect(result).toMatchObject({
      differing: [13, 21],
      verified: blocks,
      rechecked: written.length,
      unverified: 0
    })
    // Runs of 4, the last one short, then the rechecked blocks in their own shorter runs.
    expect(reads).toEqual([4, 4, 4, 4, 4, 3, 1, 2, 1, 1, 1])
  })

  it("asks the receiver before it reads the disk, so both sides hash the same batch at once", async () => {
    // Each batch's disk read waits until its question is on the wire: a verify that reads
    // first (as before session 12) never asks, and the timeout below fails it.
    const blocks = 8
    const disk = Array.from({ length: blocks }, (_, b) => new Uint8Array(BLOCK).fill(b))
    let asked = 0
    const order: Array<string> = []
    const port: VerifyPort = {
      blockSize: BLOCK,
      blockCount: blocks,
      digest: () => "sha256",
      unsupported: () => Effect.void,
      open: () => Effect.succeed({ link: 1, epoch: 0, decidedBefore: 0 }),
      read: (first, into) =>
        Effect.gen(function* () {
          while (asked === 0) yield* Effect.sleep("1 millis")
          order.push("read")
          for (let i = 0; i < into.length / BLOCK; i++) into.set(disk[first + i]!, i * BLOCK)
        }),
      ask: (_opened, bs) =>
        Effect.gen(function* () {
          asked++
          order.push("ask")
          yield* Effect.sleep("5 millis") // the receiver hashing
          const digests = new Uint8Array(bs.length * 32)
          for (const [i, b] of bs.entries())
            digests.set(createHash("sha256").update(disk[b]!).digest(), i * 32)
          return {
            _tag: "ChecksumReply",
            algorithm: 0,
            id: 1,
            through: 0,
            digests
          } satisfies Wire.ChecksumReply
        }),
      still: () => Effect.succeed(true),
      touched: () => false,
      differ: () => Effect.void,
      pause: () => Effect.void
    }
    const result = await Effect.runPromise(verify(port).pipe(Effect.timeout("5 seconds")))
    expect(result).toMatchObject({ differing: [], verified: blocks, unverified: 0 })
    expect(order[0]).toBe("ask")
  })

  for (const broken of ["no-touched", "believes-short-answers"] as const)
    it(`a filter that ${broken === "no-touched" ? "does not mark written blocks" : "believes answers that miss earlier writes"} reports blocks that do not differ`, () => {
      const outcome = fc.check(
        fc.property(scenario, (s) => {
          const { result, everDamaged } = judged(s, broken)
          expect(result.differing.filter((b) => !everDamaged.has(b))).toEqual([])
        }),
        { numRuns: 400, seed: 11 }
      )
      expect(outcome.failed).toBe(true)
    })
})

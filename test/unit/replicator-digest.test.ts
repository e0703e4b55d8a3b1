/**
 * The block digest's algorithm in the replicator (session 13, docs/wire.md "Checksums"), in
 * process over the in-memory receiver (which answers by the code asked, as the real one):
 * - a receiver from before the code (it ignores the request's code and answers SHA-256 with
 *   0): the filter believes no reply whose echo differs, sends those blocks, asks SHA-256 from
 *   then on, and the replica ends equal to the disk with only a window's worth of blocks sent
 *   beyond the changed ones; the mutant that ignores the echo sends every block, run after run;
 * - a receiver that cannot compute the code asked (`unsupported`): the same fall back;
 * - online verify against either: SHA-256 from the first answer on, exactly the damaged block found;
 * - the filter asks the option's algorithm, and the receiver's answer is by it.
 */
import { Effect, Either, type Scope } from "effect"
import { describe, expect, it } from "vitest"
import * as EventJournal from "../../src/adapters/EventJournal.js"
import type * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as Config from "../../src/domain/Config.js"
import * as Wire from "../../src/protocol/Wire.js"
import type * as Mutants from "../../src/replicator/internal/mutants.js"
import type * as Replicator from "../../src/replicator/Replicator.js"
import { makeWorld as makeWorldOf, startReplicator, type World } from "../support/replicatorWorld.js"

const BS = 4096
const BLOCKS = 64
const WINDOW = 8
const config = Either.getOrThrow(
  Config.make({ blockSize: BS, blockCount: BLOCKS, window: WINDOW, congestionLimit: 1 << 20 })
)
const header = { blockSize: BS, blockCount: BLOCKS, initial: config.initial }
const block = (fill: number) => new Uint8Array(BS).fill(fill)
const CHANGED = [3, 17, 40]

const makeWorld = makeWorldOf(config)

/** Requests as `rewrite` turns them, and the codes the filter asked (before the rewrite). */
const between =
  (rewrite: (request: Wire.ChecksumRequest) => Wire.ChecksumRequest, asked: Array<number>) =>
  (inner: LogReceiver.LogReceiver.Service): LogReceiver.LogReceiver.Service => ({
    connect: (hello) =>
      Effect.map(inner.connect(hello), (connection) => ({
        ...connection,
        requestChecksums: (request) =>
          Effect.suspend(() => {
            asked.push(request.algorithm)
            return connection.requestChecksums(rewrite(request))
          })
      }))
  })

/** A receiver from before the code: it reads no code and answers SHA-256, echoing 0. */
const oldReceiver = (request: Wire.ChecksumRequest) => ({ ...request, algorithm: 0 })
/** A receiver that cannot compute BLAKE3: its code reaches it as one no algorithm has. */
const withoutBlake3 = (request: Wire.ChecksumRequest) =>
  request.algorithm === Wire.DigestCode.blake3 ? { ...request, algorithm: 2 } : request

const start = (
  world: World,
  options: Partial<Replicator.Options>,
  wrap?: (inner: LogReceiver.LogReceiver.Service) => LogReceiver.LogReceiver.Service,
  mutants: Partial<Mutants.Mutants> = {}
) => startReplicator(world, config, options, wrap, mutants)

/** Every block written and replicated, then the run left open (the next start owes every block); `CHANGED` then differ on the disk. */
const replicatedThenChanged = (world: World) =>
  Effect.gen(function* () {
    yield* Effect.scoped(
      Effect.gen(function* () {
        const replicator = yield* start(world, {})
        for (let b = 0; b < BLOCKS; b++) yield* replicator.write(b * BS, block(b + 1))
        yield* replicator.quiesce
      })
    )
    yield* EventJournal.makeMemory(world.store).beginRun(header)
    for (const b of CHANGED) yield* world.disk.write(b * BS, block(0xd0 + b))
    return yield* world.control.durableSeq("d")
  })

const blocksSentAfter = (world: World, seq: number) =>
  Effect.map(world.control.log("d"), (log) =>
    log
      .filter((e) => e.seq > seq && e._tag === "Block")
      .map((e) => (e as Wire.Block).block)
      .sort((a, b) => a - b)
  )

const expectWhole = (world: World) =>
  Effect.gen(function* () {
    for (let b = 0; b < BLOCKS; b++)
      expect(
        Buffer.from(yield* world.control.replicaBlock("d", b)).equals(
          Buffer.from(yield* world.disk.read(b * BS, BS))
        ),
        `block ${b}`
      ).toBe(true)
  })

const run = <A, E>(program: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Effect.scoped(program))

/** A checksum resync after an unclean start through `rewrite`: what was sent and asked. */
const resync = (
  rewrite: (request: Wire.ChecksumRequest) => Wire.ChecksumRequest,
  mutants: Partial<Mutants.Mutants> = {}
) =>
  Effect.gen(function* () {
    const world = yield* makeWorld
    const before = yield* replicatedThenChanged(world)
    const asked: Array<number> = []
    const replicator = yield* start(world, { compareFrom: 1 }, between(rewrite, asked), mutants)
    yield* replicator.quiesce
    return { world, asked, sent: yield* blocksSentAfter(world, before), status: yield* replicator.status }
  })

describe("the block digest's algorithm in the replicator", () => {
  it("asks BLAKE3 by default and SHA-256 with digest sha256; the receiver answers by the code asked", async () => {
    for (const digest of [undefined, "sha256", "blake3"] as const) {
      const { world, asked, sent, status } = await run(
        Effect.gen(function* () {
          const world = yield* makeWorld
          const before = yield* replicatedThenChanged(world)
          const asked: Array<number> = []
          const replicator = yield* start(
            world,
            { compareFrom: 1, digest },
            between((r) => r, asked)
          )
          yield* replicator.quiesce
          yield* expectWhole(world)
          return {
            world,
            asked,
            sent: yield* blocksSentAfter(world, before),
            status: yield* replicator.status
          }
        })
      )
      const algorithm = digest ?? "blake3"
      expect(world).toBeDefined()
      expect(new Set(asked), String(digest)).toEqual(new Set([Wire.DigestCode[algorithm]]))
      expect(sent).toEqual(CHANGED)
      expect(status.checksums).toEqual({ compared: BLOCKS, matched: BLOCKS - 3, sent: 3, algorithm })
    }
  })

  for (const [name, rewrite] of [
    ["a receiver from before the code (SHA-256 answered, echo 0)", oldReceiver],
    ["a receiver that refuses BLAKE3 as unsupported", withoutBlake3]
  ] as const) {
    it(`falls back to SHA-256 for ${name}: the replica ends equal, a window at most sent beyond the changed blocks`, async () => {
      await run(
        Effect.gen(function* () {
          const { world, asked, sent, status } = yield* resync(rewrite)
          yield* expectWhole(world)
          // BLAKE3 until the first answer; every request after it asks SHA-256.
          expect(asked[0]).toBe(Wire.DigestCode.blake3)
          const first = asked.indexOf(Wire.DigestCode.sha256)
          expect(first).toBeGreaterThan(0)
          expect(asked.slice(first).every((code) => code === Wire.DigestCode.sha256)).toBe(true)
          expect(status.checksums.algorithm).toBe("sha256")
          for (const b of CHANGED) expect(sent).toContain(b)
          // The requests asked BLAKE3 before the first answer: a window of blocks at most.
          expect(sent.length).toBeLessThanOrEqual(CHANGED.length + WINDOW)
          expect(status.checksums).toMatchObject({ compared: BLOCKS, sent: sent.length })
        })
      )
    })
  }

  it("MUTANT: a filter that ignores the echo compares SHA-256 replies with BLAKE3 digests and sends every block", async () => {
    await run(
      Effect.gen(function* () {
        const { world, sent, status } = yield* resync(oldReceiver, { ignoreDigestEcho: true })
        // Caught: every block mismatched (the check above allows a window beyond the changed ones).
        expect(sent.length).toBe(BLOCKS)
        expect(status.checksums).toEqual({ compared: BLOCKS, matched: 0, sent: BLOCKS, algorithm: "blake3" })
        yield* expectWhole(world)
      })
    )
  })

  for (const [name, rewrite] of [
    ["a receiver from before the code", oldReceiver],
    ["a receiver without BLAKE3", withoutBlake3]
  ] as const) {
    it(`online verify against ${name}: SHA-256 from the first answer on, exactly the damaged block found`, async () => {
      await run(
        Effect.gen(function* () {
          const world = yield* makeWorld
          const asked: Array<number> = []
          const replicator = yield* start(world, {}, between(rewrite, asked))
          for (let b = 0; b < BLOCKS; b++) yield* replicator.write(b * BS, block(b + 1))
          yield* replicator.quiesce
          yield* world.control.overwrite("d", 29, block(0xee))
          const result = yield* replicator.verify({ resync: true })
          expect(result).toMatchObject({
            blocks: BLOCKS,
            verified: BLOCKS,
            differing: [29],
            algorithm: "sha256"
          })
          expect(asked[0]).toBe(Wire.DigestCode.blake3)
          expect(asked.at(-1)).toBe(Wire.DigestCode.sha256)
          yield* replicator.quiesce
          yield* expectWhole(world)
        })
      )
    })
  }
})

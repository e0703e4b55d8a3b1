/**
 * The VirtualDisk contract, run against every layer: round trips against a model,
 * sparse zeros, typed rejections without partial I/O, concurrent positional I/O.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Layer, type Scope } from "effect"
import fc from "fast-check"
import type * as Geometry from "../../src/domain/Geometry.js"
import * as VirtualDisk from "../../src/adapters/VirtualDisk.js"

const geometry: Geometry.Geometry = { blockSize: 4096, blockCount: 16 }
const diskBytes = geometry.blockSize * geometry.blockCount
const runs = (n: number) => Math.max(1, Math.round(n * Number(process.env.CDP_SYNC_RUNS_FACTOR ?? 1)))

const tempDir = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-disk-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

/** A way to get a fresh disk of a geometry; the scope owns whatever it needs. */
type Open = (
  geometry: Geometry.Geometry
) => Effect.Effect<VirtualDisk.VirtualDisk.Service, unknown, Scope.Scope>

const fromLayer = <E>(layer: Layer.Layer<VirtualDisk.VirtualDisk, E>) =>
  Effect.map(Layer.build(layer), (ctx) => Context.get(ctx, VirtualDisk.VirtualDisk))

const layers: ReadonlyArray<readonly [string, Open]> = [
  ["layerMemory", (g) => fromLayer(VirtualDisk.layerMemory(g))],
  [
    "layerFile",
    (g) =>
      Effect.flatMap(tempDir, (dir) =>
        fromLayer(VirtualDisk.layerFile({ path: path.join(dir, "disk.img"), geometry: g, create: true }))
      )
  ],
  [
    "layerFile (thread-pool writes)",
    (g) =>
      Effect.flatMap(tempDir, (dir) =>
        fromLayer(
          VirtualDisk.layerFile({
            path: path.join(dir, "disk.img"),
            geometry: g,
            create: true,
            blockingWrites: false
          })
        )
      )
  ]
]

const pattern = (seed: number, length: number): Uint8Array => {
  const out = new Uint8Array(length)
  let x = (seed * 2654435761) >>> 0 || 1
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** Byte-array equality that stays fast on megabytes (toEqual walks element by element). */
const expectBytes = (actual: Uint8Array, expected: Uint8Array) => {
  expect(actual.length).toBe(expected.length)
  if (Buffer.compare(actual, expected) === 0) return
  const at = actual.findIndex((b, i) => b !== expected[i])
  expect.fail(`bytes differ first at index ${at}: got ${actual[at]}, expected ${expected[at]}`)
}

const sectorRange = (maxSectors: number) =>
  fc
    .tuple(fc.nat({ max: diskBytes / 512 - 1 }), fc.integer({ min: 1, max: maxSectors }))
    .map(([s, n]) => ({ offset: s * 512, length: Math.min(n, diskBytes / 512 - s) * 512 }))

type Op =
  | { readonly _tag: "write"; readonly offset: number; readonly length: number; readonly seed: number }
  /** `writeSync` where the layer has one (`write` where it has none). */
  | { readonly _tag: "writeSync"; readonly offset: number; readonly length: number; readonly seed: number }
  | { readonly _tag: "read"; readonly offset: number; readonly length: number }
  | { readonly _tag: "readInto"; readonly offset: number; readonly length: number; readonly at: number }
  | { readonly _tag: "readBlock"; readonly block: number }
  | { readonly _tag: "flush" }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.tuple(sectorRange(24), fc.nat()).map(([r, seed]): Op => ({ _tag: "write", ...r, seed })),
  fc.tuple(sectorRange(24), fc.nat()).map(([r, seed]): Op => ({ _tag: "writeSync", ...r, seed })),
  sectorRange(24).map((r): Op => ({ _tag: "read", ...r })),
  fc.tuple(sectorRange(24), fc.nat({ max: 700 })).map(([r, at]): Op => ({ _tag: "readInto", ...r, at })),
  fc.nat({ max: geometry.blockCount - 1 }).map((block): Op => ({ _tag: "readBlock", block })),
  fc.constant<Op>({ _tag: "flush" })
)

const contract = (name: string, open: Open) =>
  describe(`VirtualDisk contract: ${name}`, () => {
    it.scoped("exposes its geometry and reads untouched sectors and blocks as zeros", () =>
      Effect.gen(function* () {
        const disk = yield* open(geometry)
        expect(disk.geometry).toEqual(geometry)
        expectBytes(yield* disk.read(0, diskBytes), new Uint8Array(diskBytes))
        expectBytes(yield* disk.readBlock(geometry.blockCount - 1), new Uint8Array(geometry.blockSize))
      })
    )

    it.scoped("round trips against a byte-array model (random writes, reads, block reads, flushes)", () =>
      Effect.gen(function* () {
        const disk = yield* open(geometry)
        const model = new Uint8Array(diskBytes)
        // One buffer for every readInto, as a reader that reuses its buffer has it: what the
        // last read left there (or garbage) must not show through, nor bytes beyond `into` change.
        const reused = new Uint8Array(24 * 512 + 701).fill(0xa5)
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 20 }), (ops) =>
              Effect.runPromise(
                Effect.gen(function* () {
                  for (const op of ops) {
                    switch (op._tag) {
                      case "write": {
                        const bytes = pattern(op.seed, op.length)
                        yield* disk.write(op.offset, bytes)
                        model.set(bytes, op.offset)
                        break
                      }
                      case "writeSync": {
                        const bytes = pattern(op.seed, op.length)
                        if (disk.writeSync === undefined) yield* disk.write(op.offset, bytes)
                        // Done when it returns: the caller may change its buffer at once.
                        else expect(disk.writeSync(op.offset, bytes)).toBeUndefined()
                        bytes.fill(0xdd)
                        model.set(pattern(op.seed, op.length), op.offset)
                        break
                      }
                      case "read":
                        expectBytes(
                          yield* disk.read(op.offset, op.length),
                          model.slice(op.offset, op.offset + op.length)
                        )
                        break
                      case "readInto": {
                        const after = reused.slice(op.at + op.length)
                        const before = reused.slice(0, op.at)
                        yield* disk.readInto(op.offset, reused.subarray(op.at, op.at + op.length))
                        expectBytes(
                          reused.subarray(op.at, op.at + op.length),
                          model.slice(op.offset, op.offset + op.length)
                        )
                        expectBytes(reused.subarray(0, op.at), before)
                        expectBytes(reused.subarray(op.at + op.length), after)
                        break
                      }
                      case "readBlock": {
                        const at = op.block * geometry.blockSize
                        expectBytes(yield* disk.readBlock(op.block), model.slice(at, at + geometry.blockSize))
                        break
                      }
                      case "flush":
                        yield* disk.flush
                    }
                  }
                  expectBytes(yield* disk.read(0, diskBytes), model)
                })
              )
            ),
            { numRuns: runs(50) }
          )
        )
      })
    )

    it.scoped("returns fresh buffers: mutating a read or a written buffer does not change the disk", () =>
      Effect.gen(function* () {
        const disk = yield* open(geometry)
        const bytes = pattern(7, 1024)
        yield* disk.write(512, bytes)
        bytes.fill(0xdd)
        const first = yield* disk.read(512, 1024)
        first.fill(0xee)
        const block = yield* disk.readBlock(0)
        block.fill(0xee)
        expectBytes(yield* disk.read(512, 1024), pattern(7, 1024))
      })
    )

    it.scoped("rejects misaligned, empty, negative, non-integer and out-of-range requests without I/O", () =>
      Effect.gen(function* () {
        const disk = yield* open(geometry)
        const reason = <A>(effect: Effect.Effect<A, VirtualDisk.DiskError>) =>
          Effect.map(Effect.either(effect), (e) =>
            Either.isLeft(e) && e.left._tag === "DiskRangeError" ? e.left.reason : "accepted"
          )
        expect(yield* reason(disk.read(1, 512))).toBe("misaligned")
        expect(yield* reason(disk.read(512, 100))).toBe("misaligned")
        expect(yield* reason(disk.read(0, 0))).toBe("empty")
        expect(yield* reason(disk.read(-512, 512))).toBe("negative")
        expect(yield* reason(disk.read(0.5, 512))).toBe("not-an-integer")
        expect(yield* reason(disk.read(Number.NaN, 512))).toBe("not-an-integer")
        expect(yield* reason(disk.read(diskBytes, 512))).toBe("beyond-disk")
        expect(yield* reason(disk.read(diskBytes - 512, 1024))).toBe("beyond-disk")
        const into = new Uint8Array(1024).fill(0x5a)
        expect(yield* reason(disk.readInto(1, into.subarray(0, 512)))).toBe("misaligned")
        expect(yield* reason(disk.readInto(512, into.subarray(0, 100)))).toBe("misaligned")
        expect(yield* reason(disk.readInto(0, into.subarray(0, 0)))).toBe("empty")
        expect(yield* reason(disk.readInto(-512, into.subarray(0, 512)))).toBe("negative")
        expect(yield* reason(disk.readInto(diskBytes - 512, into))).toBe("beyond-disk")
        expectBytes(into, new Uint8Array(1024).fill(0x5a))
        expect(yield* reason(disk.write(256, new Uint8Array(512)))).toBe("misaligned")
        expect(yield* reason(disk.write(0, new Uint8Array(0)))).toBe("empty")
        expect(yield* reason(disk.readBlock(-1))).toBe("not-a-block")
        expect(yield* reason(disk.readBlock(geometry.blockCount))).toBe("not-a-block")
        expect(yield* reason(disk.readBlock(1.5))).toBe("not-a-block")
        // A write running past the end is refused whole: nothing lands in the last sector.
        const tail = pattern(3, 1024)
        expect(yield* reason(disk.write(diskBytes - 512, tail))).toBe("beyond-disk")
        expect(yield* reason(disk.write(diskBytes - 1024, pattern(3, 1000)))).toBe("misaligned")
        if (disk.writeSync !== undefined) {
          const reasonSync = (offset: number, bytes: Uint8Array) => {
            const error = disk.writeSync!(offset, bytes)
            return error?._tag === "DiskRangeError" ? error.reason : "accepted"
          }
          expect(reasonSync(256, new Uint8Array(512))).toBe("misaligned")
          expect(reasonSync(0, new Uint8Array(0))).toBe("empty")
          expect(reasonSync(-512, new Uint8Array(512))).toBe("negative")
          expect(reasonSync(0.5, new Uint8Array(512))).toBe("not-an-integer")
          expect(reasonSync(diskBytes - 512, tail)).toBe("beyond-disk")
        }
        expectBytes(yield* disk.read(diskBytes - 1024, 1024), new Uint8Array(1024))
        const error = yield* Effect.flip(disk.read(512, 100))
        expect(error).toMatchObject({ _tag: "DiskRangeError", offset: 512, length: 100, diskBytes })
      })
    )

    it.scoped("serves many concurrent fibers: positional writes then reads give the right bytes", () =>
      Effect.gen(function* () {
        const big: Geometry.Geometry = { blockSize: 4096, blockCount: 256 }
        const disk = yield* open(big)
        const sectors = (big.blockSize * big.blockCount) / 512
        // 512 fibers, each owning a distinct run of sectors of varying length across block boundaries.
        const regions = Array.from({ length: 512 }, (_, i) => ({ offset: ((i * 37) % sectors) * 512, i }))
          .sort((a, b) => a.offset - b.offset)
          .map((r, k, all) => ({
            ...r,
            length: Math.min((all[k + 1]?.offset ?? sectors * 512) - r.offset, 3 * 512)
          }))
          .filter((r) => r.length > 0)
        const even = regions.filter((_, k) => k % 2 === 0)
        const odd = regions.filter((_, k) => k % 2 === 1)
        yield* Effect.all(
          even.map((r) => disk.write(r.offset, pattern(r.i, r.length))),
          { concurrency: "unbounded", discard: true }
        )
        // Reads of the even regions race with writes of the odd ones: every read sees only its own bytes.
        const reads = yield* Effect.all(
          [
            ...even.map((r) => Effect.map(disk.read(r.offset, r.length), (bytes) => ({ r, bytes }))),
            ...odd.map((r) => Effect.as(disk.write(r.offset, pattern(r.i, r.length)), undefined))
          ],
          { concurrency: "unbounded" }
        )
        for (const read of reads)
          if (read !== undefined) expectBytes(read.bytes, pattern(read.r.i, read.r.length))
        const oddReads = yield* Effect.all(
          odd.map((r) => disk.read(r.offset, r.length)),
          { concurrency: "unbounded" }
        )
        oddReads.forEach((bytes, k) => {
          expectBytes(bytes, pattern(odd[k]!.i, odd[k]!.length))
        })
        yield* disk.flush
        const blocks = yield* Effect.all(
          Array.from({ length: big.blockCount }, (_, b) => disk.readBlock(b)),
          { concurrency: "unbounded" }
        )
        const whole = yield* disk.read(0, big.blockSize * big.blockCount)
        blocks.forEach((block, b) => {
          expectBytes(block, whole.subarray(b * big.blockSize, (b + 1) * big.blockSize))
        })
      })
    )
  })

for (const [name, open] of layers) contract(name, open)

describe("VirtualDisk layerMemory", () => {
  it.effect("is sparse: reads allocate nothing, a write allocates only the blocks it touches", () =>
    Effect.gen(function* () {
      const huge: Geometry.Geometry = { blockSize: 1024 * 1024, blockCount: 2 ** 20 }
      const disk = VirtualDisk.makeMemory(huge)
      expectBytes(yield* disk.read(2 ** 39, 1024 * 1024), new Uint8Array(1024 * 1024))
      expectBytes(yield* disk.readBlock(2 ** 20 - 1), new Uint8Array(1024 * 1024))
      expect(disk.allocatedBlocks()).toBe(0)
      yield* disk.write(3 * 1024 * 1024 - 512, new Uint8Array(1024).fill(1))
      expect(disk.allocatedBlocks()).toBe(2)
    })
  )
})

describe("VirtualDisk layerFile", () => {
  const fileLayer = (file: string, g: Geometry.Geometry, create: boolean) =>
    fromLayer(VirtualDisk.layerFile({ path: file, geometry: g, create }))

  it.scoped("writes synchronously when its writes block (the default), and only then", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "disk.img")
      const blocking = yield* fileLayer(file, geometry, true)
      expect(blocking.writeSync).toBeTypeOf("function")
      const pooled = yield* fromLayer(
        VirtualDisk.layerFile({ path: file, geometry, create: false, blockingWrites: false })
      )
      expect(pooled.writeSync).toBeUndefined()
      // The bytes are in the file when writeSync returns: another handle reads them.
      expect(blocking.writeSync!(4096, pattern(9, 1024))).toBeUndefined()
      expectBytes(yield* pooled.read(4096, 1024), pattern(9, 1024))
    })
  )

  it.scoped("creates a sparse image of exactly the geometry's size", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "disk.img")
      const g: Geometry.Geometry = { blockSize: 65536, blockCount: 4096 }
      yield* Effect.scoped(fileLayer(file, g, true))
      const stat = yield* Effect.promise(() => fs.stat(file))
      expect(stat.size).toBe(g.blockSize * g.blockCount)
      // 256 MiB logical; a sparse file allocates (almost) nothing.
      expect(stat.blocks * 512).toBeLessThan(1024 * 1024)
    })
  )

  it.scoped("keeps its bytes across close and reopen", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "disk.img")
      yield* Effect.scoped(
        Effect.flatMap(fileLayer(file, geometry, true), (disk) =>
          Effect.zipRight(disk.write(8192, pattern(11, 8192)), disk.flush)
        )
      )
      const bytes = yield* Effect.scoped(
        Effect.flatMap(fileLayer(file, geometry, false), (disk) => disk.read(8192, 8192))
      )
      expectBytes(bytes, pattern(11, 8192))
    })
  )

  it.scoped("refuses an existing image whose size does not match the geometry", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "disk.img")
      yield* Effect.scoped(fileLayer(file, geometry, true))
      const error = yield* Effect.flip(
        Effect.scoped(fileLayer(file, { blockSize: 4096, blockCount: 17 }, true))
      )
      expect(error).toMatchObject({
        _tag: "DiskGeometryMismatch",
        path: file,
        expectedBytes: 17 * 4096,
        actualBytes: diskBytes
      })
      // The mismatched open left the image alone.
      expect((yield* Effect.promise(() => fs.stat(file))).size).toBe(diskBytes)
    })
  )

  it.scoped("fails with DiskIoError when the image is absent and create is false", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const error = yield* Effect.flip(Effect.scoped(fileLayer(path.join(dir, "none.img"), geometry, false)))
      expect(error._tag).toBe("DiskIoError")
      expect(error).toMatchObject({ op: "open" })
    })
  )

  it.scoped("reports I/O failures after the handle is gone as DiskIoError", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "disk.img")
      const disk = yield* Effect.scoped(fileLayer(file, geometry, true))
      const error = yield* Effect.flip(disk.read(0, 512))
      expect(error).toMatchObject({ _tag: "DiskIoError", op: "read", path: file })
      // The synchronous write returns its failure, it never throws.
      expect(disk.writeSync?.(0, new Uint8Array(512))).toMatchObject({
        _tag: "DiskIoError",
        op: "write",
        path: file
      })
    })
  )
})

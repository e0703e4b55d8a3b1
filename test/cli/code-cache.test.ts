/**
 * The command line's code cache (`src/cli/internal/codeCache.ts`), a file read from disk at
 * every start: V8 takes its data without a checksum, so a damaged cache must never reach it.
 * For a small bundle written as the build writes one: the cache made here is taken and runs
 * the same; a corruption matrix (missing, cut at every header edge, a flipped byte in each
 * part, bytes appended, another bundle's, valid digests over data V8 refuses, the bundle
 * changed after) where each is ignored and the bundle compiled as usual; and a seeded corpus
 * and a property over random damage (flips, cuts, bytes added): loading never throws, the
 * bundle behaves the same, and the cache is taken exactly when it is intact. A loader that
 * does not check the data's digest (`dataUnchecked`) is caught.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import {
  CACHE_HEADER_BYTES,
  CodeCacheMutants,
  loadBundle,
  loadCached,
  cacheFileOf,
  makeCache,
  WRAPPER
} from "../../src/cli/internal/codeCache.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-code-cache-")

afterEach(() => {
  CodeCacheMutants.dataUnchecked = false
})

let bundles = 0
/** A bundle as the build writes one (wrapped, strict); `seed` makes its source and behaviour its own. */
const writeBundle = (seed: number): { file: string; expected: number } => {
  const file = path.join(tempDir(), `main-${bundles++}.cjs`)
  const body = `"use strict";
const table = []
for (let i = 0; i < 500; i++) table.push(((i + ${seed}) * 2654435761) % 1009)
const sum = (xs) => xs.reduce((a, b) => a + b, 0)
exports.value = () => sum(table.map((x, i) => (i % 3 === 0 ? x * 2 : x))) + ${seed}
exports.main = () => undefined`
  fs.writeFileSync(file, `${WRAPPER.head}${body}\n${WRAPPER.tail}\n`)
  let expected = 0
  for (let i = 0; i < 500; i++) {
    const x = ((i + seed) * 2654435761) % 1009
    expected += i % 3 === 0 ? x * 2 : x
  }
  return { file, expected: expected + seed }
}

const bundleValue = (loaded: ReturnType<typeof loadBundle>) =>
  (loaded.exports as unknown as { value: () => number }).value()

/** Loads `file` with `cache` (or none): whether the cache was taken, and the bundle's value. */
const load = (file: string, cache: Buffer | undefined) => {
  const loaded = loadBundle(file, cache)
  return { cached: loaded.cached, value: bundleValue(loaded) }
}

const flip = (b: Buffer, at: number): Buffer => {
  const c = Buffer.from(b)
  c[at] = c[at]! ^ 0x5a
  return c
}

describe("the command line's code cache", () => {
  it("made by this Node, it is taken, and the bundle runs the same; read from beside the bundle", () => {
    const { file, expected } = writeBundle(1)
    const cache = makeCache(file)
    expect(load(file, cache)).toEqual({ cached: true, value: expected })
    fs.writeFileSync(cacheFileOf(file), cache)
    const loaded = loadCached(file)
    expect([loaded.cached, bundleValue(loaded)]).toEqual([true, expected])
  })

  it("corruption matrix: each damage is ignored and the bundle compiled as usual", () => {
    const { file, expected } = writeBundle(2)
    const cache = makeCache(file)
    const other = makeCache(writeBundle(3).file)
    const rows: ReadonlyArray<readonly [string, Buffer | undefined]> = [
      ["missing", undefined],
      ["empty", Buffer.alloc(0)],
      ["cut inside the bundle's digest", cache.subarray(0, 31)],
      ["cut after the bundle's digest", cache.subarray(0, 32)],
      ["cut inside the data's digest", cache.subarray(0, 63)],
      ["the header alone", cache.subarray(0, CACHE_HEADER_BYTES)],
      ["cut one byte into the data", cache.subarray(0, CACHE_HEADER_BYTES + 1)],
      ["cut one byte short", cache.subarray(0, cache.length - 1)],
      ["a byte appended", Buffer.concat([cache, Buffer.of(0)])],
      ["flip in the bundle's digest (first byte)", flip(cache, 0)],
      ["flip in the bundle's digest (last byte)", flip(cache, 31)],
      ["flip in the data's digest", flip(cache, 40)],
      ["flip in the data (first byte)", flip(cache, CACHE_HEADER_BYTES)],
      ["flip in the data (middle)", flip(cache, Math.floor((CACHE_HEADER_BYTES + cache.length) / 2))],
      ["flip in the data (last byte)", flip(cache, cache.length - 1)],
      ["another bundle's cache", other]
    ]
    for (const [name, damaged] of rows)
      expect(load(file, damaged), name).toEqual({ cached: false, value: expected })
    // Valid digests over data V8 refuses (what another Node's cache is to it), for a bundle
    // never compiled in this process (else V8 finds it compiled and reads no data at all).
    const fresh = writeBundle(6)
    const garbage = Buffer.alloc(4096, 0xa5)
    const forged = Buffer.concat([
      createHash("sha256").update(fs.readFileSync(fresh.file)).digest(),
      createHash("sha256").update(garbage).digest(),
      garbage
    ])
    expect(load(fresh.file, forged)).toEqual({ cached: false, value: fresh.expected })
    // The bundle changed after its cache was made (same length, other code): compiled afresh.
    const changed = fs.readFileSync(file, "latin1").replace("+ 2\n", "+ 7\n")
    expect(changed.length).toBe(fs.statSync(file).size)
    fs.writeFileSync(file, changed, "latin1")
    expect(load(file, cache)).toEqual({ cached: false, value: expected + 5 })
  })

  it("a seeded corpus and a property over random damage: never throws, same behaviour, taken only when intact", () => {
    const { file, expected } = writeBundle(4)
    const cache = makeCache(file)
    const damage = fc.oneof(
      fc
        .array(fc.record({ at: fc.nat(), bits: fc.integer({ min: 1, max: 255 }) }), {
          minLength: 1,
          maxLength: 4
        })
        .map((flips) => (b: Buffer) => {
          const c = Buffer.from(b)
          for (const { at, bits } of flips) c[at % c.length] = c[at % c.length]! ^ bits
          return c
        }),
      fc.nat().map((n) => (b: Buffer) => b.subarray(0, n % b.length)),
      fc.uint8Array({ minLength: 1, maxLength: 64 }).map((extra) => (b: Buffer) => Buffer.concat([b, extra]))
    )
    const property = fc.property(damage, (hurt) => {
      const damaged = hurt(cache)
      const got = load(file, damaged)
      expect(got).toEqual({ cached: damaged.equals(cache), value: expected })
    })
    // The corpus: the same 200 cases every run; then fresh ones.
    fc.assert(property, { seed: 17, numRuns: 200 })
    fc.assert(property, { numRuns: 100 })
  })

  it("catches a loader that takes the data without checking its digest (mutant)", () => {
    const { file } = writeBundle(5)
    const cache = makeCache(file)
    CodeCacheMutants.dataUnchecked = true
    expect(load(file, flip(cache, cache.length - 1)).cached).toBe(true)
  })
})

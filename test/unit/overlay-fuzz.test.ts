/**
 * Issue 17: overlay headers from outside. The committed corpus (test/fixtures/overlay-corpus:
 * headers valid, truncated, flipped, forged with valid CRCs, noise; the verdict each must get
 * in expected.json), then seeded fast-check 4 mutations of them (flip, truncate, splice, a
 * field overwritten with its CRC put back) and random bytes: opening never crashes, and never
 * fails with anything but a typed `OverlayRefused` naming the file and a byte inside it.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { crc32c } from "../../src/internal/crc32c.js"
import { attachOverlay } from "../../src/receiver/internal/overlay.js"
import { OverlayRefused, overlayLayout } from "../../src/receiver/internal/overlayFormat.js"
import { numRuns } from "../support/arbitraries.js"
import { CORPUS_IDENTITY, CrashFile } from "../support/overlay.js"

const CORPUS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/overlay-corpus")
const expected: Record<string, { padTo: number | null; verdict: string }> = JSON.parse(
  fs.readFileSync(path.join(CORPUS, "expected.json"), "utf8")
)
const FULL = overlayLayout(CORPUS_IDENTITY.diskBytes, 4096).fileBytes

const padded = (bytes: Buffer, padTo: number | null): Buffer =>
  padTo === null || bytes.length >= padTo ? bytes : Buffer.concat([bytes, Buffer.alloc(padTo - bytes.length)])

/** What opening `image` as an overlay of the corpus identity gives. */
const verdictOf = async (image: Buffer): Promise<string> => {
  try {
    const overlay = await attachOverlay(
      new CrashFile(image, Number.POSITIVE_INFINITY, Math.random),
      "corpus.overlay",
      CORPUS_IDENTITY
    )
    await overlay.close()
    return "opened"
  } catch (e) {
    if (!(e instanceof OverlayRefused)) throw e
    if (e.file !== "corpus.overlay" || !(e.offset >= 0 && e.offset <= Math.max(image.length, FULL)))
      throw new Error(`a refusal naming ${e.file} at ${e.offset}`)
    return `refused ${e.reason} at ${e.offset}`
  }
}

const names = Object.keys(expected).sort()
const bytesOf = (name: string) => fs.readFileSync(path.join(CORPUS, `${name}.bin`))

type Mutation =
  | { readonly _tag: "flip"; readonly at: number; readonly mask: number }
  | { readonly _tag: "truncate"; readonly at: number }
  | { readonly _tag: "splice"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly _tag: "field"; readonly at: number; readonly value: bigint }

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    _tag: fc.constant("flip" as const),
    at: fc.nat({ max: 4700 }),
    mask: fc.integer({ min: 1, max: 255 })
  }),
  fc.record({ _tag: fc.constant("truncate" as const), at: fc.nat({ max: FULL }) }),
  fc.record({
    _tag: fc.constant("splice" as const),
    at: fc.nat({ max: 4700 }),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 64 })
  }),
  // A header field (every 8 bytes up to the disk id) overwritten, the CRC put back: only the checks catch it.
  fc.record({
    _tag: fc.constant("field" as const),
    at: fc.nat({ max: 8 }).map((k) => k * 8),
    value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })
  })
)

const mutate = (image: Buffer, m: Mutation): Buffer => {
  const b = Buffer.from(image)
  switch (m._tag) {
    case "flip":
      if (m.at < b.length) b[m.at]! ^= m.mask
      return b
    case "truncate":
      return b.subarray(0, Math.min(m.at, b.length))
    case "splice":
      b.set(m.bytes.subarray(0, Math.max(0, b.length - m.at)), Math.min(m.at, b.length))
      return b
    case "field":
      if (b.length >= 4096) {
        b.writeBigUInt64LE(m.value, m.at)
        b.writeUInt32LE(crc32c(b.subarray(0, 4092)), 4092)
      }
      return b
  }
}

describe("overlay headers from outside", () => {
  it("the corpus gets the verdicts in expected.json", async () => {
    const got: Record<string, string> = {}
    for (const name of names) got[name] = await verdictOf(padded(bytesOf(name), expected[name]!.padTo))
    expect(got).toEqual(Object.fromEntries(names.map((n) => [n, expected[n]!.verdict])))
  })

  it("mutated corpus cases and random bytes are opened or refused with a typed error, never a crash", async () => {
    const seed = Number(process.env.CDP_SYNC_FUZZ_SEED ?? 1717)
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...names),
        fc.array(mutation, { minLength: 1, maxLength: 3 }),
        async (name, ms) => {
          const image = ms.reduce(mutate, padded(bytesOf(name), expected[name]!.padTo))
          const verdict = await verdictOf(image)
          // Only a header and size left exactly valid may open (a mutation that changed nothing, or bitmap noise
          // that happens to be a zero page).
          if (verdict === "opened") expect(image.length).toBe(FULL)
        }
      ),
      { numRuns: numRuns(400), seed }
    )
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 5000 }), fc.boolean(), async (bytes, pad) => {
        const image = padded(Buffer.from(bytes), pad ? FULL : null)
        expect(await verdictOf(image)).toMatch(/^refused /)
      }),
      { numRuns: numRuns(200), seed }
    )
  })
})

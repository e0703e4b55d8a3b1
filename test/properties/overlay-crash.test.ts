/**
 * Issue 17: the overlay survives a crash. The overlay runs on an in-memory file that crashes
 * after a random number of writes and fsyncs, keeping what was fsynced and a random subset of
 * the sectors written since (test/support/overlay.ts). Reopened on what is left, its header
 * and bitmap are accepted, and every 512-byte sector of the disk reads as it was when the
 * last completed flush was called, or as a write issued after that — never zeros or garbage.
 * A flush that writes the bitmap before the data is durable (`bitBeforeData`) is caught.
 */
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { OverlayMutants } from "../../src/receiver/internal/mutants.js"
import { attachOverlay } from "../../src/receiver/internal/overlay.js"
import { CLUSTERS_PER_PAGE, encodeHeader, overlayLayout } from "../../src/receiver/internal/overlayFormat.js"
import { numRuns } from "../support/arbitraries.js"
import { CrashFile, identity, pattern, pointOf, underOf } from "../support/overlay.js"

afterEach(() => {
  OverlayMutants.bitBeforeData = false
})

interface W {
  readonly cluster: number
  readonly sector: number
  readonly sectors: number
}
type Op = { readonly _tag: "writes"; readonly writes: ReadonlyArray<W> } | { readonly _tag: "flush" }

interface Case {
  readonly clusterBytes: number
  readonly pages: number
  readonly extraClusters: number
  readonly ops: ReadonlyArray<Op>
  readonly crashAfter: number
  readonly seed: number
}

const w: fc.Arbitrary<W> = fc.record({
  // Clusters 0–5 and the ones either side of a page edge (when there is one), by index from the end.
  cluster: fc.integer({ min: -4, max: 5 }),
  sector: fc.nat({ max: 7 }),
  sectors: fc.constantFrom(1, 2, 3, 8, 9, 17)
})
const arbitraryCase: fc.Arbitrary<Case> = fc.record({
  clusterBytes: fc.constantFrom(1024, 4096),
  pages: fc.constantFrom(1, 2),
  extraClusters: fc.integer({ min: 2, max: 12 }),
  ops: fc.array(
    fc.oneof(
      {
        weight: 4,
        arbitrary: fc
          .array(w, { minLength: 1, maxLength: 4 })
          .map((writes): Op => ({ _tag: "writes", writes }))
      },
      { weight: 2, arbitrary: fc.constant<Op>({ _tag: "flush" }) }
    ),
    { minLength: 1, maxLength: 12 }
  ),
  crashAfter: fc.nat({ max: 40 }),
  seed: fc.integer()
})

const mulberry = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const run = async (c: Case): Promise<void> => {
  const cb = c.clusterBytes
  // Two pages only with small clusters: the in-memory file stays a few MiB.
  const pages = cb === 4096 ? 1 : c.pages
  const diskBytes = ((pages - 1) * CLUSTERS_PER_PAGE + c.extraClusters) * cb
  const clusters = diskBytes / cb
  const id = identity(diskBytes)
  const layout = overlayLayout(diskBytes, cb)
  const image = Buffer.concat([encodeHeader(id, cb), Buffer.alloc(layout.fileBytes - 4096)])
  const point = pointOf(diskBytes)
  const under = underOf(point)
  const file = new CrashFile(image, c.crashAfter, mulberry(c.seed))
  const overlay = await attachOverlay(file, "overlay", id)

  const model = Buffer.from(point)
  /** The disk as of the last completed flush's call, and how many writes were issued before it. */
  let must = Buffer.from(point)
  let mustMark = 0
  const issued: Array<{ offset: number; bytes: Buffer }> = []
  let tag = 0
  const placeOf = (x: W) => {
    // −4…−1: the clusters either side of the page edge (two pages) or the last ones (one page).
    const named =
      x.cluster >= 0 ? x.cluster : pages > 1 ? CLUSTERS_PER_PAGE + 2 + x.cluster : clusters + x.cluster
    const offset = (((named % clusters) + clusters) % clusters) * cb + Math.min(x.sector * 512, cb - 512)
    return { offset, length: Math.min(x.sectors * 512, diskBytes - offset) }
  }
  for (const o of c.ops) {
    if (file.crashImage !== undefined) break
    if (o._tag === "flush") {
      const snapshot = Buffer.from(model)
      const mark = issued.length
      const done = await overlay.flush().then(
        () => true,
        () => false
      )
      if (done) {
        must = snapshot
        mustMark = mark
      }
      continue
    }
    const writes = o.writes.map((x) => {
      const { offset, length } = placeOf(x)
      return { offset, bytes: pattern(++tag, length) }
    })
    for (const x of writes) {
      x.bytes.copy(model, x.offset)
      issued.push(x)
    }
    // Some at once (one write each), some as one request.
    if (writes.length > 2) await Promise.allSettled(writes.map((x) => overlay.write([x], under)))
    else await overlay.write(writes, under).catch(() => undefined)
  }
  // Not crashed yet: the power goes now.
  if (file.crashImage === undefined) file.crash()
  const since = issued.slice(mustMark)

  const after = await attachOverlay(
    new CrashFile(file.crashImage!, Number.POSITIVE_INFINITY, Math.random),
    "overlay",
    id
  )
  const disk = Buffer.from(await after.read(0, diskBytes, under))
  for (let s = 0; s < diskBytes; s += 512) {
    const got = disk.subarray(s, s + 512)
    if (got.equals(must.subarray(s, s + 512))) continue
    const allowed = since.some(
      (x) =>
        x.offset <= s &&
        s + 512 <= x.offset + x.bytes.length &&
        got.equals(x.bytes.subarray(s - x.offset, s - x.offset + 512))
    )
    if (!allowed)
      throw new Error(
        `sector at byte ${s} (cluster ${Math.floor(s / cb)}) reads as neither its flushed state nor a later write (${got.every((b) => b === 0) ? "zeros" : "other bytes"})`
      )
  }
}

describe("the overlay after a crash", () => {
  it("every sector reads as flushed or as a write issued after; the file reopens", async () => {
    await fc.assert(fc.asyncProperty(arbitraryCase, run), { numRuns: numRuns(60) })
  })

  it("catches the mutant bitBeforeData (a bitmap page persisted before its data is durable)", async () => {
    OverlayMutants.bitBeforeData = true
    const result = await fc.check(fc.asyncProperty(arbitraryCase, run), { numRuns: 300, seed: 4 })
    expect(result.failed).toBe(true)
    expect(String(result.errorInstance)).toMatch(/neither its flushed state nor a later write/)
  })
})

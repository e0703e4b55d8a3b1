/**
 * Issue 17: the overlay of a writable mount (src/receiver/internal/overlay.ts) against a
 * model: the point's bytes with every write laid over them in order. Random sequences of
 * writes (512-granular, around every cluster and bitmap-page edge, on disks that end inside a
 * cluster), reads, flushes, close-and-reopen, and groups of requests issued at once
 * (Promise.all) on the same and neighbouring clusters; every read, and the whole disk at the
 * end, equals the model. A partial write without copy-on-write and requests on one cluster
 * left to run side by side are caught.
 */
import * as path from "node:path"
import fc from "fast-check"
import { afterEach, describe, expect, it } from "vitest"
import { OverlayMutants } from "../../src/receiver/internal/mutants.js"
import { type Overlay, openOverlay, tuning } from "../../src/receiver/internal/overlay.js"
import { CLUSTERS_PER_PAGE } from "../../src/receiver/internal/overlayFormat.js"
import { numRuns } from "../support/arbitraries.js"
import { identity, pattern, pointOf, underOf } from "../support/overlay.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-overlay-prop-", "each")

afterEach(() => {
  OverlayMutants.partialWithoutCopy = false
  OverlayMutants.clustersUngated = false
  tuning.clusterBytes = 4096
})

/** A range named by an edge of the layout (`anchor`), moved by whole sectors. */
interface Place {
  readonly anchor: number
  readonly delta: number
  readonly sectors: number
}
type Item =
  | { readonly _tag: "write"; readonly at: ReadonlyArray<Place> }
  | { readonly _tag: "read"; readonly at: Place }
type Op =
  | Item
  | { readonly _tag: "flush" }
  | { readonly _tag: "reopen" }
  | { readonly _tag: "together"; readonly items: ReadonlyArray<Item> }

interface Case {
  readonly clusterBytes: number
  readonly pages: number
  /** Clusters past the last full page, and sectors the disk stops short of its last cluster's end. */
  readonly extraClusters: number
  readonly shortSectors: number
  readonly ops: ReadonlyArray<Op>
}

const place: fc.Arbitrary<Place> = fc.record({
  anchor: fc.nat({ max: 7 }),
  delta: fc.integer({ min: -5, max: 5 }),
  sectors: fc.oneof(
    fc.integer({ min: 1, max: 3 }),
    fc.constantFrom(-1, 0, 1, 2, 3).map((k) => -100 - k)
  )
})
const write = fc.array(place, { minLength: 1, maxLength: 3 }).map((at): Item => ({ _tag: "write", at }))
const read = place.map((at): Item => ({ _tag: "read", at }))
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: write },
  { weight: 2, arbitrary: read },
  { weight: 1, arbitrary: fc.constant<Op>({ _tag: "flush" }) },
  { weight: 1, arbitrary: fc.constant<Op>({ _tag: "reopen" }) },
  {
    weight: 3,
    arbitrary: fc
      .array(fc.oneof({ weight: 3, arbitrary: place.map((p): Item => ({ _tag: "write", at: [p] })) }, read), {
        minLength: 2,
        maxLength: 6
      })
      .map((items): Op => ({ _tag: "together", items }))
  }
)
const arbitraryCase: fc.Arbitrary<Case> = fc.record({
  clusterBytes: fc.constantFrom(1024, 4096),
  pages: fc.constantFrom(1, 2),
  extraClusters: fc.integer({ min: 1, max: 40 }),
  shortSectors: fc.nat({ max: 7 }),
  ops: fc.array(op, { minLength: 1, maxLength: 14 })
})

/** Byte ranges of a place on a disk of `diskBytes` with clusters of `cb` bytes. */
const resolver = (diskBytes: number, cb: number) => {
  const pageEdge = CLUSTERS_PER_PAGE * cb
  const anchors = [
    0,
    cb,
    3 * cb,
    Math.min(pageEdge, diskBytes),
    Math.floor(diskBytes / cb) * cb,
    diskBytes,
    Math.floor(diskBytes / 2 / 512) * 512,
    Math.max(0, pageEdge - cb)
  ]
  return (p: Place): { offset: number; length: number } => {
    // Negative `sectors`: a cluster-relative size (-100 = one cluster, -101 = one and a sector, …).
    const length =
      p.sectors < 0
        ? (cb / 512 +
            (p.sectors === -100
              ? 0
              : p.sectors === -101
                ? 1
                : p.sectors === -102
                  ? -1
                  : p.sectors === -103
                    ? cb / 512 + 1
                    : 2 * (cb / 512))) *
          512
        : p.sectors * 512
    const offset = Math.max(0, Math.min(diskBytes - 512, anchors[p.anchor % anchors.length]! + p.delta * 512))
    return { offset, length: Math.min(length, diskBytes - offset) }
  }
}

const run = async (c: Case): Promise<void> => {
  tuning.clusterBytes = c.clusterBytes
  const cb = c.clusterBytes
  const shortBy = Math.min(c.shortSectors, cb / 512 - 1) * 512
  const diskBytes = ((c.pages - 1) * CLUSTERS_PER_PAGE + c.extraClusters) * cb - shortBy
  const point = pointOf(diskBytes)
  const under = underOf(point)
  const model = Buffer.from(point)
  const at = resolver(diskBytes, cb)
  const id = identity(diskBytes)
  const file = path.join(tempDir(), "overlay")
  let overlay: Overlay = await openOverlay(file, id)
  let tag = 0
  const expectRead = async (offset: number, length: number, expected: Buffer) => {
    const got = Buffer.from(await overlay.read(offset, length, under))
    if (!got.equals(expected)) {
      let k = 0
      while (got[k] === expected[k]) k++
      throw new Error(`read ${offset}+${length} differs from the model at byte ${offset + k}`)
    }
  }
  /** Issues an item now; the model is updated in issue order (requests on a cluster keep that order). */
  const issue = (item: Item): Promise<void> => {
    if (item._tag === "read") {
      const { offset, length } = at(item.at)
      return expectRead(offset, length, Buffer.from(model.subarray(offset, offset + length)))
    }
    const writes = item.at.map((p) => {
      const { offset, length } = at(p)
      return { offset, bytes: pattern(++tag, length) }
    })
    for (const w of writes) w.bytes.copy(model, w.offset)
    return overlay.write(writes, under)
  }
  try {
    for (const o of c.ops) {
      if (o._tag === "flush") await overlay.flush()
      else if (o._tag === "reopen") {
        await overlay.close()
        overlay = await openOverlay(file, id)
      } else if (o._tag === "together") await Promise.all(o.items.map(issue))
      else await issue(o)
    }
    for (let offset = 0; offset < diskBytes; offset += 1 << 20) {
      const length = Math.min(1 << 20, diskBytes - offset)
      await expectRead(offset, length, model.subarray(offset, offset + length))
    }
    await overlay.close()
    overlay = await openOverlay(file, id)
    for (let offset = 0; offset < diskBytes; offset += 1 << 20) {
      const length = Math.min(1 << 20, diskBytes - offset)
      await expectRead(offset, length, model.subarray(offset, offset + length))
    }
  } finally {
    await overlay.close()
  }
}

describe("the overlay against a model", () => {
  it("reads equal the point with every write over it, across flushes, reopens and concurrent requests", async () => {
    await fc.assert(fc.asyncProperty(arbitraryCase, run), { numRuns: numRuns(20) })
  })

  it("two 512-byte writes into one cluster at once, and a read beside them, all land", async () => {
    const diskBytes = 64 * 1024
    const point = pointOf(diskBytes)
    const under = underOf(point)
    const overlay = await openOverlay(path.join(tempDir(), "overlay"), identity(diskBytes))
    try {
      const a = pattern(1, 512)
      const b = pattern(2, 512)
      const [, , , seen] = await Promise.all([
        overlay.write([{ offset: 4096 + 512, bytes: a }], under),
        overlay.write([{ offset: 4096 + 2048, bytes: b }], under),
        overlay.write([{ offset: 8192, bytes: a }], under),
        overlay.read(4096, 8192, under)
      ])
      const expected = Buffer.from(point.subarray(4096, 12288))
      a.copy(expected, 512)
      b.copy(expected, 2048)
      a.copy(expected, 4096)
      expect(Buffer.from(seen).equals(expected)).toBe(true)
      expect(Buffer.from(await overlay.read(4096, 8192, under)).equals(expected)).toBe(true)
    } finally {
      await overlay.close()
    }
  })

  for (const mutant of ["partialWithoutCopy", "clustersUngated"] as const)
    it(`catches the mutant ${mutant}`, async () => {
      OverlayMutants[mutant] = true
      const result = await fc.check(fc.asyncProperty(arbitraryCase, run), { numRuns: 60, seed: 17 })
      expect(result.failed).toBe(true)
    })
})

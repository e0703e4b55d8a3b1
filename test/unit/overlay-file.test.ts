/**
 * Issue 17: the overlay file (src/receiver/internal/overlayFormat.ts). The corruption matrix:
 * a byte flipped in the header, in a written and an unwritten bitmap page, in the data; the
 * file truncated, extended, deleted; headers and pages forged with valid CRCs — each with its
 * outcome (refused as damage or as another disk/point/geometry, naming the file and byte, the
 * file left as it was; or, for data bytes, which carry no checksum, read as they are). Paths
 * that are not regular files are refused; a fresh overlay of a 1 TiB disk is a few KiB on
 * disk; a second open is refused while the first holds the lock (`lockNotChecked` is caught),
 * and a lock left by a dead process is taken over.
 */
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { crc32c } from "../../src/internal/crc32c.js"
import { OverlayMutants } from "../../src/receiver/internal/mutants.js"
import { openOverlay, tuning } from "../../src/receiver/internal/overlay.js"
import {
  CLUSTERS_PER_PAGE,
  encodePage,
  type OverlayIdentity,
  OverlayRefused,
  overlayLayout,
  PAGE_BYTES,
  pageOffset
} from "../../src/receiver/internal/overlayFormat.js"
import { identity, pattern, pointOf, underOf } from "../support/overlay.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-overlay-file-", "each")

afterEach(() => {
  tuning.clusterBytes = 4096
  OverlayMutants.lockNotChecked = false
})

// Three bitmap pages of 1 KiB clusters: pages 0 and 2 written, page 1 a hole.
const CB = 1024
const DISK = (2 * CLUSTERS_PER_PAGE + 8) * CB
const ID = identity(DISK)
const layout = overlayLayout(DISK, CB)
const point = pointOf(DISK)
const under = underOf(point)
const WRITES = [
  { offset: CB + 512, bytes: pattern(1, 512) },
  { offset: (2 * CLUSTERS_PER_PAGE + 3) * CB, bytes: pattern(2, 3 * CB) }
]

/** A closed overlay holding `WRITES`, in a fresh directory. */
const made = async (): Promise<string> => {
  tuning.clusterBytes = CB
  const file = path.join(tempDir(), "disk.overlay")
  const overlay = await openOverlay(file, ID)
  await overlay.write(WRITES, under)
  await overlay.close()
  return file
}

/** Rewrites header bytes and puts a valid CRC back: a forgery only the fields can catch. */
const forge = (file: string, edit: (header: Buffer) => void): void => {
  const fd = fs.openSync(file, "r+")
  const header = Buffer.alloc(4096)
  fs.readSync(fd, header, 0, 4096, 0)
  edit(header)
  header.writeUInt32LE(crc32c(header.subarray(0, 4092)), 4092)
  fs.writeSync(fd, header, 0, 4096, 0)
  fs.closeSync(fd)
}

const flipAt = (file: string, at: number): void => {
  const fd = fs.openSync(file, "r+")
  const b = Buffer.alloc(1)
  fs.readSync(fd, b, 0, 1, at)
  b[0]! ^= 0x5a
  fs.writeSync(fd, b, 0, 1, at)
  fs.closeSync(fd)
}

const refusal = async (file: string, id: OverlayIdentity = ID): Promise<OverlayRefused | "opened"> => {
  try {
    const overlay = await openOverlay(file, id)
    await overlay.close()
    return "opened"
  } catch (e) {
    if (e instanceof OverlayRefused) return e
    throw e
  }
}

const page = (p: number) => pageOffset(layout, p)
type Expected = { readonly reason: OverlayRefused["reason"]; readonly offset: number }
const damaged = (offset: number): Expected => ({ reason: "damaged", offset })

const matrix: ReadonlyArray<{
  readonly name: string
  readonly damage: (file: string) => void
  readonly expected: Expected
}> = [
  { name: "header: a flipped magic byte", damage: (f) => flipAt(f, 3), expected: damaged(0) },
  ...[8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 66, 70, 2000, 4091].map((at) => ({
    name: `header: a flipped byte at ${at}`,
    damage: (f: string) => flipAt(f, at),
    expected: damaged(4092)
  })),
  { name: "header: a flipped CRC byte", damage: (f) => flipAt(f, 4094), expected: damaged(4092) },
  {
    name: "bitmap: written page, CRC byte",
    damage: (f) => flipAt(f, page(0) + 1),
    expected: damaged(page(0))
  },
  {
    name: "bitmap: written page, number byte",
    damage: (f) => flipAt(f, page(0) + 4),
    expected: damaged(page(0))
  },
  { name: "bitmap: written page, a bit", damage: (f) => flipAt(f, page(2) + 9), expected: damaged(page(2)) },
  {
    name: "bitmap: a page never written",
    damage: (f) => flipAt(f, page(1) + 300),
    expected: damaged(page(1))
  },
  {
    name: "bitmap: page 0 copied over page 1 (valid CRC, wrong number)",
    damage: (f) => {
      const b = Buffer.alloc(PAGE_BYTES)
      const fd = fs.openSync(f, "r+")
      fs.readSync(fd, b, 0, PAGE_BYTES, page(0))
      fs.writeSync(fd, b, 0, PAGE_BYTES, page(1))
      fs.closeSync(fd)
    },
    expected: damaged(page(1) + 4)
  },
  {
    name: "bitmap: a valid page holding a cluster past the disk's end",
    damage: (f) => {
      const bits = new Uint8Array(PAGE_BYTES - 8)
      const past = layout.clusters - 2 * CLUSTERS_PER_PAGE // the first cluster index past the end, in page 2
      bits[past >> 3]! |= 1 << (past & 7)
      const fd = fs.openSync(f, "r+")
      fs.writeSync(fd, encodePage(2, bits), 0, PAGE_BYTES, page(2))
      fs.closeSync(fd)
    },
    expected: damaged(page(2) + 8 + ((layout.clusters - 2 * CLUSTERS_PER_PAGE) >> 3))
  },
  { name: "truncated to 0 bytes", damage: (f) => fs.truncateSync(f, 0), expected: damaged(0) },
  { name: "truncated inside the header", damage: (f) => fs.truncateSync(f, 100), expected: damaged(100) },
  { name: "truncated after the header", damage: (f) => fs.truncateSync(f, 4096), expected: damaged(4096) },
  {
    name: "truncated by one byte",
    damage: (f) => fs.truncateSync(f, layout.fileBytes - 1),
    expected: damaged(layout.fileBytes - 1)
  },
  {
    name: "extended by a sector",
    damage: (f) => fs.truncateSync(f, layout.fileBytes + 512),
    expected: damaged(layout.fileBytes)
  },
  {
    name: "forged: another seq",
    damage: (f) => forge(f, (h) => h.writeBigUInt64LE(43n, 32)),
    expected: { reason: "other-point", offset: 32 }
  },
  {
    name: "forged: another receive time",
    damage: (f) => forge(f, (h) => h.writeDoubleLE(ID.pointTime + 1, 40)),
    expected: { reason: "other-point", offset: 40 }
  },
  {
    name: "forged: another disk",
    damage: (f) => forge(f, (h) => h.write("vm-2", 66, "utf8")),
    expected: { reason: "other-disk", offset: 66 }
  },
  {
    name: "forged: another disk size",
    damage: (f) => forge(f, (h) => h.writeBigUInt64LE(BigInt(DISK - 512), 24)),
    expected: { reason: "other-geometry", offset: 24 }
  },
  {
    name: "forged: version 2",
    damage: (f) => forge(f, (h) => h.writeUInt32LE(2, 8)),
    expected: { reason: "unsupported", offset: 8 }
  },
  {
    name: "forged: a cluster of 3000 bytes",
    damage: (f) => forge(f, (h) => h.writeUInt32LE(3000, 16)),
    expected: damaged(16)
  },
  {
    name: "forged: a data offset",
    damage: (f) => forge(f, (h) => h.writeBigUInt64LE(BigInt(layout.dataOffset + 4096), 56)),
    expected: damaged(56)
  },
  {
    name: "forged: an empty disk id",
    damage: (f) => forge(f, (h) => h.writeUInt16LE(0, 64)),
    expected: damaged(64)
  },
  {
    name: "forged: a disk id that is not UTF-8",
    damage: (f) => forge(f, (h) => h.writeUInt8(0xff, 66)),
    expected: damaged(66)
  }
]

describe("the overlay file's corruption matrix", () => {
  for (const c of matrix)
    it(`${c.name}: refused (${c.expected.reason} at byte ${c.expected.offset}), the file untouched`, async () => {
      const file = await made()
      c.damage(file)
      const before = fs.readFileSync(file)
      const refused = await refusal(file)
      expect(refused).toBeInstanceOf(OverlayRefused)
      const r = refused as OverlayRefused
      expect({ reason: r.reason, offset: r.offset, file: r.file }).toEqual({ ...c.expected, file })
      expect(r.message).toContain(`${file} refused at byte ${c.expected.offset}`)
      expect(fs.readFileSync(file).equals(before)).toBe(true)
      expect(fs.existsSync(`${file}.lock`)).toBe(false)
    })

  it("a flipped data byte carries no checksum: it reads back as flipped (like a raw image)", async () => {
    const file = await made()
    const at = WRITES[0]!.offset + 7
    flipAt(file, layout.dataOffset + at)
    const overlay = await openOverlay(file, ID)
    try {
      const got = Buffer.from(await overlay.read(at, 1, under))
      expect(got[0]).toBe(WRITES[0]!.bytes[7]! ^ 0x5a)
    } finally {
      await overlay.close()
    }
  })

  it("a deleted overlay is created afresh: the point without the lost writes", async () => {
    const file = await made()
    fs.rmSync(file)
    const overlay = await openOverlay(file, ID)
    try {
      for (const w of WRITES)
        expect(
          Buffer.from(await overlay.read(w.offset, w.bytes.length, under)).equals(
            point.subarray(w.offset, w.offset + w.bytes.length)
          )
        ).toBe(true)
    } finally {
      await overlay.close()
    }
  })

  it("an intact overlay reopens with its writes, and the point elsewhere", async () => {
    const file = await made()
    const overlay = await openOverlay(file, ID)
    try {
      const expected = Buffer.from(point.subarray(0, 4 * CB))
      WRITES[0]!.bytes.copy(expected, WRITES[0]!.offset)
      expect(Buffer.from(await overlay.read(0, 4 * CB, under)).equals(expected)).toBe(true)
      const w = WRITES[1]!
      expect(Buffer.from(await overlay.read(w.offset, w.bytes.length, under)).equals(w.bytes)).toBe(true)
    } finally {
      await overlay.close()
    }
  })
})

describe("opening an overlay", () => {
  it("refuses a directory, a FIFO and a device, creating nothing beside them", async () => {
    const dir = tempDir()
    const fifo = path.join(dir, "fifo")
    execFileSync("mkfifo", [fifo])
    for (const [p, what] of [
      [dir, "a directory"],
      [fifo, "not a regular file"],
      ["/dev/null", "not a regular file"]
    ] as const) {
      const r = await refusal(p)
      expect(r).toBeInstanceOf(OverlayRefused)
      expect((r as OverlayRefused).reason).toBe("not-a-file")
      expect((r as OverlayRefused).detail).toBe(what)
      expect(fs.existsSync(`${p}.lock`)).toBe(false)
    }
  })

  it("a fresh overlay of a 1 TiB disk takes a few KiB on disk", async () => {
    const file = path.join(tempDir(), "big.overlay")
    const id = identity(2 ** 40)
    const overlay = await openOverlay(file, id)
    await overlay.write([{ offset: 2 ** 40 - 4096, bytes: pattern(3, 512) }], async (_, n) =>
      Buffer.alloc(n, 9)
    )
    await overlay.close()
    const st = fs.statSync(file)
    expect(st.size).toBe(overlayLayout(2 ** 40, 4096).fileBytes)
    expect(st.blocks * 512).toBeLessThanOrEqual(64 * 1024)
  })

  it("a second open is refused while the first holds it; after close it opens", async () => {
    const file = await made()
    const first = await openOverlay(file, ID)
    try {
      const r = await refusal(file)
      expect(r).toBeInstanceOf(OverlayRefused)
      expect((r as OverlayRefused).reason).toBe("locked")
    } finally {
      await first.close()
    }
    expect(await refusal(file)).toBe("opened")
  })

  it("catches the mutant lockNotChecked", async () => {
    OverlayMutants.lockNotChecked = true
    const file = await made()
    const first = await openOverlay(file, ID)
    try {
      expect(await refusal(file)).toBe("opened")
    } finally {
      await first.close()
    }
  })

  it("takes over a lock left by a process that is gone", async () => {
    const file = await made()
    const gone = spawnSync(process.execPath, ["-e", "console.log(process.pid)"], { encoding: "utf8" })
    fs.writeFileSync(`${file}.lock`, `${gone.stdout.trim()} 12345\n`)
    expect(await refusal(file)).toBe("opened")
    expect(fs.existsSync(`${file}.lock`)).toBe(false)
  })
})

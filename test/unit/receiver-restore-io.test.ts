/**
 * The I/O under `restore` (issue 17): reads that bypass the page cache (`directReads.ts`) and
 * the image writers (`imageWriter.ts`). A read returns exactly the file's bytes of the range
 * asked for, wherever the range lies against the alignment a direct read needs (property over
 * the edges), direct or through the page cache, and falls back to the page cache when a
 * direct read is refused (`EINVAL`); the buffer pool is bounded. Both writers put every byte
 * where it was asked, run each batch's callbacks once it is over, and report a failing write
 * (`ENOSPC` on /dev/full) as the error it is, releasing the batches' buffers.
 */
import * as fs from "node:fs"
import * as fsp from "node:fs/promises"
import * as path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { ALIGN, BufferPool, ReadFile } from "../../src/receiver/internal/directReads.js"
import {
  HandleWriter,
  type ImageWriter,
  imageWrites,
  WorkerWriter
} from "../../src/receiver/internal/imageWriter.js"
import { tempDirs } from "../support/tempDirs.js"

const tempDir = tempDirs("cdp-restore-io-", "all")

const patterned = (length: number, seed: number): Buffer => {
  const b = Buffer.alloc(length)
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed + (i >> 12)) & 0xff
  return b
}

describe("reads without the page cache (directReads)", () => {
  it("any range of any file, against every alignment edge, direct or not: the file's bytes", async () => {
    const dir = tempDir()
    const sizes = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN + 17]
    const files = sizes.map((size, i) => {
      const file = path.join(dir, `f${i}`)
      fs.writeFileSync(file, patterned(size, i))
      return file
    })
    const edge = fc.oneof(
      fc.integer({ min: 0, max: 4 * ALIGN }),
      fc.integer({ min: -2, max: 2 }).chain((d) => fc.constantFrom(ALIGN + d, 2 * ALIGN + d, 3 * ALIGN + d))
    )
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: sizes.length - 1 }),
        edge,
        fc.nat({ max: 2 * ALIGN + 3 }),
        fc.boolean(),
        fc.constantFrom(ALIGN, 2 * ALIGN, 5 * ALIGN),
        async (f, start, length, direct, bufferBytes) => {
          const bytes = fs.readFileSync(files[f]!)
          const file = await ReadFile.open(files[f]!, direct)
          if (file === undefined) throw new Error("the file was replaced")
          try {
            const pool = new BufferPool(bufferBytes, 1, direct)
            const end = start + length
            const fits = end - start + 2 * ALIGN <= pool.size
            const buf = fits ? await pool.take() : BufferPool.outside(end - start)
            const got = await file.read(start, end, buf, fits && pool.aligned)
            expect(Buffer.compare(got, bytes.subarray(start, Math.min(end, bytes.length)))).toBe(0)
          } finally {
            await file.close()
          }
        }
      ),
      { numRuns: 300 }
    )
  })

  it("a direct read the kernel refuses (EINVAL: memory not aligned) is made through the page cache, and so are the reads after it", async () => {
    const dir = tempDir()
    const name = path.join(dir, "data")
    const bytes = patterned(5 * ALIGN, 7)
    fs.writeFileSync(name, bytes)
    const file = await ReadFile.open(name, true)
    if (file === undefined) throw new Error("the file was replaced")
    try {
      // On a file system without O_DIRECT the file is read through the page cache from the start.
      const direct = file.isDirect
      const pool = new BufferPool(4 * ALIGN, 1, true)
      const aligned = await pool.take()
      expect(
        Buffer.compare(
          await file.read(ALIGN + 3, 3 * ALIGN, aligned, true),
          bytes.subarray(ALIGN + 3, 3 * ALIGN)
        )
      ).toBe(0)
      expect(file.isDirect).toBe(direct)
      // Shared memory from malloc: 16-byte aligned at best, and 1 byte off that.
      const misaligned = BufferPool.outside(8 * ALIGN + 1).subarray(1)
      expect(
        Buffer.compare(await file.read(0, 4 * ALIGN, misaligned, true), bytes.subarray(0, 4 * ALIGN))
      ).toBe(0)
      expect(file.isDirect).toBe(false)
      expect(Buffer.compare(await file.read(7, 2 * ALIGN, aligned, true), bytes.subarray(7, 2 * ALIGN))).toBe(
        0
      )
    } finally {
      await file.close()
    }
  })

  it("the pool holds a fixed number of buffers: a take waits for one handed back", async () => {
    const pool = new BufferPool(ALIGN, 2, true)
    const a = await pool.take()
    const b = await pool.take()
    expect(pool.empty).toBe(true)
    let third: Buffer | undefined
    const waiting = pool.take().then((buf) => {
      third = buf
    })
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(third).toBeUndefined()
    pool.give(a)
    await waiting
    expect(third!.buffer).toBe(a.buffer)
    expect(third!.byteOffset).toBe(a.byteOffset)
    expect(b.byteOffset).not.toBe(a.byteOffset)
  })
})

const writers: ReadonlyArray<readonly [string, (image: fsp.FileHandle) => ImageWriter]> = [
  ["a worker thread", (image) => WorkerWriter.start(image)!],
  ["the file handle", (image) => new HandleWriter(image)]
]

describe.each(writers)("the image writer: %s", (_, start) => {
  it("writes every byte where it was asked, batch by batch, each batch's callbacks run once it is over, in order", async () => {
    const file = path.join(tempDir(), "image")
    const image = await fsp.open(file, "w+")
    const writer = start(image)
    const memory = BufferPool.outside(64 * 1024)
    patterned(memory.length, 3).copy(memory)
    const expected = Buffer.alloc(256 * 1024)
    const over: Array<number> = []
    const seen: Array<readonly [number, number]> = []
    imageWrites.observe = (at, length) => seen.push([at, length])
    try {
      for (let batch = 0; batch < 20; batch++) {
        for (let k = 0; k < 3; k++) {
          const from = (batch * 997 + k * 4099) % (memory.length - 3000)
          const length = 1 + ((batch * 13 + k * 7) % 3000)
          const at = (batch * 3 + k) * 4096
          writer.put(memory.subarray(from, from + length), at)
          memory.copy(expected, at, from, from + length)
        }
        writer.after(() => over.push(batch))
        if (batch % 3 === 0) await writer.send(2)
      }
      await writer.drain()
    } finally {
      imageWrites.observe = undefined
      await writer.close()
      await image.close()
    }
    expect(over).toEqual(Array.from({ length: 20 }, (_, i) => i))
    expect(seen.length).toBe(60)
    const written = fs.readFileSync(file)
    expect(Buffer.compare(written, expected.subarray(0, written.length))).toBe(0)
    expect(written.length).toBe(Math.max(...seen.map(([at, length]) => at + length)))
  })

  it("a write that fails (ENOSPC: /dev/full) is thrown by the next send or the drain, as fs throws it; every batch's callbacks still run", async () => {
    const image = await fsp.open("/dev/full", "w")
    const writer = start(image)
    const memory = BufferPool.outside(8192)
    let over = 0
    try {
      writer.put(memory.subarray(0, 4096), 0)
      writer.after(() => over++)
      await writer.send(1)
      writer.put(memory.subarray(4096), 4096)
      writer.after(() => over++)
      const failed = await writer.drain().then(
        () => undefined,
        (e: unknown) => e
      )
      expect(failed).toMatchObject({ code: "ENOSPC" })
      expect(over).toBe(2)
    } finally {
      await writer.close()
      await image.close()
    }
  })
})

it("the worker writes from shared memory only (it is not copied to it)", async () => {
  const image = await fsp.open(path.join(tempDir(), "image"), "w")
  const writer = WorkerWriter.start(image)!
  try {
    expect(() => writer.put(Buffer.alloc(10), 0)).toThrow(/shared memory/)
  } finally {
    await writer.close()
    await image.close()
  }
})

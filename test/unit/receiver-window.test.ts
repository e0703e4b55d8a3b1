/**
 * Issue 13, finding 1: a record whose 40-byte header straddles the segment reader's window
 * (4 MiB) was reported as "short record payload", so a clean restart cut acked records off
 * as a torn tail, or refused the disk as corrupt when a later commit followed. These logs
 * are written by the real store and reopened by the real recovery, with the default window.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../support/tempDirs.js"
import { type DiskMeta, META_FILE, openChain } from "../../src/receiver/internal/chain.js"
import { RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES } from "../../src/receiver/internal/format.js"
import { DEFAULT_WINDOW } from "../../src/receiver/internal/segment.js"
import * as LogStore from "../../src/receiver/LogStore.js"
import * as Restore from "../../src/receiver/Restore.js"

const tempDir = tempDirs("cdp-receiver-window-", "each")

const geometry = { blockSize: 4096, blockCount: 4096 }
const hello = { diskId: "vm-window", ...geometry, watermark: 0 }
const diskBytes = geometry.blockSize * geometry.blockCount

/**
 * Payload sizes whose records put a record header `before` bytes ahead of the window's end
 * (offset 4 MiB from the segment's start, where the first window ends), then `after` more.
 */
const straddling = (before: number, after: number): Array<number> => {
  const target = DEFAULT_WINDOW - before
  const sizes: Array<number> = []
  let at = SEGMENT_HEADER_BYTES
  const chunk = 65_536
  while (target - at >= RECORD_HEADER_BYTES + chunk + RECORD_HEADER_BYTES + 1) {
    sizes.push(chunk)
    at += RECORD_HEADER_BYTES + chunk
  }
  sizes.push(target - at - RECORD_HEADER_BYTES)
  for (let i = 0; i < after; i++) sizes.push(1000 + i)
  return sizes
}

/** Appends one write per size, each its own commit (fsynced before the next). */
const writeLog = (dir: string, sizes: ReadonlyArray<number>) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const store = yield* LogStore.open({ dir })
        const disk = yield* store.disk(hello)
        let seq = 0
        for (const size of sizes) {
          seq++
          const data = new Uint8Array(size).fill(seq & 0xff)
          disk.append(
            { _tag: "Write", seq, epoch: 0, offset: (seq * 65_536) % (diskBytes - size), data },
            true
          )
          yield* disk.flushed
        }
        return disk.diskDir
      })
    )
  )

const meta = (diskDir: string): DiskMeta => JSON.parse(fs.readFileSync(path.join(diskDir, META_FILE), "utf8"))

const reopened = (dir: string) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const store = yield* LogStore.open({ dir })
        const disk = yield* store.disk(hello)
        return disk.durable
      })
    )
  )

describe("a record header straddling the read window (default 4 MiB)", () => {
  for (const before of [1, 10, 39])
    it(`header ${before} bytes before 4 MiB, later commits after it: every record survives recovery`, async () => {
      const dir = tempDir()
      const sizes = straddling(before, 3)
      const diskDir = await writeLog(dir, sizes)
      const chain = await openChain(diskDir, meta(diskDir), "recover")
      expect(chain.lastSeq).toBe(sizes.length)
      expect(chain.notes).toEqual([])
      const offsets = chain.segments[0]!.entries!.map((e) => e.offset)
      expect(offsets).toContain(DEFAULT_WINDOW - before)
      expect(await reopened(dir)).toBe(sizes.length)
    })

  it("the straddling record is the last commit: a restart keeps it (no torn tail)", async () => {
    const dir = tempDir()
    const sizes = straddling(10, 0)
    // The last record is the one whose header starts 10 bytes before 4 MiB: give it a payload.
    sizes.push(5000)
    const diskDir = await writeLog(dir, sizes)
    const size = fs.statSync(
      path.join(diskDir, fs.readdirSync(diskDir).find((n) => n.endsWith(".seg"))!)
    ).size
    expect(await reopened(dir)).toBe(sizes.length)
    // Nothing was cut off, and the latest point is the last record.
    const segment = path.join(diskDir, fs.readdirSync(diskDir).find((n) => n.endsWith(".seg"))!)
    expect(fs.statSync(segment).size).toBe(size)
    const [listed] = await Effect.runPromise(Restore.points(dir, hello.diskId))
    expect(listed!.lastSeq).toBe(sizes.length)
    expect(listed!.warnings).toEqual([])
  })
})

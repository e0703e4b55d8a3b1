/**
 * How long opening a recovery point (`openPointMap`) takes on a long log, with every
 * `.bix` missing (each sealed segment's map rebuilt from its records) and with all of them
 * present (decoded and checked against the records). The chain is made in memory — the
 * segments' entries as the chain holds them after reading their `.idx` — so only the
 * `.bix` files are on disk: random 4–64 KiB writes (4 KiB aligned) on a 1 GiB disk, in
 * segments of 64 MiB. Each segment holds its records as columns, as a chain opened read-only
 * does (`summarizeTable`). Run alone: `npm run build && npx tsx bench/open-point.ts [segments]`.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Chain, Segment } from "../dist/receiver/internal/chain.js"
import { EntryTable } from "../dist/receiver/internal/entryTable.js"
import {
  type IndexEntry,
  indexName,
  Kind,
  RECORD_HEADER_BYTES,
  SEGMENT_HEADER_BYTES,
  segmentName
} from "../dist/receiver/internal/format.js"
import { openPointMap } from "../dist/receiver/internal/point.js"
import { summarizeTable } from "../dist/receiver/internal/segmentSummary.js"

const DISK = 1 << 30
const SEGMENT = 64 << 20
const segments = Number(process.argv[2] ?? 2000)

let seed = 17
/** mulberry32: a fixed sequence, so every run opens the same log. */
const random = () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
}

const makeChain = (diskDir: string): Chain => {
  const list: Array<Segment> = []
  let seq = 1
  let records = 0
  for (let s = 0; s < segments; s++) {
    const entries: Array<IndexEntry> = []
    const firstSeq = seq
    let offset = SEGMENT_HEADER_BYTES
    while (offset < SEGMENT) {
      const length = (1 + Math.floor(random() * 16)) * 4096
      const position = Math.floor(random() * (DISK / 4096 - 16)) * 4096
      entries.push({ seq, position, length, kind: Kind.Write, flags: 1, epoch: 1, time: seq, offset, crc: 0 })
      offset += RECORD_HEADER_BYTES + length
      seq++
    }
    records += entries.length
    const name = segmentName(firstSeq)
    list.push(
      summarizeTable(name, EntryTable.fromEntries(entries), offset, path.join(diskDir, indexName(name)), true)
    )
  }
  process.stderr.write(
    `${segments} segments, ${records} records (${((segments * SEGMENT) / 2 ** 30).toFixed(0)} GiB of log)\n`
  )
  return {
    diskDir,
    meta: {
      format: 2,
      diskId: "bench",
      blockSize: 4096,
      blockCount: DISK / 4096,
      createdAt: ""
    } as Chain["meta"],
    base: { seq: 0, time: 0 } as Chain["base"],
    segments: list,
    lastSeq: seq - 1,
    inResync: false,
    notes: []
  }
}

const time = async (label: string, f: () => Promise<unknown>) => {
  const started = performance.now()
  const out = await f()
  process.stdout.write(`${label}: ${((performance.now() - started) / 1000).toFixed(2)} s\n`)
  return out
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-open-point-"))
try {
  const chain = makeChain(dir)
  const at = chain.lastSeq
  await time("all .bix missing, rebuilt in memory only", () => openPointMap(chain, at, false))
  await time("all .bix missing, rebuilt and written", () => openPointMap(chain, at, true))
  const map = (await time("all .bix present, decoded and checked", () =>
    openPointMap(chain, at, false)
  )) as Awaited<ReturnType<typeof openPointMap>>
  process.stdout.write(`${map.table.count} extents in the point's map, ${map.notes.length} notes\n`)
} finally {
  fs.rmSync(dir, { recursive: true, force: true })
}

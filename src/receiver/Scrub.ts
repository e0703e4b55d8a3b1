/**
 * `cdp-sync scrub` (docs/receiver.md): verifies every file of every disk in a receiver
 * directory — `disk.json`, `base.img`, every segment (every record's CRC, the seqs
 * following each other across the whole chain and from the base), every index
 * (entry by entry against the records of its segment) and every block index (`.bix`,
 * checked as a point checks it: `checkBlockIndex`) — and reports each damage with its file
 * and byte offset. It never writes: a damaged `.bix` is reported, not rebuilt.
 *
 * Read-only and without the lock, so it may run beside the receiver: the last segment
 * may be growing (a commit in progress reads as a torn tail, noted, not damage), a roll
 * may seal it meanwhile, and a retention fold may replace the base and remove segments
 * (the disk is checked again, up to ten times). It checks the files
 * present when it reads the disk's directory.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Data, Effect, Schedule } from "effect"
import {
  BASE_FILE,
  type DiskMeta,
  diskBytesOf,
  diskDirName,
  META_FILE,
  readBase,
  readMeta
} from "./internal/chain.js"
import { inspectBaseImage } from "./internal/base.js"
import { DiskNotFound, LogCorrupt, LogIoError } from "./internal/errors.js"
import { blockIndexName } from "./internal/blockIndex.js"
import { isEnoent, readIfExists } from "./internal/files.js"
import {
  type BaseTrailer,
  continues,
  type IndexEntry,
  indexName,
  parseSegmentName
} from "./internal/format.js"
import { checkBlockIndex, coversOf } from "./internal/point.js"
import { compareIndex, describeDamage, isTorn, readIndex, scanSegment } from "./internal/segment.js"

export { DiskNotFound }

export interface Checked {
  /** Files read in full (disk.json, base.img, segments, indexes, block indexes). */
  readonly files: number
  readonly segments: number
  /** Records whose CRC was checked. */
  readonly records: number
  /** Bytes of segment read. */
  readonly segmentBytes: number
  /** Indexes compared entry by entry with their segment. */
  readonly indexes: number
  /** Block indexes (`.bix`) decoded and checked against their segment's records. */
  readonly blockIndexes: number
}

export interface DiskScrub {
  /** `undefined` when `disk.json` is missing or unreadable. */
  readonly diskId: string | undefined
  readonly diskDir: string
  readonly checked: Checked
  /** Every damage found: the file, the byte offset, the reason. */
  readonly damage: ReadonlyArray<LogCorrupt>
  /** What is not damage but worth knowing: a torn tail being written, leftovers the receiver removes. */
  readonly notes: ReadonlyArray<string>
}

export interface ScrubReport {
  readonly dir: string
  readonly disks: ReadonlyArray<DiskScrub>
  /** No damage anywhere. */
  readonly clean: boolean
}

/** The base image's checks: its trailer, its size and every unit against its checksum (`internal/base.ts`). */
const checkBase = async (
  diskDir: string,
  meta: DiskMeta
): Promise<{ readonly damage: ReadonlyArray<LogCorrupt>; readonly note: string | undefined }> => {
  const file = path.join(diskDir, BASE_FILE)
  const exists = await fs.stat(file).then(
    () => true,
    (e: unknown) => (isEnoent(e) ? false : Promise.reject(e))
  )
  // A fold renames the new base over the old one: base.img is never missing but by damage.
  if (!exists) return { damage: [new LogCorrupt({ file, offset: 0, reason: "missing" })], note: undefined }
  const report = await inspectBaseImage(diskDir, meta)
  const note =
    report.damage.length === 0 && !report.verified
      ? `${BASE_FILE}: format ${report.format ?? "?"} carries no checksums: its image is unverified (the next fold writes format 2)`
      : undefined
  return { damage: report.damage, note }
}

/** The base's trailer (its seq anchors the log), or `undefined` when it cannot be read. */
const baseTrailer = async (diskDir: string, meta: DiskMeta): Promise<BaseTrailer | undefined> => {
  const file = path.join(diskDir, BASE_FILE)
  const handle = await fs.open(file, "r").catch((e: unknown) => (isEnoent(e) ? undefined : Promise.reject(e)))
  if (handle === undefined) return undefined
  try {
    return await readBase(handle, file, diskBytesOf(meta)).catch((e: unknown) =>
      e instanceof LogCorrupt ? undefined : Promise.reject(e)
    )
  } finally {
    await handle.close()
  }
}

/**
 * The block index of a segment whose records were just scanned (clean), judged as a point
 * judges it (`checkBlockIndex`), read-only. Missing is a note (logs written before the block
 * index existed); damage names the byte. The active segment's `.bix`, if any, is a roll in
 * progress or a leftover: noted, not read (it may be half written).
 */
const scrubBlockIndex = async (
  diskDir: string,
  name: string,
  meta: DiskMeta,
  firstSeq: number,
  size: number,
  entries: ReadonlyArray<IndexEntry>,
  last: boolean
): Promise<{ readonly checked: boolean; readonly damage?: LogCorrupt; readonly note?: string }> => {
  const bixName = blockIndexName(name)
  const file = path.join(diskDir, bixName)
  const bytes = await readIfExists(file)
  if (last)
    return bytes === undefined
      ? { checked: false }
      : {
          checked: false,
          note: `${bixName}: the active segment has a block index (a roll in progress, or a leftover the receiver removes)`
        }
  const covers = coversOf(
    { meta },
    { firstSeq, lastSeq: entries.at(-1)?.seq ?? firstSeq - 1, bytes: size, records: entries.length }
  )
  const found = checkBlockIndex(bytes, covers, entries)
  if (found._tag === "Valid") return { checked: true }
  if (found._tag === "Missing")
    return {
      checked: false,
      note: `${bixName}: missing (a segment sealed before block indexes existed, or one removed): restore, mount and the receiver rebuild it from the segment`
    }
  return {
    checked: true,
    damage: new LogCorrupt({
      file,
      offset: found.at,
      reason: `${found.reason} (restore, mount and the receiver rebuild it from the segment, which is intact)`
    })
  }
}

/** A fold replaced the base or removed a file while the disk was read: read it again. */
class Moved extends Data.TaggedError("Moved") {}

/** One pass over one disk directory; throws `Moved` when a fold raced it. */
const scrubOnce = async (diskDir: string): Promise<DiskScrub> => {
  const damage: Array<LogCorrupt> = []
  const notes: Array<string> = []
  const checked = { files: 0, segments: 0, records: 0, segmentBytes: 0, indexes: 0, blockIndexes: 0 }
  const names = (await fs.readdir(diskDir)).sort()
  const metaFile = path.join(diskDir, META_FILE)

  let meta: DiskMeta | undefined
  try {
    meta = await readMeta(diskDir)
    if (meta !== undefined) checked.files++
  } catch (e) {
    if (!(e instanceof LogCorrupt)) throw e
    damage.push(e)
  }
  const segmentNames = names.filter((n) => parseSegmentName(n) !== undefined)
  if (meta === undefined && damage.length === 0) {
    if (segmentNames.length > 0) damage.push(new LogCorrupt({ file: metaFile, offset: 0, reason: "missing" }))
    else notes.push("no disk.json and no segment: a creation cut short (its disk was never acked)")
  }
  if (meta !== undefined && diskDirName(meta.diskId) !== path.basename(diskDir))
    damage.push(
      new LogCorrupt({
        file: metaFile,
        offset: 0,
        reason: `names disk ${JSON.stringify(meta.diskId)}, whose directory is ${diskDirName(meta.diskId)}`
      })
    )

  let base: BaseTrailer | undefined
  if (meta !== undefined) {
    base = await baseTrailer(diskDir, meta)
    const checkedBase = await checkBase(diskDir, meta)
    damage.push(...checkedBase.damage)
    if (checkedBase.note !== undefined) notes.push(checkedBase.note)
    checked.files++
  } else if (names.includes(BASE_FILE))
    notes.push(`${BASE_FILE}: not checked (without a readable disk.json its geometry is unknown)`)

  const files = segmentNames
    .map((name) => ({ name, firstSeq: parseSegmentName(name)! }))
    .sort((a, b) => a.firstSeq - b.firstSeq)
  // Segments whose records the base already holds (a fold's clean-up cut short): the receiver removes them.
  const baseSeq = base?.seq
  const kept =
    baseSeq === undefined
      ? files
      : files.filter((_, i) => i + 1 >= files.length || files[i + 1]!.firstSeq > baseSeq + 1)
  for (const f of files)
    if (!kept.includes(f))
      notes.push(`${f.name}: already folded into the base (removed when the receiver starts)`)
  for (const n of names) {
    const indexOf = parseSegmentName(n.replace(/\.idx$/, ".seg"))
    if (n.endsWith(".idx") && indexOf !== undefined && !names.includes(n.replace(/\.idx$/, ".seg"))) {
      // A fold removes a segment before its index: a folded one's is a leftover, any other a loss.
      const next = files.find((f) => f.firstSeq > indexOf)
      if (baseSeq !== undefined && next !== undefined && next.firstSeq <= baseSeq + 1)
        notes.push(`${n}: the index of a segment already folded into the base (a leftover; harmless)`)
      else
        damage.push(
          new LogCorrupt({ file: path.join(diskDir, n), offset: 0, reason: "its segment is missing" })
        )
    }
    // A block index is a cache: one whose segment is gone is a leftover, never damage.
    if (n.endsWith(".bix") && !names.includes(n.replace(/\.bix$/, ".seg")))
      notes.push(
        `${n}: the block index of a segment that is gone (harmless; removed when the receiver starts)`
      )
    if (n.endsWith(".tmp") || n.includes(".tmp-"))
      notes.push(`${n}: a temporary file (removed when the receiver starts)`)
  }

  let prevSeq: number | undefined
  let anchored = baseSeq === undefined
  for (let i = 0; i < kept.length; i++) {
    const { name, firstSeq } = kept[i]!
    const file = path.join(diskDir, name)
    const last = i === kept.length - 1
    let handle: fs.FileHandle
    try {
      handle = await fs.open(file, "r")
    } catch (e) {
      if (isEnoent(e)) throw new Moved()
      throw e
    }
    try {
      const { size } = await handle.stat()
      const scan = await scanSegment(handle, size, { firstSeq, prevSeq })
      checked.files++
      checked.segments++
      checked.records += scan.entries.length
      checked.segmentBytes += size
      if (scan.damage !== undefined) {
        if (last && isTorn(scan.damage))
          notes.push(
            `${name}: torn tail at byte ${scan.damage.offset} (${scan.damage.reason}): a commit being written, or a crash's, cut off when the receiver starts`
          )
        else
          damage.push(
            new LogCorrupt({ file, offset: scan.damage.offset, reason: describeDamage(scan.damage) })
          )
      } else if (!last && scan.entries.length === 0)
        damage.push(new LogCorrupt({ file, offset: scan.end, reason: "a sealed segment holds no record" }))
      // The chain must start right after the base.
      const first = scan.entries.find((e) => baseSeq !== undefined && e.seq > baseSeq)
      if (!anchored && first !== undefined) {
        anchored = true
        if (!continues(baseSeq!, first))
          damage.push(
            new LogCorrupt({
              file,
              offset: first.offset,
              reason: `seq ${first.seq} does not follow the base image at seq ${baseSeq}`
            })
          )
      }
      // Continuity into the next segment is checked only from a clean one.
      prevSeq = scan.damage === undefined ? scan.entries.at(-1)?.seq : undefined

      const indexFile = path.join(diskDir, indexName(name))
      const index = await readIndex(indexFile, size, firstSeq)
      const damageBefore = damage.length
      if (index._tag === "Missing") {
        if (!last)
          damage.push(
            new LogCorrupt({
              file: indexFile,
              offset: 0,
              reason: "missing (the receiver rebuilds it from the segment when it starts)"
            })
          )
      } else if (index._tag === "Unusable") {
        // The active segment's index, if any, is the one of a roll just made or a crash's leftover.
        if (last)
          notes.push(`${indexName(name)}: ${index.defect.reason} (the receiver removes it when it starts)`)
        else damage.push(new LogCorrupt({ file: indexFile, ...index.defect }))
      } else if (scan.damage === undefined) {
        if (last)
          notes.push(
            `${name}: the last segment has an index: a roll in progress, or the segment after it is missing (a crash during a roll, or lost)`
          )
        checked.files++
        checked.indexes++
        const mismatch = compareIndex(indexFile, index.entries, scan.entries)
        if (mismatch !== undefined) damage.push(mismatch)
      }
      // A segment its own index says was changed: its `.bix` would only say the same again.
      if (meta !== undefined && scan.damage === undefined && damage.length > damageBefore)
        notes.push(`${blockIndexName(name)}: not judged: its segment disagrees with its index (above)`)
      else if (meta !== undefined && scan.damage === undefined) {
        const bix = await scrubBlockIndex(diskDir, name, meta, firstSeq, size, scan.entries, last)
        if (bix.checked) {
          checked.files++
          checked.blockIndexes++
        }
        if (bix.damage !== undefined) damage.push(bix.damage)
        if (bix.note !== undefined) notes.push(bix.note)
      }
    } finally {
      await handle.close()
    }
  }
  // A fold that replaced the base meanwhile may have removed what was read: read the disk again.
  if (meta !== undefined && base !== undefined && (await baseTrailer(diskDir, meta))?.seq !== base.seq)
    throw new Moved()
  return { diskId: meta?.diskId, diskDir, checked, damage, notes }
}

const scrubDisk = (diskDir: string) =>
  Effect.tryPromise({
    try: () => scrubOnce(diskDir),
    catch: (cause) => (cause instanceof Moved ? cause : new LogIoError({ op: "scan", path: diskDir, cause }))
  }).pipe(
    // A fold may remove a file between listing and reading it (ENOENT), or replace the base.
    Effect.retry({
      times: 10,
      schedule: Schedule.spaced("20 millis"),
      while: (e) => e instanceof Moved || (e._tag === "LogIoError" && isEnoent(e.cause))
    }),
    Effect.mapError((e) =>
      e instanceof Moved
        ? new LogIoError({
            op: "scan",
            path: diskDir,
            cause: new Error("the disk kept changing under the scrub (retention folds); try again")
          })
        : e
    )
  )

/** The disk directories of `dir`: every subdirectory (with or without `disk.json`), or the one of `diskId`. */
const diskDirs = (dir: string, diskId: string | undefined) =>
  Effect.gen(function* () {
    const names = yield* Effect.tryPromise({
      try: async () => {
        const all = await fs
          .readdir(dir, { withFileTypes: true })
          .catch((e: unknown) => (isEnoent(e) ? [] : Promise.reject(e)))
        return all
          .filter((d) => d.isDirectory() && !d.name.startsWith("."))
          .map((d) => d.name)
          .sort()
      },
      catch: (cause) => new LogIoError({ op: "scan", path: dir, cause })
    })
    const wanted = diskId === undefined ? names : names.filter((n) => n === diskDirName(diskId))
    if (wanted.length === 0) return yield* new DiskNotFound({ dir, diskId, available: names })
    return wanted.map((n) => path.join(dir, n))
  })

/**
 * Verifies every file of every disk in `dir` (or of the disk `diskId`). Damage is reported,
 * not failed: the effect fails only when the directory cannot be read (or holds no such disk).
 */
export const scrub = Effect.fn("Receiver.scrub")(function* (dir: string, diskId?: string) {
  const disks: Array<DiskScrub> = []
  for (const diskDir of yield* diskDirs(dir, diskId)) disks.push(yield* scrubDisk(diskDir))
  const report: ScrubReport = { dir, disks, clean: disks.every((d) => d.damage.length === 0) }
  return report
})

/** The report as plain JSON (`--json`). */
export const toJson = (report: ScrubReport) => ({
  dir: report.dir,
  clean: report.clean,
  disks: report.disks.map((d) => ({
    diskId: d.diskId ?? null,
    diskDir: d.diskDir,
    checked: d.checked,
    damage: d.damage.map((e) => ({ file: e.file, offset: e.offset, reason: e.reason })),
    notes: d.notes
  }))
})

/** The human report: what was checked, every damage and note. */
export const render = (report: ScrubReport): string => {
  const lines: Array<string> = []
  for (const d of report.disks) {
    const c = d.checked
    const verdict = d.damage.length === 0 ? "clean" : `${d.damage.length} damaged`
    lines.push(
      `disk ${d.diskId ?? "?"} (${d.diskDir}): ${verdict}; checked ${c.files} files: ${c.segments} segments (${c.records} records, ${c.segmentBytes} bytes), ${c.indexes} indexes, ${c.blockIndexes} block indexes`
    )
    for (const e of d.damage) lines.push(`  damage: ${e.file} at byte ${e.offset}: ${e.reason}`)
    for (const n of d.notes) lines.push(`  note: ${n}`)
  }
  lines.push(
    report.clean
      ? "scrub: no damage"
      : `scrub: damage in ${report.disks.filter((d) => d.damage.length > 0).length} disk(s)`
  )
  return lines.join("\n")
}

/**
 * One disk's directory: `disk.json` (identity and geometry, checksummed), `base.img` (the
 * base image, `base.ts`) and the segments, `<first seq>.seg`, each sealed one with a
 * `<first seq>.idx`. `openChain` reads it back — in `recover` mode (the receiver, the
 * only writer) it also repairs what a crash can leave: leftover temporary files,
 * segments already folded into the base, a torn tail (cut off), an index that is missing
 * or fails its own checks (rebuilt, once the whole chain is checked) or whose segment is
 * gone (removed); an index at odds with its segment is refused. In `read` mode (points,
 * restore; possibly while the receiver runs) it changes nothing, ignores a torn tail and
 * scans past a bad index. Nothing is removed because metadata is missing or damaged:
 * `inspectDiskDir` refuses such a directory instead. What it knows of each segment is in
 * `segmentSummary.ts`; the sealed segments' indexes are read and judged by `judgeIndexes`.
 * Over 400 lines on purpose: the read and recover modes share one walk of the directory,
 * and every repair sits beside the check that licenses it. It splits next into the
 * walk (segments, indexes) and the repairs.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Either, Schema } from "effect"
import { crc32c } from "../../internal/crc32c.js"
import * as Geometry from "../../domain/Geometry.js"
import { anchorDamage, BASE_FILE, type Base, openBase, readBase } from "./base.js"
import { blockIndexName } from "./blockIndex.js"
import { LogCorrupt } from "./errors.js"
import { isEnoent, readIfExists, removeIfExists, syncDirectory, writeFileAtomic } from "./files.js"
import { continues, encodeIndex, type IndexEntry, indexName, parseSegmentName } from "./format.js"
import type { EntryTable } from "./entryTable.js"
import { describeDamage, isTorn, judgeIndexes, readIndex, scanSegment } from "./segment.js"
import { endsInResync, type Segment, summarize, summarizeTable } from "./segmentSummary.js"

export { BASE_FILE, readBase }
export { emptySegment, endsInResync, noteRecord, type Segment, summarize, tableOf } from "./segmentSummary.js"
export const META_FILE = "disk.json"
export const LOCK_FILE = ".lock"

const Count = Schema.Int.pipe(Schema.nonNegative())
const metaFields = {
  diskId: Schema.String.pipe(Schema.minLength(1)),
  blockSize: Count,
  blockCount: Count,
  createdAt: Schema.String
}
/** A disk's identity and geometry. Format 1 has no checksum; format 2 (written now) has one. */
export const DiskMeta = Schema.Struct({ format: Schema.Literal(1, 2), ...metaFields })
export type DiskMeta = typeof DiskMeta.Type
const MetaFile = Schema.Union(
  Schema.Struct({ format: Schema.Literal(1), ...metaFields }),
  Schema.Struct({ format: Schema.Literal(2), ...metaFields, crc32c: Count })
)
const decodeMeta = Schema.decodeUnknownEither(Schema.parseJson(MetaFile))

/** The checksummed content of `disk.json`: its fields in this order, as compact JSON. */
const canonicalMeta = (m: DiskMeta): string =>
  JSON.stringify({
    format: m.format,
    diskId: m.diskId,
    blockSize: m.blockSize,
    blockCount: m.blockCount,
    createdAt: m.createdAt
  })

/** `disk.json` (format 2): the fields and a CRC32C of their canonical form. */
export const encodeMeta = (m: Omit<DiskMeta, "format">): Buffer => {
  const meta: DiskMeta = { format: 2, ...m }
  const canonical = canonicalMeta(meta)
  const crc = crc32c(Buffer.from(canonical, "utf8"))
  return Buffer.from(`${canonical.slice(0, -1)},"crc32c":${crc}}\n`, "utf8")
}

/** Directory name of a disk: the id itself when it is a plain name, else a digest of it. */
export const diskDirName = (diskId: string): string =>
  /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(diskId)
    ? diskId
    : `_${createHash("sha256").update(diskId, "utf8").digest("hex").slice(0, 40)}`

export const diskBytesOf = (meta: DiskMeta): number => meta.blockSize * meta.blockCount

const RECOVER_META =
  "the disk is refused; restore disk.json (the geometry is in base.img's trailer, format 2) and restart the receiver, or move the directory out of DIR to start the disk afresh (the filter then resyncs in full)"

/**
 * `disk.json` of a disk directory, checked (schema, CRC32C for format 2, a valid geometry);
 * `undefined` when it is missing. Damage is a `LogCorrupt` naming the file.
 */
export const readMeta = async (diskDir: string): Promise<DiskMeta | undefined> => {
  const file = path.join(diskDir, META_FILE)
  const bytes = await readIfExists(file)
  if (bytes === undefined) return undefined
  const decoded = decodeMeta(bytes.toString("utf8"))
  if (Either.isLeft(decoded))
    throw new LogCorrupt({ file, offset: 0, reason: `unreadable (${decoded.left.message}); ${RECOVER_META}` })
  const { format, diskId, blockSize, blockCount, createdAt } = decoded.right
  const meta: DiskMeta = { format, diskId, blockSize, blockCount, createdAt }
  if (decoded.right.format === 2 && crc32c(Buffer.from(canonicalMeta(meta), "utf8")) !== decoded.right.crc32c)
    throw new LogCorrupt({
      file,
      offset: 0,
      reason: `CRC32C mismatch: the file was edited or damaged; ${RECOVER_META}`
    })
  const geometry = Geometry.make(blockSize, blockCount)
  if (Either.isLeft(geometry))
    throw new LogCorrupt({ file, offset: 0, reason: `${geometry.left.message}; ${RECOVER_META}` })
  return meta
}

/** What a directory in a receiver directory holds. */
export type DiskDir =
  | { readonly _tag: "Disk"; readonly diskDir: string; readonly meta: DiskMeta }
  /** No such directory. */
  | { readonly _tag: "Absent"; readonly diskDir: string }
  /** No `disk.json`, and provably nothing acked: no segment, no base past seq 0, nothing else. */
  | { readonly _tag: "Unfinished"; readonly diskDir: string }
  /** `disk.json` missing or damaged while the directory may hold acked records: refused. */
  | { readonly _tag: "Refused"; readonly diskDir: string; readonly error: LogCorrupt }
  /** `disk.json` names a disk whose directory is another (the directory was renamed or copied). */
  | { readonly _tag: "Misplaced"; readonly diskDir: string; readonly meta: DiskMeta }

/** The files a disk's creation writes before its `disk.json` (and nothing acked among them). */
const CREATION_FILES = new Set([BASE_FILE, `${BASE_FILE}.tmp`, `${META_FILE}.tmp`])

/**
 * Classifies a disk directory. Nothing here deletes: a directory without `disk.json` that
 * may hold acked records is `Refused`, with the evidence and the way to recover.
 */
export const inspectDiskDir = async (diskDir: string): Promise<DiskDir> => {
  let meta: DiskMeta | undefined
  try {
    meta = await readMeta(diskDir)
  } catch (e) {
    if (e instanceof LogCorrupt) return { _tag: "Refused", diskDir, error: e }
    throw e
  }
  const name = path.basename(diskDir)
  if (meta !== undefined)
    return diskDirName(meta.diskId) === name
      ? { _tag: "Disk", diskDir, meta }
      : { _tag: "Misplaced", diskDir, meta }
  let names: Array<string>
  try {
    names = await fs.readdir(diskDir)
  } catch (e) {
    if (isEnoent(e)) return { _tag: "Absent", diskDir }
    throw e
  }
  const evidence: Array<string> = []
  const logFiles = names.filter((n) => parseSegmentName(n.replace(/\.idx$/, ".seg")) !== undefined)
  if (logFiles.length > 0) evidence.push(`${logFiles.length} segment and index files`)
  let base: Base | undefined
  if (names.includes(BASE_FILE)) {
    try {
      const opened = await openBase(diskDir, undefined)
      await opened.handle.close()
      base = opened.base
      if (base.seq > 0) evidence.push(`a base image at seq ${base.seq}`)
    } catch (e) {
      if (!(e instanceof LogCorrupt)) throw e
      evidence.push(`an unreadable base image (${e.reason})`)
    }
  }
  const other = names.filter((n) => !CREATION_FILES.has(n) && !logFiles.includes(n))
  if (other.length > 0) evidence.push(`other files (${other.slice(0, 5).join(", ")})`)
  if (evidence.length === 0) return { _tag: "Unfinished", diskDir }
  const diskId = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(name) ? name : undefined
  const content =
    base?.format === 2 && diskId !== undefined
      ? `, e.g. ${encodeMeta({ diskId, blockSize: base.blockSize, blockCount: base.blockCount, createdAt: new Date().toISOString() }).toString("utf8").trim()}`
      : base?.format === 2
        ? ` (the disk's id, and ${base.blockCount} blocks of ${base.blockSize} bytes as base.img's trailer says)`
        : ""
  return {
    _tag: "Refused",
    diskDir,
    error: new LogCorrupt({
      file: path.join(diskDir, META_FILE),
      offset: 0,
      reason: `missing, but the directory holds ${evidence.join(", ")}: the disk is refused rather than created afresh over acked records. To recover, write disk.json again${content} and restart the receiver; or move the directory out of DIR to start the disk afresh (the filter then resyncs in full)`
    })
  }
}

/** Every directory of a receiver directory (names starting with "." are the receiver's own). */
export const surveyDisks = async (dir: string): Promise<ReadonlyArray<DiskDir>> => {
  let names: Array<string>
  try {
    names = await fs.readdir(dir)
  } catch (e) {
    if (isEnoent(e)) return []
    throw e
  }
  const found: Array<DiskDir> = []
  for (const name of names.sort()) {
    if (name.startsWith(".")) continue
    const diskDir = path.join(dir, name)
    const stat = await fs.stat(diskDir).catch(() => undefined)
    if (stat === undefined || !stat.isDirectory()) continue
    found.push(await inspectDiskDir(diskDir))
  }
  return found
}

/**
 * The disks a receiver directory holds, by id. A directory refused (its `disk.json` missing
 * with records beside it, or damaged) is thrown; unfinished creations and renamed copies are
 * left out.
 */
export const listDisks = async (
  dir: string
): Promise<ReadonlyArray<{ readonly diskDir: string; readonly meta: DiskMeta }>> => {
  const disks: Array<{ diskDir: string; meta: DiskMeta }> = []
  for (const d of await surveyDisks(dir)) {
    if (d._tag === "Refused") throw d.error
    if (d._tag === "Disk") disks.push({ diskDir: d.diskDir, meta: d.meta })
  }
  return disks
}

// ---------------------------------------------------------------------------------------------

export interface Note {
  readonly message: string
  readonly annotations: Record<string, unknown>
}

export interface Chain {
  readonly diskDir: string
  readonly meta: DiskMeta
  readonly base: Base
  readonly segments: Array<Segment>
  /** Seq of the last record held (the base's when the log is empty). */
  readonly lastSeq: number
  /** The log ends between a resync-begin and its resync-end. */
  readonly inResync: boolean
  /** Read mode: damage where the readable chain stops (recover mode throws it instead). */
  readonly damaged?: LogCorrupt | undefined
  /** What recovery repaired (recover mode) or ignored (read mode), to be logged. */
  readonly notes: ReadonlyArray<Note>
}

/**
 * Opens a disk's chain. `recover`: repairs (see the module comment); `read`: read-only.
 * Throws `LogCorrupt` for damage it must not repair.
 */
export const openChain = async (
  diskDir: string,
  meta: DiskMeta,
  mode: "read" | "recover"
): Promise<Chain> => {
  const recover = mode === "recover"
  const notes: Array<Note> = []
  const names = await fs.readdir(diskDir)
  if (recover)
    for (const name of names)
      if (name.endsWith(".tmp")) {
        await removeIfExists(path.join(diskDir, name))
        notes.push({ message: "removed a leftover temporary file", annotations: { file: name } })
      }
  // The trailer, checked against disk.json's geometry and the file's size.
  const opened = await openBase(diskDir, { blockSize: meta.blockSize, blockCount: meta.blockCount })
  await opened.handle.close()
  const base = opened.base
  // Before anything is removed as folded: the base's seq must agree with the segments.
  const anchor = await anchorDamage(diskDir, base, names)
  if (anchor !== undefined) throw anchor

  // An index is derived data: one whose segment is gone because a fold removed it (the
  // segment after it starts at or below base + 1) is removed. One whose segment vanished
  // from the live log is evidence of damage: it stays, and the gap refuses the disk.
  if (recover)
    for (const name of names) {
      const segment = name.replace(/\.(idx|bix)$/, ".seg")
      const firstSeq = parseSegmentName(segment)
      if (segment === name || firstSeq === undefined || names.includes(segment)) continue
      const folded = names.some((n) => {
        const next = parseSegmentName(n)
        return next !== undefined && next > firstSeq && next <= base.seq + 1
      })
      if (!folded) continue
      await removeIfExists(path.join(diskDir, name))
      notes.push({ message: "removed an index whose segment a fold removed", annotations: { file: name } })
    }

  let files = names
    .map((name) => ({ name, firstSeq: parseSegmentName(name) }))
    .filter((f): f is { name: string; firstSeq: number } => f.firstSeq !== undefined)
    .sort((a, b) => a.firstSeq - b.firstSeq)
  // A segment whose successor starts at or below base + 1 holds only folded records.
  const folded = files.filter((_, i) => i + 1 < files.length && files[i + 1]!.firstSeq <= base.seq + 1)
  if (folded.length > 0) {
    files = files.filter((f) => !folded.includes(f))
    if (recover) {
      // The index first: a kill in between leaves a segment (removed next time), not an orphan index.
      for (const f of folded) {
        await removeIfExists(path.join(diskDir, blockIndexName(f.name)))
        await removeIfExists(path.join(diskDir, indexName(f.name)))
        await removeIfExists(path.join(diskDir, f.name))
      }
      await syncDirectory(diskDir)
      notes.push({
        message: "removed segments already folded into the base",
        annotations: { segments: folded.map((f) => f.name).join(","), baseSeq: base.seq }
      })
    }
  }

  const segments: Array<Segment> = []
  let baseChecked = false
  // Checks continuity (of `first` with the previous segment, of the first record after the
  // base with the base) and keeps the segment.
  const admit = (
    name: string,
    first: IndexEntry,
    afterBase: () => IndexEntry | undefined,
    segment: Segment
  ) => {
    const file = path.join(diskDir, name)
    const prevSeq = segments[segments.length - 1]?.lastSeq
    if (prevSeq !== undefined && !continues(prevSeq, first))
      throw new LogCorrupt({
        file,
        offset: first.offset,
        reason: `seq ${first.seq} does not follow ${prevSeq}`
      })
    if (!baseChecked) {
      const after = afterBase()
      if (after !== undefined) {
        baseChecked = true
        if (!continues(base.seq, after))
          throw new LogCorrupt({
            file,
            offset: after.offset,
            reason: `seq ${after.seq} does not follow the base image at seq ${base.seq}`
          })
      }
    }
    segments.push(segment)
  }
  const admitEntries = (name: string, entries: ReadonlyArray<IndexEntry>, bytes: number, keep: boolean) =>
    admit(
      name,
      entries[0]!,
      () => entries.find((e) => e.seq > base.seq),
      summarize(name, entries, bytes, keep)
    )
  const admitTable = (name: string, table: EntryTable, bytes: number, indexFile: string) =>
    admit(
      name,
      table.entry(0),
      () => {
        for (let i = 0; i < table.count; i++) if (table.seq[i]! > base.seq) return table.entry(i)
        return undefined
      },
      summarizeTable(name, table, bytes, indexFile, !recover)
    )

  // Every sealed segment's header and index, checked, read a few ahead of the segment being
  // admitted (in order, each scanned where its index cannot stand in).
  const judged = judgeIndexes(
    files.slice(0, -1).map(({ name, firstSeq }) => ({
      file: path.join(diskDir, name),
      indexFile: path.join(diskDir, indexName(name)),
      firstSeq
    }))
  )
  // Read mode stops at damage instead: the points before it stay listable and restorable.
  let damaged: LogCorrupt | undefined
  // Indexes to rebuild, written once the whole chain is known good: damage found later
  // leaves every file as it was (an old index may be what shows a segment shrank).
  const rebuilds: Array<{ readonly file: string; readonly bytes: Buffer }> = []
  for (let i = 0; i < files.length; i++) {
    const { name, firstSeq } = files[i]!
    const file = path.join(diskDir, name)
    const last = i === files.length - 1
    const prevSeq = segments[segments.length - 1]?.lastSeq
    let handle: fs.FileHandle | undefined
    try {
      if (!last) {
        // Every segment's header is checked, even when its index stands in for the scan.
        const indexFile = path.join(diskDir, indexName(name))
        const { size, index } = await judged.next(i)
        if (index._tag === "Table") {
          admitTable(name, index.table, size, indexFile)
          continue
        }
        // Both files pass their own checks yet disagree: no media damage does that, so the
        // receiver does not guess which one to believe (scrub names the entry; see docs).
        if (index._tag === "Disagrees" && recover)
          throw new LogCorrupt({ file: indexFile, offset: index.offset, reason: index.reason })
        if (index._tag !== "BadSegment") {
          const what =
            index._tag === "Missing" ? "missing" : index._tag === "Unusable" ? "damaged" : "at odds with it"
          const then =
            index._tag === "Disagrees"
              ? "the receiver refuses the disk"
              : "the receiver rebuilds it when it starts"
          notes.push({
            message: recover
              ? `rebuilt a ${what} index`
              : `scanned a segment whose index is ${what} (${then})`,
            annotations:
              index._tag === "Missing"
                ? { file: indexFile }
                : { file: indexFile, at: index.offset, reason: index.reason }
          })
        }
      }
      handle = await fs.open(file, recover && last ? "r+" : "r")
      const { size } = await handle.stat()
      const scan = await scanSegment(handle, size, { firstSeq, prevSeq })
      if (scan.damage !== undefined) {
        if (!last || !isTorn(scan.damage)) {
          if (!recover && scan.entries.length > 0) admitEntries(name, scan.entries, scan.end, true)
          throw new LogCorrupt({ file, offset: scan.damage.offset, reason: describeDamage(scan.damage) })
        }
        notes.push({
          message: recover
            ? "cut off a torn tail"
            : "ignored a torn tail (the receiver cuts it off when it restarts)",
          annotations: {
            file,
            at: scan.damage.offset,
            truncatedBytes: size - scan.end,
            reason: scan.damage.reason,
            wholeRecordsDropped: scan.damage.validAfter
          }
        })
      } else if (!last) {
        if (scan.entries.length === 0)
          throw new LogCorrupt({ file, offset: scan.end, reason: "a sealed segment holds no record" })
        if (recover)
          rebuilds.push({ file: path.join(diskDir, indexName(name)), bytes: encodeIndex(size, scan.entries) })
      }
      if (scan.entries.length > 0) {
        // First the checks against the chain (they may refuse it), then the repair.
        admitEntries(name, scan.entries, scan.end, !recover || last)
        if (recover && scan.damage !== undefined) await handle.truncate(scan.end)
        // What a killed receiver wrote may not have been fsynced yet: it is about to be reported durable.
        if (recover && last) await handle.sync()
      } else if (recover) {
        // A segment is created with its first commit: an empty one is a creation cut short.
        await fs.unlink(file)
        if (scan.damage === undefined)
          notes.push({ message: "removed an empty segment", annotations: { file } })
      }
    } catch (e) {
      if (recover || !(e instanceof LogCorrupt)) throw e
      damaged = e
      notes.push({
        message: "the log is damaged: recovery points after the damage are unavailable",
        annotations: { file: e.file, at: e.offset, reason: e.reason }
      })
      break
    } finally {
      await handle?.close()
    }
  }
  // Atomically: a reader beside us (points, scrub) never sees half an index.
  for (const { file, bytes } of rebuilds) await writeFileAtomic(file, bytes)
  // Also makes a segment created just before a crash durable, before its records are reported so.
  if (recover) await syncDirectory(diskDir)

  // Every record of the last segment folded too (a fold's clean-up cut short): drop it.
  if (segments.length > 0 && segments[segments.length - 1]!.lastSeq < base.seq) {
    const gone = segments.pop()!
    if (recover) {
      await removeIfExists(path.join(diskDir, blockIndexName(gone.name)))
      await removeIfExists(path.join(diskDir, indexName(gone.name)))
      await removeIfExists(path.join(diskDir, gone.name))
      await syncDirectory(diskDir)
    }
  }
  const tail = segments[segments.length - 1]
  if (recover && tail !== undefined) {
    // The last segment is the active one again; its index is rewritten when it is sealed.
    const indexFile = path.join(diskDir, indexName(tail.name))
    if (tail.entries === undefined) {
      const indexed = await readIndex(indexFile, tail.bytes, tail.firstSeq)
      if (indexed._tag !== "Entries")
        throw new LogCorrupt({
          file: indexFile,
          offset: indexed._tag === "Unusable" ? indexed.defect.offset : 0,
          reason: "the index changed while the log was opened"
        })
      tail.entries = [...indexed.entries]
    }
    await removeIfExists(indexFile)
    await removeIfExists(path.join(diskDir, blockIndexName(tail.name)))
  }

  return {
    diskDir,
    meta,
    base,
    segments,
    lastSeq: Math.max(base.seq, tail?.lastSeq ?? 0),
    inResync: endsInResync(segments, base.seq),
    damaged,
    notes
  }
}

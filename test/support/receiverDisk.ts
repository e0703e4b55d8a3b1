/**
 * A receiver disk built in-process through the real store (`LogStore`): records appended
 * and fsynced, segments sealed, a retention fold run by hand — with the model image at
 * every seq, for the tests that damage the files and check what the receiver, `restore`
 * and `verifyBaseImage` make of it.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Effect, Exit, Logger, Option } from "effect"
import type * as Wire from "../../src/protocol/Wire.js"
import {
  blockIndexName,
  buildMap,
  encodeBlockIndex,
  type Extent
} from "../../src/receiver/internal/blockIndex.js"
import type { Chain, DiskMeta, Segment } from "../../src/receiver/internal/chain.js"
import { ReceiverMutants } from "../../src/receiver/internal/mutants.js"
import { coversOf } from "../../src/receiver/internal/point.js"
import * as LogStore from "../../src/receiver/LogStore.js"

export interface Geometry {
  readonly blockSize: number
  readonly blockCount: number
}

/** A write or block record, and where its bytes land in the image. */
export interface Change {
  readonly record: Wire.Write | Wire.Block
  readonly offset: number
  readonly data: Uint8Array
}

export { removeTempDirs, tempDir } from "./tempDirs.js"

/** Log lines the store wrote, as `LEVEL message annotations`. */
export const captured: Array<string> = []
const capture = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ logLevel, message, annotations }) => {
    const text = Array.isArray(message) ? message.join(" ") : String(message)
    const extra = [...annotations].map(([k, v]) => `${k}=${String(v)}`).join(" ")
    captured.push(`${logLevel.label} ${text} ${extra}`)
  })
)

/** Runs `f` with a store open on `dir` (closed after). */
export const withStore = <A, E>(
  dir: string,
  f: (store: LogStore.Store) => Effect.Effect<A, E>,
  options: Omit<LogStore.StoreOptions, "dir"> = {}
): Promise<Exit.Exit<A, E | LogStore.LogError | LogStore.ReceiverLocked>> =>
  Effect.runPromiseExit(
    Effect.scoped(Effect.flatMap(LogStore.open({ dir, ...options }), f)).pipe(Effect.provide(capture))
  )

/** The failure an exit holds (its first typed error), or `undefined` on success. */
export const failureOf = (exit: Exit.Exit<unknown, unknown>): unknown =>
  Exit.isFailure(exit)
    ? Option.getOrElse(Cause.failureOption(exit.cause), () => Cause.squash(exit.cause))
    : undefined

/** A deterministic sequence of write and block records (`seed`), inside `[0, limit)` of the disk. */
export const makeChanges = (
  geometry: Geometry,
  count: number,
  options: { readonly seed?: number; readonly firstSeq?: number; readonly limit?: number } = {}
): Array<Change> => {
  const diskBytes = geometry.blockSize * geometry.blockCount
  const limit = options.limit ?? diskBytes
  let state = (options.seed ?? 1) >>> 0 || 1
  const random = () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 2 ** 32
  }
  const changes: Array<Change> = []
  for (let i = 0; i < count; i++) {
    const seq = (options.firstSeq ?? 1) + i
    const fill = 1 + Math.floor(random() * 255)
    if (random() < 0.2 && limit >= geometry.blockSize) {
      const block = Math.floor(random() * Math.floor(limit / geometry.blockSize))
      const data = new Uint8Array(geometry.blockSize).fill(fill)
      changes.push({
        record: { _tag: "Block", seq, epoch: 0, block, data },
        offset: block * geometry.blockSize,
        data
      })
    } else {
      const length = 1 + Math.floor(random() * Math.min(3000, limit))
      const offset = Math.floor(random() * (limit - length + 1))
      const data = new Uint8Array(length).fill(fill)
      changes.push({ record: { _tag: "Write", seq, epoch: 0, offset, data }, offset, data })
    }
  }
  return changes
}

/** The image after every change through `seq`. */
export const imageAt = (geometry: Geometry, changes: ReadonlyArray<Change>, seq: number): Buffer => {
  const image = Buffer.alloc(geometry.blockSize * geometry.blockCount)
  for (const c of changes) if (c.record.seq <= seq) image.set(c.data, c.offset)
  return image
}

/**
 * Appends `changes` to disk `diskId` (all recovery points, one fsync every `perCommit`),
 * then folds into the base up to the end of the last sealed segment when `fold` says so.
 * Returns the disk's directory and its base seq.
 */
export const writeDisk = async (
  dir: string,
  diskId: string,
  geometry: Geometry,
  changes: ReadonlyArray<Change>,
  options: {
    readonly segmentBytes?: number
    /** Fold to the end of the last sealed segment, or to the record before it (its segment stays). */
    readonly fold?: boolean | "mid-segment"
    readonly perCommit?: number
  } = {}
): Promise<{ readonly diskDir: string; readonly baseSeq: number; readonly lastSeq: number }> => {
  const exit = await withStore(
    dir,
    (store) =>
      Effect.gen(function* () {
        const disk = yield* store.disk({ diskId, ...geometry, watermark: 0 })
        const perCommit = options.perCommit ?? 4
        for (let i = 0; i < changes.length; i++) {
          disk.append(changes[i]!.record, true)
          if ((i + 1) % perCommit === 0 || i === changes.length - 1) yield* disk.flushed
        }
        if (options.fold !== undefined && options.fold !== false) {
          const sealed = disk.segments.slice(0, -1).filter((s) => s.lastSeq > disk.base.seq)
          const last = sealed.at(-1)
          if (last === undefined || (options.fold === "mid-segment" && last.lastSeq <= last.firstSeq))
            return yield* Effect.die(new Error("nothing sealed to fold"))
          const seq = options.fold === "mid-segment" ? last.lastSeq - 1 : last.lastSeq
          yield* Effect.promise(() => disk.foldTo(seq))
        }
        return { diskDir: disk.diskDir, baseSeq: disk.base.seq, lastSeq: disk.durable }
      }),
    { segmentBytes: options.segmentBytes ?? 8 * 1024 }
  )
  if (Exit.isFailure(exit)) throw new Error(`writeDisk failed: ${Cause.pretty(exit.cause)}`)
  return exit.value
}

export const readMetaFile = (diskDir: string): DiskMeta => {
  const { format, diskId, blockSize, blockCount, createdAt } = JSON.parse(
    fs.readFileSync(path.join(diskDir, "disk.json"), "utf8")
  )
  return { format, diskId, blockSize, blockCount, createdAt }
}

/** Flips the bits of byte `offset` of `file` (xor `mask`). */
export const flipByte = (file: string, offset: number, mask = 0x5a): void => {
  const fd = fs.openSync(file, "r+")
  try {
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, offset)
    b[0]! ^= mask
    fs.writeSync(fd, b, 0, 1, offset)
  } finally {
    fs.closeSync(fd)
  }
}

/** Every file of a directory with a digest of its bytes. */
export const snapshot = (dir: string): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const name of fs.readdirSync(dir).sort()) {
    const file = path.join(dir, name)
    const stat = fs.statSync(file)
    if (!stat.isFile()) continue
    out[name] = createHash("sha256").update(fs.readFileSync(file)).digest("hex")
  }
  return out
}

/**
 * Forges `segment`'s `.bix` as a valid file (its CRC right) holding the map the
 * `blockIndexKeepsOldest` mutant builds: each range names the oldest record that wrote it.
 * Its file and that map.
 */
export const forgeOldestBlockIndex = (
  chain: Chain,
  segment: Segment
): { readonly file: string; readonly oldest: ReadonlyArray<Extent> } => {
  ReceiverMutants.blockIndexKeepsOldest = true
  let oldest: ReadonlyArray<Extent>
  try {
    oldest = buildMap(chain.meta, segment.entries!)
  } finally {
    ReceiverMutants.blockIndexKeepsOldest = false
  }
  const file = path.join(chain.diskDir, blockIndexName(segment.name))
  fs.writeFileSync(file, encodeBlockIndex(coversOf(chain, segment), oldest))
  return { file, oldest }
}

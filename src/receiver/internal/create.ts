/**
 * Creating a disk's directory (docs/receiver.md, On-disk layout), so that a creation cut
 * short is recognised without deleting anything that may hold data:
 *
 * 1. `DIR/.creating-<name>/` is made (and `DIR` fsynced);
 * 2. `base.img` is written in it (aside, fsynced, renamed): the empty disk, format 2;
 * 3. `disk.json` is written in it (aside, fsynced, renamed, the directory fsynced);
 * 4. the directory is renamed to `DIR/<name>/` and `DIR` fsynced.
 *
 * A disk directory therefore appears whole or not at all. A crash before step 4 leaves
 * `.creating-<name>` (skipped by discovery: names starting with "." are the receiver's
 * own), which never held a record: the disk's next creation removes its known files and
 * the directory — or, if it holds anything else, moves it aside. A disk directory without
 * `disk.json` (left by the creation order of older versions, or by hand) is never removed:
 * if it provably holds nothing acked it is moved aside to `.aside-<name>-<time>`, else the
 * disk is refused (`inspectDiskDir`).
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import type * as Geometry from "../../domain/Geometry.js"
import { BASE_FILE, writeEmptyBase } from "./base.js"
import { diskDirName, encodeMeta, META_FILE } from "./chain.js"
import { isEnoent, syncDirectory, writeFileAtomic } from "./files.js"

const STAGED_FILES = new Set([BASE_FILE, `${BASE_FILE}.tmp`, META_FILE, `${META_FILE}.tmp`])

const stamp = () => new Date().toISOString().replace(/[:.]/g, "-")

/** Moves `from` (a directory in `dir`) to `dir/.aside-<name>-<time>`; returns the new path. */
export const setAside = async (dir: string, from: string): Promise<string> => {
  const to = path.join(dir, `.aside-${path.basename(from)}-${stamp()}`)
  await fs.rename(from, to)
  await syncDirectory(dir)
  return to
}

/**
 * Clears a disk directory found `Unfinished` (no disk.json, provably nothing acked): an empty
 * one is removed, anything else moved aside. Returns where it was moved, if it was.
 */
export const clearUnfinished = async (dir: string, diskDir: string): Promise<string | undefined> => {
  if ((await fs.readdir(diskDir)).length > 0) return setAside(dir, diskDir)
  await fs.rmdir(diskDir)
  await syncDirectory(dir)
  return undefined
}

/** Clears what a creation cut short left in `staging`; returns where it was moved, if it was. */
const clearStaging = async (dir: string, staging: string): Promise<string | undefined> => {
  let names: Array<string>
  try {
    names = await fs.readdir(staging)
  } catch (e) {
    if (isEnoent(e)) return undefined
    throw e
  }
  // Only the creation's own files (no record is ever written before the final rename).
  if (!names.every((n) => STAGED_FILES.has(n))) return setAside(dir, staging)
  for (const name of names) await fs.unlink(path.join(staging, name))
  await fs.rmdir(staging)
  await syncDirectory(dir)
  return undefined
}

/**
 * Creates the directory of disk `diskId` in `dir` (which must not exist) with its empty
 * base and its `disk.json`; returns the directory and where a stale staging directory was
 * moved, if one was.
 */
export const createDisk = async (
  dir: string,
  diskId: string,
  geometry: Geometry.Geometry
): Promise<{ readonly diskDir: string; readonly movedAside: string | undefined }> => {
  const name = diskDirName(diskId)
  const diskDir = path.join(dir, name)
  const staging = path.join(dir, `.creating-${name}`)
  const movedAside = await clearStaging(dir, staging)
  await fs.mkdir(staging)
  await syncDirectory(dir)
  const base = path.join(staging, BASE_FILE)
  await writeEmptyBase(`${base}.tmp`, geometry)
  await fs.rename(`${base}.tmp`, base)
  await writeFileAtomic(
    path.join(staging, META_FILE),
    encodeMeta({
      diskId,
      blockSize: geometry.blockSize,
      blockCount: geometry.blockCount,
      createdAt: new Date().toISOString()
    })
  )
  // rename(2) replaces an empty directory only: a directory holding anything fails it.
  await fs.rename(staging, diskDir)
  await syncDirectory(dir)
  return { diskDir, movedAside }
}

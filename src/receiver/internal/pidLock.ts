/**
 * An advisory lock file holding its owner's `pid starttime` (the receiver directory's
 * `.lock`, an overlay's `FILE.lock`): created with O_EXCL; a lock whose process is gone (a
 * crash, a SIGKILL) or whose pid now names another process (the start time differs) is
 * taken over. It keeps a second process from sharing the file by mistake.
 */
import * as fs from "node:fs/promises"
import { readIfExists, removeIfExists } from "./files.js"

/** The process's start time (clock ticks since boot, Linux), to tell a live owner from a reused pid. */
const startTimeOf = async (pid: number): Promise<string | undefined> => {
  const stat = await readIfExists(`/proc/${pid}/stat`).catch(() => undefined)
  // Fields after the command name (which may hold spaces): state is field 3, starttime field 22.
  const fields = stat?.toString("utf8").split(") ").at(-1)?.split(" ")
  return fields?.[19]
}

const isAlive = async (pid: number, started: string | undefined): Promise<boolean> => {
  try {
    process.kill(pid, 0)
  } catch (e) {
    if (!(typeof e === "object" && e !== null && "code" in e && e.code === "EPERM")) return false
  }
  if (started === undefined) return true
  const now = await startTimeOf(pid)
  return now === undefined || now === started
}

/**
 * Takes the lock `file`: `undefined` once taken, or the pid of the live process holding it
 * (0 when it kept changing hands). A lock naming this process is taken as stale: the caller
 * keeps its own record of what it holds.
 */
export const takeLock = async (file: string): Promise<number | undefined> => {
  const mine = `${process.pid} ${(await startTimeOf(process.pid)) ?? "-"}\n`
  for (let round = 0; round < 3; round++) {
    try {
      const handle = await fs.open(file, "wx", 0o644)
      try {
        await handle.writeFile(mine)
      } finally {
        await handle.close()
      }
      return undefined
    } catch (e) {
      if (!(typeof e === "object" && e !== null && "code" in e && e.code === "EEXIST")) throw e
    }
    const [pidText, started] = ((await readIfExists(file))?.toString("utf8") ?? "").trim().split(" ")
    const pid = Number(pidText)
    if (
      Number.isSafeInteger(pid) &&
      pid > 0 &&
      pid !== process.pid &&
      (await isAlive(pid, started === "-" ? undefined : started))
    )
      return pid
    await removeIfExists(file)
  }
  return 0
}

export const releaseLock = (file: string): Promise<boolean> => removeIfExists(file).catch(() => false)

/**
 * Positional file I/O as plain promises, shared by the file layers (journal, disk,
 * activity log) and the receiver's log store: whole reads and writes at a position
 * (the OS may do less than asked in one call), directory fsync, and ENOENT.
 */
import * as fs from "node:fs/promises"

export const preadFully = async (handle: fs.FileHandle, out: Uint8Array, position: number): Promise<void> => {
  let done = 0
  while (done < out.length) {
    const { bytesRead } = await handle.read(out, done, out.length - done, position + done)
    if (bytesRead === 0) throw new Error(`unexpected end of file at byte ${position + done}`)
    done += bytesRead
  }
}

export const pwriteFully = async (
  handle: fs.FileHandle,
  bytes: Uint8Array,
  position: number
): Promise<void> => {
  let done = 0
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position + done)
    done += bytesWritten
  }
}

/** fsync of a directory: makes the entries created, renamed or removed in it durable. */
export const syncDirectory = async (directory: string): Promise<void> => {
  const handle = await fs.open(directory, "r")
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

export const isEnoent = (cause: unknown): boolean =>
  typeof cause === "object" && cause !== null && "code" in cause && cause.code === "ENOENT"

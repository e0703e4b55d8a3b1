/**
 * QEMU's own replication for the NBD bench: `qemu-storage-daemon` serves the image over
 * NBD (page cache, like the others) while a `blockdev-mirror` job copies every write to a
 * `qemu-nbd` target — `copy-mode: write-blocking` (the "active mirror": a guest write is
 * answered once the target has it too) or `background` (the dirty bitmap is copied behind
 * the guest). Driven over QMP on a unix socket: the mirror's initial full copy runs first,
 * the bench starts at BLOCK_JOB_READY.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"

export type CopyMode = "write-blocking" | "background"

export interface Mirror {
  readonly uri: string
  /** Bytes the mirror job has copied so far and must still copy (QMP query-block-jobs). */
  jobProgress(): Promise<{ readonly offset: number; readonly len: number } | undefined>
  close(): Promise<void>
}

const waitForPath = async (file: string, child: ChildProcess, what: string) => {
  const deadline = Date.now() + 20_000
  while (!fs.existsSync(file)) {
    if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode}`)
    if (Date.now() > deadline) throw new Error(`${what} did not create ${file} in 20 s`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** A QMP connection: commands in order, events kept for `waitEvent`. */
const qmp = async (socketPath: string) => {
  const socket = net.connect(socketPath)
  socket.setEncoding("utf8")
  let buffer = ""
  const replies: Array<(m: Record<string, unknown>) => void> = []
  const events: Array<Record<string, unknown>> = []
  const eventWaiters: Array<() => void> = []
  let greeted: () => void = () => {}
  const greeting = new Promise<void>((r) => {
    greeted = r
  })
  socket.on("data", (chunk: string) => {
    buffer += chunk
    for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
      const line = buffer.slice(0, nl).trim()
      buffer = buffer.slice(nl + 1)
      if (line === "") continue
      const m = JSON.parse(line) as Record<string, unknown>
      if ("QMP" in m) greeted()
      else if ("event" in m) {
        events.push(m)
        for (const wake of eventWaiters.splice(0)) wake()
      } else replies.shift()?.(m)
    }
  })
  await greeting
  const execute = (command: string, args?: Record<string, unknown>) =>
    new Promise<unknown>((resolve, reject) => {
      replies.push((m) =>
        "error" in m ? reject(new Error(`QMP ${command}: ${JSON.stringify(m.error)}`)) : resolve(m.return)
      )
      socket.write(
        `${JSON.stringify({ execute: command, ...(args === undefined ? {} : { arguments: args }) })}\n`
      )
    })
  const waitEvent = async (name: string, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const hit = events.find((e) => e.event === name)
      if (hit !== undefined) return hit
      const failed = events.find((e) => e.event === "BLOCK_JOB_COMPLETED" || e.event === "BLOCK_JOB_ERROR")
      if (failed !== undefined && name !== failed.event)
        throw new Error(`mirror job ended before ${name}: ${JSON.stringify(failed)}`)
      if (Date.now() > deadline) throw new Error(`no ${name} within ${timeoutMs} ms`)
      await new Promise<void>((r) => {
        eventWaiters.push(r)
        setTimeout(r, 200)
      })
    }
  }
  await execute("qmp_capabilities")
  return { execute, waitEvent, close: () => socket.destroy() }
}

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
    setTimeout(() => child.kill("SIGKILL"), 10_000).unref()
  })

/**
 * Serves `image` with `qemu-storage-daemon` and mirrors it to a `qemu-nbd` target on
 * `target` (a raw image of the same size) in `mode`; resolves once the job is READY.
 */
export const start = async (options: {
  readonly dir: string
  readonly image: string
  readonly target: string
  readonly mode: CopyMode
  readonly qemuNbd: string
  readonly qsd: string
}): Promise<Mirror> => {
  const { dir } = options
  const targetSock = path.join(dir, "target.sock")
  const exportSock = path.join(dir, "qsd.sock")
  const qmpSock = path.join(dir, "qmp.sock")
  for (const f of [targetSock, exportSock, qmpSock]) fs.rmSync(f, { force: true })
  const children: Array<ChildProcess> = []
  const stderr = (child: ChildProcess, name: string) => {
    let text = ""
    child.stderr?.setEncoding("utf8").on("data", (s: string) => {
      text = (text + s).slice(-4000)
    })
    child.once("exit", (code) => {
      if (code !== 0 && code !== null && text !== "") process.stderr.write(`${name}: ${text}\n`)
    })
  }
  const target = spawn(
    options.qemuNbd,
    [
      "--format=raw",
      "--persistent",
      "--shared=4",
      `--socket=${targetSock}`,
      "--export-name=target",
      options.target
    ],
    { stdio: ["ignore", "ignore", "pipe"] }
  )
  children.push(target)
  stderr(target, "qemu-nbd (mirror target)")
  try {
    await waitForPath(targetSock, target, "qemu-nbd (mirror target)")
    const qsd = spawn(
      options.qsd,
      [
        "--blockdev",
        `driver=file,node-name=file0,filename=${options.image},cache.direct=off,discard=unmap`,
        "--blockdev",
        "driver=raw,node-name=disk0,file=file0,discard=unmap",
        "--nbd-server",
        `addr.type=unix,addr.path=${exportSock}`,
        "--export",
        "type=nbd,id=export0,node-name=disk0,name=bench,writable=on",
        "--chardev",
        `socket,id=qmp0,path=${qmpSock},server=on,wait=off`,
        "--monitor",
        "chardev=qmp0"
      ],
      { stdio: ["ignore", "ignore", "pipe"] }
    )
    children.push(qsd)
    stderr(qsd, "qemu-storage-daemon")
    await waitForPath(qmpSock, qsd, "qemu-storage-daemon")
    await waitForPath(exportSock, qsd, "qemu-storage-daemon")
    const monitor = await qmp(qmpSock)
    await monitor.execute("blockdev-add", {
      driver: "nbd",
      "node-name": "target0",
      server: { type: "unix", path: targetSock },
      export: "target"
    })
    await monitor.execute("blockdev-mirror", {
      "job-id": "mirror0",
      device: "disk0",
      target: "target0",
      sync: "full",
      "copy-mode": options.mode
    })
    await monitor.waitEvent("BLOCK_JOB_READY", 120_000)
    return {
      uri: `nbd+unix:///bench?socket=${exportSock}`,
      jobProgress: async () => {
        const jobs = (await monitor.execute("query-block-jobs")) as ReadonlyArray<{
          offset: number
          len: number
        }>
        const job = jobs[0]
        return job === undefined ? undefined : { offset: job.offset, len: job.len }
      },
      close: async () => {
        monitor.close()
        for (const c of children.reverse()) await stop(c)
      }
    }
  } catch (e) {
    for (const c of children.reverse()) await stop(c)
    throw e
  }
}

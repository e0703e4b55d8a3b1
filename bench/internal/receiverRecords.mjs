/**
 * The receiver's CPU per 4 KiB record, alone: the real receiver (`dist/cli/main.js
 * receiver`, a child process) fed by a sender that does nothing but send encoded write
 * frames over loopback TCP (at most 16 MiB unacked), so the receiver sets the pace, not a
 * filter. Prints the receiver's CPU (utime + stime from /proc/PID/stat) per record over the
 * records after the first WARM (JIT warm-up), and the rate. Plain JavaScript over the built
 * package: `node bench/internal/receiverRecords.mjs ROOT [RECORDS] [WARM]` (ROOT: a checkout
 * whose dist/ is built; old and new builds are compared by alternating ROOTs under the bench lock).
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

const root = path.resolve(process.argv[2] ?? ".")
const RECORDS = Number(process.argv[3] ?? 150_000)
const WARM = Number(process.argv[4] ?? 30_000)
const SIZE = 4096
const WINDOW = (16 << 20) / (SIZE + 40)
const CLK_TCK = 100

const { Wire } = await import(path.join(root, "dist/protocol/index.js"))
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-receiver-records-"))
// RECEIVER_NODE_FLAGS (e.g. `--cpu-prof --cpu-prof-dir=DIR`) go to the receiver's node.
const flags = (process.env.RECEIVER_NODE_FLAGS ?? "").split(" ").filter((f) => f !== "")
const child = spawn(
  process.execPath,
  [...flags, path.join(root, "dist/cli/main.js"), "receiver", "--dir", dir, "--port", "0"],
  {
    stdio: ["ignore", "pipe", "inherit"]
  }
)
const address = await new Promise((resolve, reject) => {
  let out = ""
  child.stdout.setEncoding("utf8").on("data", (s) => {
    out += s
    const m = /listening (\S+):(\d+)/.exec(out)
    if (m !== null) resolve({ host: m[1], port: Number(m[2]) })
  })
  child.once("exit", (code) => reject(new Error(`receiver exited ${code}`)))
})
/** The receiver's CPU time so far (all its threads), µs: user and system apart. */
const cpuTimes = () => {
  const stat = fs.readFileSync(`/proc/${child.pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return { user: (Number(fields[11]) * 1e6) / CLK_TCK, system: (Number(fields[12]) * 1e6) / CLK_TCK }
}
const cpuUs = () => {
  const t = cpuTimes()
  return t.user + t.system
}

const socket = net.connect(address.port, address.host)
socket.setNoDelay(true)
await new Promise((resolve) => socket.once("connect", resolve))
const decoder = Wire.makeDecoder()
let acked = 0
let welcomed
const welcome = new Promise((resolve) => {
  welcomed = resolve
})
let wake
socket.on("data", (chunk) => {
  const frames = decoder.push(chunk)
  if (frames._tag === "Left") throw new Error(String(frames.left))
  for (const f of frames.right) {
    if (f._tag === "Welcome") welcomed(f.durableSeq)
    else if (f._tag === "Ack") acked = Math.max(acked, f.seq)
    else if (f._tag !== "KeepAlive") throw new Error(`unexpected ${f._tag}`)
  }
  wake?.()
})
socket.write(
  Wire.encode({ _tag: "Hello", diskId: "bench", blockSize: SIZE, blockCount: 65536, watermark: 0 })
)
await welcome

const data = new Uint8Array(SIZE)
for (let i = 0; i < SIZE; i++) data[i] = (i * 2654435761) >>> 24
let sent = 0
let from
let fromSystem
let fromUs
let warm = 0
let t0
const waitAcks = (until) =>
  new Promise((resolve) => {
    const check = () => {
      if (acked >= until) {
        wake = undefined
        resolve()
      }
    }
    wake = check
    check()
  })
while (sent < RECORDS) {
  if (sent - acked >= WINDOW) await waitAcks(sent - WINDOW / 2)
  if (from === undefined && sent >= WARM) {
    await waitAcks(sent)
    warm = sent
    from = cpuUs()
    fromSystem = cpuTimes().system
    t0 = performance.now()
    fromUs = Number(process.hrtime.bigint() / 1000n)
  }
  const parts = []
  const n = Math.min(64, RECORDS - sent)
  for (let k = 0; k < n; k++) {
    sent++
    parts.push(
      Wire.encode({ _tag: "Write", seq: sent, epoch: 0, offset: ((sent * 7919) % 65536) * SIZE, data })
    )
  }
  if (!socket.write(Buffer.concat(parts))) await new Promise((resolve) => socket.once("drain", resolve))
}
await waitAcks(RECORDS)
const cpu = cpuUs() - from
const system = cpuTimes().system - fromSystem
const toUs = Number(process.hrtime.bigint() / 1000n)
const ms = performance.now() - t0
const n = RECORDS - warm
// With RUN_JSON=FILE: the measured interval and its records, for `profile.mjs --window FILE`.
if (process.env.RUN_JSON !== undefined)
  fs.writeFileSync(process.env.RUN_JSON, JSON.stringify({ window: { fromUs, toUs }, records: n, cpuUs: cpu }))
console.log(
  `receiver CPU per 4 KiB record: ${(cpu / n).toFixed(2)} µs, of it system ${(system / n).toFixed(2)} µs (${n} records, ${(n / (ms / 1000)).toFixed(0)} records/s, ${((n * SIZE) / 1e3 / ms).toFixed(1)} MB/s)`
)
socket.destroy()
child.kill("SIGTERM")
await new Promise((resolve) => child.once("exit", resolve))
fs.rmSync(dir, { recursive: true, force: true })

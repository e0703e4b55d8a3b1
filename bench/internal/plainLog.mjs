/**
 * The receiving half of the bench's plainest pipeline: appends every byte it receives
 * to a log file, fdatasyncs every 4 MiB and acks the durable byte count (8 bytes, a
 * little-endian double). No frames, no CRC, no index: a reference for what the
 * machine allows, not a receiver. Usage: `node plainLog.mjs DIR`; prints
 * `listening 127.0.0.1:PORT`.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"

const fd = fs.openSync(path.join(process.argv[2], "log"), "w")
const ack = (socket, bytes) => {
  const out = Buffer.allocUnsafe(8)
  out.writeDoubleLE(bytes)
  socket.write(out)
}
const server = net.createServer({ noDelay: true }, (socket) => {
  let total = 0
  let unsynced = 0
  socket.on("error", () => {})
  socket.on("data", (chunk) => {
    fs.writeSync(fd, chunk)
    total += chunk.length
    unsynced += chunk.length
    if (unsynced >= 4 << 20) {
      fs.fdatasyncSync(fd)
      unsynced = 0
      ack(socket, total)
    }
  })
  socket.on("end", () => {
    fs.fdatasyncSync(fd)
    ack(socket, total)
    socket.end()
  })
})
server.listen(0, "127.0.0.1", () => console.log(`listening 127.0.0.1:${server.address().port}`))
process.on("SIGTERM", () => process.exit(0))

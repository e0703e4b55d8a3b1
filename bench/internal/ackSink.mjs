/**
 * A log receiver that keeps nothing: it decodes and checks every frame (header and
 * payload CRC, like the real receiver) and acks each chunk's last record at once,
 * with no log and no fsync. The live-stream bench runs the filter against it to
 * measure the filter's own cost beside raw TCP. Prints `listening 127.0.0.1:PORT`.
 * Plain JavaScript over the built package, so it starts as a bare child process.
 */
import * as net from "node:net"
import { encode, makeDecoder } from "../../dist/protocol/Wire.js"

const server = net.createServer({ noDelay: true, highWaterMark: 1 << 20 }, (socket) => {
  const decoder = makeDecoder()
  let welcomed = false
  socket.on("error", () => {})
  socket.on("data", (chunk) => {
    const frames = []
    const error = decoder.pushInto(chunk, frames)
    let last = -1
    for (const frame of frames) {
      if (frame._tag === "Hello" && !welcomed) {
        welcomed = true
        socket.write(encode({ _tag: "Welcome", durableSeq: frame.watermark }))
      } else if ("seq" in frame) last = frame.seq
    }
    if (last >= 0) socket.write(encode({ _tag: "Ack", seq: last }))
    if (error !== undefined) socket.destroy()
  })
})
server.listen(0, "127.0.0.1", () => console.log(`listening 127.0.0.1:${server.address().port}`))
process.on("SIGTERM", () => process.exit(0))

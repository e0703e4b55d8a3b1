/**
 * The wire decoder alone on 64 KiB write frames cut into socket reads of one size: process
 * CPU per frame (`process.cpuUsage`, the collector included). Every payload spans reads (or
 * most do), so each is copied; the copies are handed back (`Wire.payloadRelease`, where the
 * build has it) `HOLD` frames later, as the receiver's log does once the record is written.
 * Usage: `node bench/internal/decoderCopies.mjs ROOT READ_BYTES HOLD` (ROOT: a built checkout).
 */
const [root, readArg, holdArg] = process.argv.slice(2)
const readBytes = Number(readArg)
const hold = Number(holdArg)
const Wire = await import(`${root}/dist/protocol/Wire.js`)

const frames = Array.from({ length: 64 }, (_, i) =>
  Wire.encode({ _tag: "Write", seq: i + 1, epoch: 1, offset: i * 65536, data: new Uint8Array(65536).fill(i) })
)
const all = Buffer.concat(frames)
const reads = []
for (let at = 0; at < all.length; at += readBytes) reads.push(Buffer.from(all.subarray(at, at + readBytes)))

const held = []
const run = (streams) => {
  let count = 0
  for (let r = 0; r < streams; r++) {
    const decoder = Wire.makeDecoder()
    const out = []
    for (const read of reads) decoder.pushInto(read, out)
    for (const frame of out) {
      count++
      held.push(frame)
      if (held.length > hold) Wire.payloadRelease?.(held.shift())?.()
    }
  }
  return count
}
run(20) // warm-up
const before = process.cpuUsage()
const n = run(100)
const used = process.cpuUsage(before)
console.log(
  `${root}: reads of ${readBytes} bytes, released ${hold} frames later: ${((used.user + used.system) / n).toFixed(1)} µs per 64 KiB frame`
)

/**
 * The wire codec's throughput: encoding write frames and decoding a socket-like stream
 * of them (64 KiB chunks), for 4 KiB and 64 KiB payloads. Baseline: the bytes copied
 * into a Buffer once and one CRC32C over them, the least any checked framing must do.
 * Run alone: `npx tsx bench/adapters-wire.ts`.
 */
import { crc32c } from "../dist/internal/crc32c.js"
import * as Wire from "../dist/protocol/Wire.js"
import { type BenchRow, opsPerSecond, renderTable } from "./table.js"

const STREAM_BYTES = 16 << 20
const CHUNK = 64 * 1024
const MS = 300
/** Figures are noisy on a shared machine: interleave figure and baseline, keep the best of each. */
const ROUNDS = 3
const best = (measure: () => number, baseline: () => number): readonly [number, number] => {
  let value = 0
  let base = 0
  for (let i = 0; i < ROUNDS; i++) {
    value = Math.max(value, measure())
    base = Math.max(base, baseline())
  }
  return [value, base]
}

const payloadOf = (size: number): Uint8Array => {
  const data = new Uint8Array(size)
  for (let i = 0; i < size; i++) data[i] = (i * 2654435761) >>> 24
  return data
}

const rows = (size: number): Array<BenchRow> => {
  const data = payloadOf(size)
  const count = Math.max(1, Math.floor(STREAM_BYTES / size))
  const frame = (seq: number): Wire.Write => ({ _tag: "Write", seq, epoch: 1, offset: seq * size, data })
  const MB = (bytesPerSecond: number) => bytesPerSecond / 1e6

  // Encode: a batch of frames per call.
  const batch = Math.max(1, Math.floor((1 << 20) / size))
  let seq = 1
  let sink = 0
  const [encodeRate, encodeBaseline] = best(
    () =>
      opsPerSecond(() => {
        for (let i = 0; i < batch; i++) sink ^= Wire.encode(frame(seq++)).byteLength
        return batch * size
      }, MS),
    () =>
      opsPerSecond(() => {
        for (let i = 0; i < batch; i++) {
          const copy = Buffer.allocUnsafe(size)
          copy.set(data)
          sink ^= crc32c(copy)
        }
        return batch * size
      }, MS)
  )

  // Decode: the stream as a socket delivers it, in 64 KiB chunks that split frames anywhere.
  const stream = Buffer.concat(Array.from({ length: count }, (_, i) => Wire.encode(frame(i + 1))))
  const chunks: Array<Uint8Array> = []
  for (let at = 0; at < stream.byteLength; at += CHUNK) chunks.push(stream.subarray(at, at + CHUNK))
  const [decodeRate, decodeBaseline] = best(
    () =>
      opsPerSecond(() => {
        const decoder = Wire.makeDecoder()
        const out: Array<Wire.Frame> = []
        for (const chunk of chunks)
          if (decoder.pushInto(chunk, out) !== undefined) throw new Error("bench: decode failed")
        if (out.length !== count) throw new Error("bench: frames missing")
        return count * size
      }, MS),
    () =>
      opsPerSecond(() => {
        sink ^= crc32c(Buffer.concat(chunks, stream.byteLength))
        return count * size
      }, MS)
  )
  if (sink === 0.5) console.log(sink) // keep the work observable

  const label = size >= 1024 ? `${size / 1024} KiB` : `${size} B`
  const baselineName = "copy + one CRC32C"
  return [
    {
      name: `encode write frames, ${label} payload`,
      value: MB(encodeRate),
      unit: "MB/s",
      baseline: MB(encodeBaseline),
      baselineName,
      higherIsBetter: true
    },
    {
      name: `decode write frames, ${label} payload (64 KiB chunks)`,
      value: MB(decodeRate),
      unit: "MB/s",
      baseline: MB(decodeBaseline),
      baselineName,
      higherIsBetter: true
    }
  ]
}

export const run = async (): Promise<ReadonlyArray<BenchRow>> => {
  rows(4096) // warm up the JIT and the CRC binding
  return [...rows(4096), ...rows(65536)]
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((result) => console.log(renderTable("adapters: wire codec", result)))
}

/**
 * A process writing to an overlay until it is killed, for
 * test/integration/overlay-sigkill.test.ts. Plain JavaScript on dist/ (built by the suite's
 * global setup). Round r writes `roundWrites(r)` (pattern bytes of r) over the point
 * `pointByte`; every 4th round it flushes and prints `flushed r` once the flush is done.
 * Prints `ready` once the overlay is open. argv[2] is JSON: { file, diskId, diskBytes, seq, pointTime }.
 */
import { openOverlay } from "../../dist/receiver/internal/overlay.js"

/** Byte `i` of the point (never 0). */
export const pointByte = (i) => ((Math.floor(i / 512) * 37 + (i % 512)) % 251) + 1

/** The writes of round `r` on a disk of `diskBytes`: one to three, 512-granular, some across clusters. */
export const roundWrites = (r, diskBytes) => {
  const sectors = diskBytes / 512
  const out = []
  for (let k = 0; k <= r % 3; k++) {
    const first = (r * 37 + k * 101) % sectors
    const count = Math.min(1 + ((r + k) % 10), sectors - first)
    const bytes = Buffer.alloc(count * 512)
    for (let i = 0; i < bytes.length; i++) bytes[i] = ((r * 13 + k * 7 + i) % 255) + 1
    out.push({ offset: first * 512, bytes })
  }
  return out
}

const main = async () => {
  const o = JSON.parse(process.argv[2])
  const under = async (offset, length) => Buffer.from(Array.from({ length }, (_, i) => pointByte(offset + i)))
  const overlay = await openOverlay(o.file, o)
  process.stdout.write("ready\n")
  for (let r = 1; ; r++) {
    // Some rounds as one request, some as concurrent ones.
    const writes = roundWrites(r, o.diskBytes)
    if (r % 2 === 0) await overlay.write(writes, under)
    else for (const w of writes) await overlay.write([w], under)
    if (r % 4 === 0) {
      await overlay.flush()
      process.stdout.write(`flushed ${r}\n`)
    }
  }
}

if (process.argv[2] !== undefined) await main()

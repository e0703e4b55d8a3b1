// The block digest's candidates on this machine (docs/wire.md, "Checksums"): ms per GiB of
// blocks of 4 KiB and 64 KiB, median of 5 runs over the same 256 MiB of random bytes in
// memory (no I/O), the algorithms interleaved run by run. Run it under the bench lock:
//   flock -o /tmp/cdp-bench.lock node bench/internal/digestTable.mjs
import { createHash, hash, randomBytes } from "node:crypto"
import { blake3 } from "@napi-rs/blake-hash"

const MiB = 1 << 20
const TOTAL = 256 * MiB
const data = Buffer.alloc(TOTAL)
for (let at = 0; at < TOTAL; at += 16 * MiB) randomBytes(16 * MiB).copy(data, at)

const candidates = {
  "SHA-256 createHash": (b) => createHash("sha256").update(b).digest(),
  "SHA-256 crypto.hash": (b) => hash("sha256", b, "buffer"),
  "BLAKE3 @napi-rs/blake-hash": (b) => blake3(b)
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
for (const block of [4096, 65536]) {
  const runs = Object.fromEntries(Object.keys(candidates).map((k) => [k, []]))
  for (let round = 0; round < 5; round++)
    for (const [name, f] of Object.entries(candidates)) {
      const start = performance.now()
      for (let at = 0; at < TOTAL; at += block) f(data.subarray(at, at + block))
      runs[name].push(((performance.now() - start) * (1024 * MiB)) / TOTAL)
    }
  for (const [name, xs] of Object.entries(runs))
    console.log(
      `${block / 1024} KiB\t${name}\t${median(xs).toFixed(0)} ms/GiB\t(${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)})`
    )
}

/**
 * nbdinfo (libnbd) sees the handshake, the size, the transmission flags and the block
 * sizes the export advertises, lists it by name, and a read-only export says so and
 * refuses qemu-io's writes, leaving the image as it was.
 */
import * as fs from "node:fs/promises"
import { Effect } from "effect"
import { afterEach, expect, it } from "vitest"
import * as Nbd from "../../src/nbd/Nbd.js"
import { MiB, mustRun, type NbdExport, runTool, serve, stopAndCompareReplica } from "../support/nbdExport.js"
import { need } from "../support/tools.js"

const SIZE = 16 * MiB
let exp: NbdExport | undefined
afterEach(async () => {
  await exp?.dispose()
  exp = undefined
})

interface Info {
  readonly protocol: string
  readonly exports: ReadonlyArray<Record<string, unknown>>
}

it("nbdinfo --json: newstyle-fixed, the size, flush/FUA/trim/zero, writable, block sizes; --list names it", async (ctx) => {
  const t = need(ctx, "nbdinfo")
  exp = await serve({ size: SIZE, exportName: "vm-disk" })
  const info = JSON.parse((await mustRun(t.nbdinfo, ["--json", exp.uri])).stdout) as Info
  expect(info.protocol).toBe("newstyle-fixed")
  expect(info.exports).toHaveLength(1)
  const e = info.exports[0]!
  expect(e).toMatchObject({
    "export-name": "vm-disk",
    "export-size": SIZE,
    is_read_only: false,
    can_flush: true,
    can_fua: true,
    can_trim: true,
    can_zero: true,
    // FLUSH covers the writes answered on every connection (both servers say so).
    can_multi_conn: true
  })
  // NBD_INFO_BLOCK_SIZE: minimum ≤ preferred ≤ maximum, powers of two, the maximum at least 1 MiB.
  const min = e.block_size_minimum as number
  const preferred = e.block_size_preferred as number
  const max = e.block_size_maximum as number
  for (const n of [min, preferred]) expect(Number.isInteger(Math.log2(n))).toBe(true)
  expect(min).toBeLessThanOrEqual(preferred)
  expect(preferred).toBeLessThanOrEqual(max)
  expect(max).toBeGreaterThanOrEqual(MiB)

  // NBD_OPT_LIST.
  const listed = JSON.parse((await mustRun(t.nbdinfo, ["--list", "--json", exp.uri])).stdout) as Info
  expect(listed.exports.map((x) => x["export-name"])).toContain("vm-disk")
  // A name the server does not export is refused in the handshake.
  const other = exp.uri.replace("vm-disk", "no-such-export")
  expect((await runTool(t.nbdinfo, ["--json", other])).code).not.toBe(0)
  await stopAndCompareReplica(exp)
})

it("a read-only export says so, and qemu-io's writes to it fail with a permission error", async (ctx) => {
  const t = need(ctx, "nbdinfo", "qemu-io")
  exp = await serve({ size: SIZE, readOnly: true })
  const info = JSON.parse((await mustRun(t.nbdinfo, ["--json", exp.uri])).stdout) as Info
  expect(info.exports[0]).toMatchObject({ is_read_only: true, "export-size": SIZE })
  // Opened read-write, qemu refuses the export; opened read-only, the write is refused.
  const rw = await runTool(t["qemu-io"], ["-f", "raw", "-c", "write -P 0x77 0 4k", exp.uri])
  expect(rw.code).toBe(1)
  expect(rw.stderr + rw.stdout).toMatch(/Permission denied|Operation not permitted|read-only/i)
  const ro = await runTool(t["qemu-io"], [
    "-r",
    "-f",
    "raw",
    "-c",
    "write -P 0x77 0 4k",
    "-c",
    "read -P 0 0 4k",
    exp.uri
  ])
  expect(ro.code).toBe(1)
  expect(ro.stderr + ro.stdout).toMatch(/read-only|Operation not permitted|Permission denied/i)
  // qemu refuses before sending anything; the server itself answers EPERM to a client
  // that writes anyway (the project's small client sends what it is told).
  const m = /^nbd:\/\/([^:/]+):(\d+)\/(.*)$/.exec(exp.uri)
  if (m !== null) {
    const refused = await Effect.runPromise(
      Nbd.withClient({ connect: { host: m[1]!, port: Number(m[2]) }, exportName: m[3]! }, (client) =>
        Effect.all([
          Effect.flip(client.write(0, new Uint8Array(4096).fill(0x77))),
          Effect.flip(client.write(4096, new Uint8Array(512), { fua: true })),
          Effect.flip(client.trim(0, 65536)),
          Effect.flip(client.writeZeroes(0, 65536))
        ])
      )
    )
    for (const e of refused) expect(e).toMatchObject({ _tag: "NbdCommandFailed", error: Nbd.errors.EPERM })
  } else expect(exp.server).toBe("qemu-nbd")
  // Reads work.
  await mustRun(t["qemu-io"], ["-r", "-f", "raw", "-c", `read -q -P 0 0 ${SIZE}`, exp.uri])
  await exp.stop()
  expect((await fs.readFile(exp.image)).equals(Buffer.alloc(SIZE))).toBe(true)
})

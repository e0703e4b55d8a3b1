/**
 * End to end: fio writes (and verifies) through the export while the link between
 * `cdp-sync serve` and the log receiver goes through the fault proxy and is cut, stalled,
 * and the receiver is SIGKILLed and restarted. Then serve stops (SIGTERM: every answered
 * write journaled), `cdp-sync replicate --quiesce` on the same journal drains what the
 * receiver still lacks, and the latest recovery point equals the image byte for byte.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit, Scope } from "effect"
import { afterEach, expect, it } from "vitest"
import * as FaultProxy from "../../src/simulator/internal/FaultProxy.js"
import {
  fioJson,
  MiB,
  mustRun,
  type NbdExport,
  serve,
  serverUnderTest,
  stopAndCompareReplica
} from "../support/nbdExport.js"
import * as Proc from "../support/receiverProcess.js"
import { need } from "../support/tools.js"

const SIZE = 16 * MiB
const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

it("fio through serve while the link is cut, stalled and the receiver killed: after the drain the replica equals the image", async (ctx) => {
  const t = need(ctx, "fio")
  if (serverUnderTest() === "qemu-nbd")
    ctx.skip("qemu-nbd replicates nothing: the fault test needs cdp-sync serve")
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-nbd-faults-"))
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }))
  const receiverDir = path.join(dir, "receiver")
  await fs.mkdir(receiverDir)
  let receiver = await Proc.start(receiverDir)
  cleanups.push(() => receiver.kill())
  const scope = Effect.runSync(Scope.make())
  cleanups.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
  const proxy = await Effect.runPromise(Scope.extend(FaultProxy.make(receiver.port), scope))
  const exp: NbdExport = await serve({
    size: SIZE,
    dir,
    receiver: { host: "127.0.0.1", port: proxy.port },
    serveArgs: ["--ack-timeout-ms", "500"]
  })
  cleanups.push(() => exp.dispose())

  // fio runs back to back (each writes all of the disk, then reads and verifies it) until
  // the fault schedule is over.
  let faultsDone = false
  let runs = 0
  const writer = (async () => {
    while (!faultsDone || runs === 0) {
      runs++
      const r = await mustRun(
        t.fio,
        [
          "--name=faults",
          "--ioengine=nbd",
          `--uri=${exp.uri}`,
          "--rw=randwrite",
          "--bsrange=4k-64k",
          "--iodepth=8",
          `--size=${SIZE}`,
          "--verify=crc32c",
          "--do_verify=1",
          "--verify_fatal=1",
          "--verify_state_save=0",
          `--randseed=${runs}`,
          "--output-format=json"
        ],
        { timeoutMs: 90_000 }
      )
      const job = fioJson<{ jobs: Array<{ error: number }> }>(r.stdout).jobs[0]!
      expect(job.error).toBe(0)
    }
  })()
  const run = (e: Effect.Effect<void>) => Effect.runPromise(e)
  try {
    await sleep(400)
    await run(proxy.cut)
    await sleep(600)
    await run(proxy.stallAcks(true))
    await sleep(1500)
    await run(proxy.stallAcks(false))
    await sleep(300)
    await run(proxy.cut)
    await receiver.kill("SIGKILL")
    await sleep(700)
    receiver = await Proc.start(receiverDir)
    await run(proxy.retarget(receiver.port))
    await sleep(800)
    await run(proxy.cut)
    await sleep(500)
  } finally {
    faultsDone = true
  }
  await writer
  // The faults reached the filter: it lost the link more than once.
  expect(exp.stderr().match(/link lost/g)?.length ?? 0).toBeGreaterThanOrEqual(2)
  expect(runs).toBeGreaterThan(0)

  // Serve stops with every answered write journaled; the filter then drains on its own
  // straight to the receiver (no proxy) and exits once the replica is whole.
  await exp.stop()
  const drain = await Proc.run([
    "replicate",
    "--disk",
    exp.image,
    "--receiver",
    `127.0.0.1:${receiver.port}`,
    "--journal",
    path.join(dir, "journal"),
    "--quiesce",
    "--json"
  ])
  expect(drain.code, drain.stderr).toBe(0)
  expect(JSON.parse(drain.stdout.trim().split("\n").at(-1)!)).toMatchObject({ mode: "sync", inFlight: 0 })
  await stopAndCompareReplica(exp)
})

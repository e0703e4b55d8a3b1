/**
 * fio's nbd engine (libnbd): two jobs, each on its own connection and half of the disk,
 * random writes of 4 to 64 KiB at iodepth 16, then fio reads every block back and checks
 * its crc32c. After SIGTERM the latest recovery point equals the image.
 */
import { afterEach, expect, it } from "vitest"
import { fioJson, MiB, mustRun, type NbdExport, serve, stopAndCompareReplica } from "../support/nbdExport.js"
import { need } from "../support/tools.js"

const SIZE = 32 * MiB
let exp: NbdExport | undefined
afterEach(async () => {
  await exp?.dispose()
  exp = undefined
})

interface FioJob {
  readonly error: number
  readonly write: { readonly io_bytes: number; readonly total_ios: number }
  readonly read: { readonly io_bytes: number }
}

it("fio --ioengine=nbd: random writes from two connections verify with crc32c, and the replica equals the image", async (ctx) => {
  const t = need(ctx, "fio")
  exp = await serve({ size: SIZE })
  const r = await mustRun(
    t.fio,
    [
      "--name=interop",
      "--ioengine=nbd",
      `--uri=${exp.uri}`,
      "--rw=randwrite",
      "--bsrange=4k-64k",
      "--iodepth=16",
      "--numjobs=2",
      `--size=${SIZE / 2}`,
      `--offset_increment=${SIZE / 2}`,
      "--verify=crc32c",
      "--do_verify=1",
      "--verify_fatal=1",
      "--verify_state_save=0",
      "--randseed=15",
      "--output-format=json"
    ],
    { timeoutMs: 90_000 }
  )
  const jobs = fioJson<{ jobs: ReadonlyArray<FioJob> }>(r.stdout).jobs
  expect(jobs).toHaveLength(2)
  for (const job of jobs) {
    expect(job.error).toBe(0)
    // Every byte of the job's half written once, and all of it read back and verified.
    expect(job.write.io_bytes).toBe(SIZE / 2)
    expect(job.read.io_bytes).toBe(SIZE / 2)
  }
  await stopAndCompareReplica(exp)
})

/**
 * `cdp-sync replicate` against the wrong disk (issue 13, finding 5), as an operator
 * meets it: the real CLI as a child process, the real receiver as another. Each case
 * ends with exit code 1 and one line on stderr that says why — no stack trace, nothing
 * on stdout — and before any guest write reaches the disk when the disk is the wrong
 * one:
 * - an image shrunk or grown under its journal (refused by the journal's geometry);
 * - an existing image with another --disk-size;
 * - a receiver that holds the disk with another geometry (`geometry-mismatch`: fatal,
 *   not retried for ever);
 * - a fresh journal against a receiver that holds the disk (another history);
 * - a full file system under the journal.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Receiver from "../support/receiverProcess.js"

const MiB = 1024 * 1024

type Ran = Receiver.CliResult

/** One run of `replicate` for a disk against the test's receiver. */
interface Run {
  readonly disk: string
  readonly journal: string
  readonly diskId: string
  readonly diskSize?: string
  /** Guest workload seconds (a refused start must end long before). */
  readonly seconds?: number | undefined
  readonly extra?: ReadonlyArray<string>
}

/**
 * Runs `replicate … --quiesce` to its end. The 90 s guard only bounds a run that would
 * never end (the old filter retried a refusal for ever): a passing run ends long before it.
 */
const replicate = (run: Run): Promise<Ran> =>
  Receiver.run(
    [
      "replicate",
      ...["--disk", run.disk, "--receiver", at(), "--journal", run.journal, "--disk-id", run.diskId],
      ...(run.diskSize === undefined ? [] : ["--disk-size", run.diskSize]),
      ...(run.seconds === undefined ? [] : ["--seconds", String(run.seconds)]),
      ...(run.extra ?? []),
      "--quiesce"
    ],
    { timeoutMs: 90_000 }
  )

/** The last line on stderr, once the status lines (`status mode=…`) are set aside. */
const lastLine = (stderr: string) =>
  stderr
    .trimEnd()
    .split("\n")
    .filter((l) => !l.startsWith("status "))
    .at(-1) ?? ""

/** Exit 1, nothing on stdout, no stack frame, and the last line says why. */
const expectOneLineFailure = (ran: Ran, why: RegExp) => {
  expect(ran.signal, `still running: ${ran.stderr.slice(-2000)}`).toBeNull()
  expect(ran.code).toBe(1)
  expect(ran.stdout).toBe("")
  expect(ran.stderr).not.toMatch(/^\s+at /m)
  expect(lastLine(ran.stderr)).toMatch(/^cdp-sync replicate: /)
  expect(lastLine(ran.stderr)).toMatch(why)
}

const sha256 = async (file: string) =>
  createHash("sha256")
    .update(await fs.readFile(file))
    .digest("hex")

let root: string
let receiver: Receiver.ReceiverProcess
const at = () => `127.0.0.1:${receiver.port}`

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), "cdp-sync-wrong-disk-"))
  await fs.mkdir(path.join(root, "receiver"))
  receiver = await Receiver.start(path.join(root, "receiver"))
})
afterAll(async () => {
  await receiver?.kill()
  await fs.rm(root, { recursive: true, force: true })
})

let cases = 0
/** A fresh directory for one case: its image and journals. */
const caseDir = async () => {
  const dir = path.join(root, `case-${++cases}`)
  await fs.mkdir(dir)
  return dir
}

/** A first, clean run: a 4 MiB image, its journal, the disk at the receiver (with `writes`, some records). */
const protectedDisk = async (diskId: string, writes = false) => {
  const dir = await caseDir()
  const disk = path.join(dir, "disk.img")
  const journal = path.join(dir, "journal")
  const first = await replicate({ disk, journal, diskId, diskSize: "4MiB", seconds: writes ? 1 : undefined })
  expect(first.code, first.stderr.slice(-2000)).toBe(0)
  return { dir, disk, journal }
}

describe("cdp-sync replicate against the wrong disk", () => {
  for (const [name, bytes, blocks] of [
    ["shrunk", 2 * MiB, 32],
    ["grown", 8 * MiB, 128]
  ] as const) {
    it(`an image ${name} under its journal is refused at start, before any guest write`, async () => {
      const { disk, journal } = await protectedDisk(`resized-${name}`)
      await fs.truncate(disk, bytes)
      const before = await sha256(disk)
      const ran = await replicate({ disk, journal, diskId: `resized-${name}`, seconds: 300 })
      expectOneLineFailure(
        ran,
        new RegExp(
          `belongs to a disk of 64 blocks of 65536 bytes .*this disk has ${blocks} blocks of 65536 bytes`
        )
      )
      // No guest write reached the disk.
      expect(await sha256(disk)).toBe(before)
    })
  }

  it("an existing image with another --disk-size is refused; without --disk-size the image's size is used", async () => {
    const { disk, journal } = await protectedDisk("sized")
    const before = await sha256(disk)
    const ran = await replicate({ disk, journal, diskId: "sized", diskSize: "8MiB" })
    expectOneLineFailure(ran, /has 4194304 bytes .* but --disk-size says 8388608/)
    expect(await sha256(disk)).toBe(before)
    expect((await fs.stat(disk)).size).toBe(4 * MiB)
    const again = await replicate({ disk, journal, diskId: "sized" })
    expect(again.code, again.stderr.slice(-2000)).toBe(0)
  })

  it("a receiver that holds the disk with another geometry: geometry-mismatch is fatal, not retried for ever", async () => {
    await protectedDisk("geo")
    const dir = await caseDir()
    const ran = await replicate({
      disk: path.join(dir, "other.img"),
      journal: path.join(dir, "journal"),
      diskId: "geo",
      diskSize: "2MiB",
      seconds: 300
    })
    expectOneLineFailure(ran, /refuses this disk.*geometry-mismatch.*64 blocks/)
  })

  it("a fresh journal against a receiver that holds the disk: a clear error, nothing sent", async () => {
    await protectedDisk("history", true)
    const dir = await caseDir()
    const ran = await replicate({
      disk: path.join(dir, "disk.img"),
      journal: path.join(dir, "journal"),
      diskId: "history",
      diskSize: "4MiB",
      seconds: 300
    })
    expectOneLineFailure(
      ran,
      /the receiver holds disk "history" up to seq \d+, but this journal has sent only up to seq 0/
    )
  })

  it("a missing image under a journal that describes a disk is not created afresh", async () => {
    const { disk, journal } = await protectedDisk("missing")
    await fs.rm(disk)
    const ran = await replicate({ disk, journal, diskId: "missing", diskSize: "4MiB" })
    expectOneLineFailure(ran, /does not exist, but the journal .* describes an existing disk/)
    await expect(fs.stat(disk)).rejects.toThrow()
  })

  it("a full file system under the journal: one line on stderr, exit 1", async () => {
    const dir = await caseDir()
    const journal = path.join(dir, "journal")
    await fs.mkdir(journal)
    // A small tmpfs, filled up to its last pages, where the sandbox allows mounting one;
    // else a log that is /dev/full (every write fails with ENOSPC).
    let mounted = false
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", journal], { stdio: "ignore" })
      mounted = true
      await fs.writeFile(path.join(journal, "filler"), Buffer.alloc(1024 * 1024 - 96 * 1024, 1))
    } catch {
      if (mounted) throw new Error("could not fill the tmpfs")
      await fs.symlink("/dev/full", path.join(journal, "events.log"))
    }
    try {
      const ran = await replicate({
        disk: path.join(dir, "disk.img"),
        journal,
        diskId: "full",
        diskSize: "4MiB",
        seconds: 300,
        extra: ["--activity-extent-size", "64KiB"]
      })
      expectOneLineFailure(ran, /no space left on device/i)
    } finally {
      if (mounted) execFileSync("umount", [journal], { stdio: "ignore" })
    }
  })
})

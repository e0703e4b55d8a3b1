/**
 * The harness the checksum resync tests share (test/integration/replicator-checksum-resync and
 * digest-algorithms): the built CLI's filter on a raw image with the file journal and activity
 * log, run to quiescence or SIGKILLed once listening (so the next start is unclean), the
 * receiver's digests asked through the LogReceiver port as the filter asks, and a restore
 * compared with the disk.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { Effect, Stream } from "effect"
import { expect } from "vitest"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import * as Wire from "../../src/protocol/Wire.js"
import * as Proc from "./receiverProcess.js"

/** What `replicate --json` prints last. */
export interface Status {
  readonly mode: string
  readonly quiescent: boolean
  readonly watermark: number
  readonly checksums: {
    readonly compared: number
    readonly matched: number
    readonly sent: number
    readonly algorithm: string
  }
}

/** The disk (`blockSize` × `blockCount`, disk id `vm`) and how the filter runs against it. */
export interface FilterSetup {
  readonly blockSize: number
  readonly blockCount: number
  readonly window: number
  /** Writes the filter's trace to `dir/trace.jsonl`. */
  readonly trace?: boolean
}

export const filterArgs = (setup: FilterSetup, dir: string, port: number): Array<string> => [
  "--disk",
  path.join(dir, "disk.img"),
  "--disk-size",
  String(setup.blockSize * setup.blockCount),
  "--receiver",
  `127.0.0.1:${port}`,
  "--journal",
  path.join(dir, "journal"),
  "--disk-id",
  "vm",
  "--window",
  String(setup.window),
  // One extent: an unclean start owes the whole disk.
  "--activity-extent-size",
  String(setup.blockSize * setup.blockCount),
  ...(setup.trace === true ? ["--trace", path.join(dir, "trace.jsonl")] : [])
]

/** `replicate … --quiesce --json`: its last status line and its stderr. */
export const replicate = async (
  setup: FilterSetup,
  dir: string,
  port: number,
  extra: ReadonlyArray<string>
): Promise<{ readonly status: Status; readonly stderr: string }> => {
  const result = await Proc.run(
    ["replicate", ...filterArgs(setup, dir, port), "--quiesce", "--json", ...extra],
    {
      timeoutMs: 120_000
    }
  )
  expect(result.code, result.stderr).toBe(0)
  return { status: JSON.parse(result.stdout.trim().split("\n").at(-1)!) as Status, stderr: result.stderr }
}

/** `serve` until it is listening, then SIGKILL: the journal's run stays open (the next start is unclean). */
export const killedFilter = async (setup: FilterSetup, dir: string, port: number): Promise<void> => {
  const entry = await Proc.entry()
  const child: ChildProcess = spawn(
    process.execPath,
    [...entry, "serve", ...filterArgs(setup, dir, port), "--listen", "127.0.0.1:0"],
    { stdio: ["ignore", "pipe", "pipe"] }
  )
  let stderr = ""
  child.stderr!.on("data", (c: Buffer) => {
    stderr += c.toString()
  })
  const exited = new Promise<string | null>((resolve) =>
    child.once("exit", (_code, signal) => resolve(signal))
  )
  await new Promise<void>((resolve, reject) => {
    let out = ""
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString()
      if (out.includes("listening ")) resolve()
    })
    child.once("exit", () => reject(new Error(`serve exited before listening: ${stderr}`)))
  })
  child.kill("SIGKILL")
  expect(await exited).toBe("SIGKILL")
}

/** The receiver's digest of every block by `algorithm`, asked through the LogReceiver port as the filter asks. */
export const receiverDigests = (
  setup: FilterSetup,
  port: number,
  watermark: number,
  algorithm: Wire.DigestAlgorithm
): Promise<Wire.ChecksumReply> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const receiver = yield* LogReceiver.LogReceiver
        const connection = yield* receiver.connect({
          diskId: "vm",
          blockSize: setup.blockSize,
          blockCount: setup.blockCount,
          watermark
        })
        const blocks = Array.from({ length: setup.blockCount }, (_, b) => b)
        yield* connection.requestChecksums({
          _tag: "ChecksumRequest",
          id: 1,
          algorithm: Wire.DigestCode[algorithm],
          blocks
        })
        const answer = yield* connection.messages.pipe(
          Stream.filter((m) => m._tag === "ChecksumReply" || m._tag === "ChecksumRefused"),
          Stream.runHead,
          Effect.timeout("30 seconds")
        )
        if (answer._tag !== "Some" || answer.value._tag !== "ChecksumReply")
          throw new Error(`no digests: ${JSON.stringify(answer)}`)
        expect(answer.value.algorithm).toBe(Wire.DigestCode[algorithm])
        return answer.value
      })
    ).pipe(Effect.provide(LogReceiver.layerTcp({ host: "127.0.0.1", port })))
  )

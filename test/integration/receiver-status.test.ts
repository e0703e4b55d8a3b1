/**
 * The receiver's per-disk state for `cdp-sync status` (issue 16), in process over real
 * TCP and real files: the connected peer, the durable seq, the last recovery point and
 * its age, the log's bytes, and the last thing that went wrong (a refused hello).
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import { render } from "../../src/cli/statusCommand.js"
import * as ReceiverService from "../../src/receiver/ReceiverService.js"
import { makePlan, streamPlan } from "../support/receiverProcess.js"

const BS = 4096
const geometry = { blockSize: BS, blockCount: 256 }

describe("the receiver's status", () => {
  it("names the peer, the durable seq, the last recovery point and its age, the log, and the last refusal", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "rcv-status-"))
    try {
      let wall = Date.parse("2030-01-01T00:00:00Z")
      const program = Effect.gen(function* () {
        const server = yield* ReceiverService.serve({ dir, host: "127.0.0.1", port: 0, now: () => wall })
        expect(yield* server.disks).toEqual([])
        const plan = makePlan({ seed: 3, records: 40, resyncChance: 0.1, ...geometry })
        const hello = { diskId: "vm1", watermark: 0, ...geometry }
        const sent = yield* Effect.promise(() =>
          streamPlan({ host: server.host, port: server.port, hello, plan })
        )
        expect(sent.outcome).toBe("complete")
        const lastPoint = [...plan].reverse().find((p) => p.recoveryPoint)!.record.seq
        wall += 90_000

        // Held open: the disk is connected; a second hello for it is refused, and noted.
        yield* Effect.scoped(
          Effect.gen(function* () {
            const receiver = yield* LogReceiver.LogReceiver
            yield* receiver.connect({ ...hello, watermark: 40 })
            const [connected] = yield* server.disks
            expect(connected).toMatchObject({
              role: "receiver",
              disk: "vm1",
              connected: true,
              durableSeq: 40,
              acceptedSeq: 40,
              blockSize: BS,
              blockCount: 256,
              segments: 1,
              lastError: null,
              lastRecoveryPoint: { seq: lastPoint }
            })
            // Receive times are the wall clock's (a few ms apart within a batch).
            expect(connected!.lastRecoveryPoint!.ageSeconds).toBeCloseTo(90, 0)
            expect(connected!.peer).toMatch(/^127\.0\.0\.1:\d+$/)
            expect(connected!.logBytes).toBeGreaterThan(0)
            const second = yield* Effect.either(
              Effect.scoped(receiver.connect({ ...hello, watermark: 40 })).pipe(
                Effect.provide(LogReceiver.layerTcp({ host: server.host, port: server.port }))
              )
            )
            expect(Either.isLeft(second) && second.left._tag).toBe("ReceiverRefused")
          }).pipe(Effect.provide(LogReceiver.layerTcp({ host: server.host, port: server.port })))
        )
        // Disconnected now; the refusal stays as the last error, with its time.
        for (let i = 0; ; i++) {
          const [d] = yield* server.disks
          if (!d!.connected) break
          expect(i).toBeLessThan(500)
          yield* Effect.sleep("10 millis")
        }
        const [after] = yield* server.disks
        expect(after!.peer).toBeNull()
        expect(after!.lastError?.message).toContain("already-connected")
        expect(after!.lastError?.at).toBe(new Date(wall).toISOString())
        const text = render({ role: "receiver", pid: 1, at: new Date(wall).toISOString(), disks: [after!] })
        expect(text).toContain("vm1 role:receiver disconnected")
        expect(text).toContain(`last-point:seq ${lastPoint} (90.0s ago)`)
        expect(text).toContain("last-error: refused")
      })
      await Effect.runPromise(Effect.scoped(program))
    } finally {
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})

/**
 * A receiver that resets the connection right after accepting it (a receiver killed as
 * the filter connects, as the loopback crash test does): the TCP layer fails `connect`
 * with a typed error and never lets the socket's `error` escape as an uncaught exception
 * (which would crash an application embedding the filter). The reset can land between
 * the connect and the moment the connection's listeners are attached; many connections
 * make that window likely.
 */
import * as Net from "node:net"
import { Effect, Exit } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as LogReceiver from "../../src/adapters/LogReceiver.js"
import { withIoScheduler } from "../../src/internal/IoScheduler.js"

const uncaught: Array<unknown> = []
const onUncaught = (e: unknown) => uncaught.push(e)
afterEach(() => {
  process.off("uncaughtException", onUncaught)
})

describe("the TCP link to the receiver", () => {
  it("turns a reset right after the connect into a typed failure, never an uncaught exception", async () => {
    process.on("uncaughtException", onUncaught)
    const server = Net.createServer((socket) => socket.resetAndDestroy())
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const port = (server.address() as Net.AddressInfo).port
    const hello: LogReceiver.Hello = { diskId: "reset", blockSize: 4096, blockCount: 16, watermark: 0 }
    try {
      const exits = await Promise.all(
        Array.from({ length: 60 }, () =>
          Effect.runPromiseExit(
            Effect.scoped(
              // On the I/O scheduler, as the replicator runs it: the fiber resumes after the
              // event loop's poll phase, where the reset can arrive first.
              Effect.flatMap(LogReceiver.LogReceiver, (r) => r.connect(hello)).pipe(
                Effect.provide(
                  LogReceiver.layerTcp({ host: "127.0.0.1", port, connectTimeout: "5 seconds" })
                ),
                withIoScheduler
              )
            )
          )
        )
      )
      // Let any late socket event run before counting.
      await new Promise((resolve) => setTimeout(resolve, 200))
      for (const exit of exits) {
        expect(Exit.isFailure(exit)).toBe(true)
        if (Exit.isFailure(exit)) expect(JSON.stringify(exit.cause)).toContain("ReceiverUnreachable")
      }
      expect(uncaught).toEqual([])
    } finally {
      await new Promise((resolve) => server.close(resolve))
    }
  })
})

/**
 * The local control endpoint (docs/operations.md, "Status"): a unix socket on which
 * `replicate`, `serve` and `receiver` answer `cdp-sync status`. The protocol is in
 * `controlProtocol.ts`.
 *
 * What a client can hold is bounded: connections (`maxClients`; one more is answered
 * `Busy` and closed), a request line (`MAX_REQUEST_BYTES`; a longer one is answered
 * `RequestTooLarge` and the connection closed), one request at a time (the socket is not
 * read while an answer is computed or waits to be written), and silence (`idleMs`).
 * Closing the scope closes every connection and removes the socket file.
 *
 * The socket file: a stale one (its process was killed) is replaced only if nothing
 * answers on it; a file that is not a socket is never touched.
 */
import * as fs from "node:fs/promises"
import * as Net from "node:net"
import { Data, Effect, Either, type Exit, ParseResult, Runtime, Schema, type Scope } from "effect"
import {
  type ErrorBody,
  MAX_REPLY_BYTES,
  MAX_REQUEST_BYTES,
  Reply,
  type Report,
  Request,
  StatusReply,
  type VerifyProgress,
  type VerifyReport,
  type VerifyRequest
} from "./controlProtocol.js"

/** Linux's limit on a unix socket's path (`sun_path`), less its terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107
export const DEFAULT_MAX_CLIENTS = 8
export const DEFAULT_IDLE_MS = 60_000

/** The endpoint cannot listen on `path`. */
export class ControlListenFailed extends Data.TaggedError("ControlListenFailed")<{
  readonly path: string
  readonly detail: string
}> {
  override get message() {
    return `control endpoint ${this.path}: ${this.detail}`
  }
}

/** Nothing answers on `path`, or what answered broke the protocol. */
export class ControlUnreachable extends Data.TaggedError("ControlUnreachable")<{
  readonly path: string
  readonly detail: string
}> {
  override get message() {
    return `nothing answers on ${this.path}: ${this.detail}`
  }
}

/** A verify the endpoint could not finish: why, in one line. */
export class VerifyFailed extends Data.TaggedError("VerifyFailed")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

export interface EndpointOptions {
  readonly path: string
  /** The report, computed when asked. */
  readonly status: Effect.Effect<Report>
  /**
   * Runs an online verify (a filter's endpoint), telling `progress` about once a second.
   * Interrupted when the client goes away. Without it, a verify request is refused.
   */
  readonly verify?:
    | ((
        request: VerifyRequest,
        progress: (p: VerifyProgress) => Effect.Effect<void>
      ) => Effect.Effect<VerifyReport, VerifyFailed>)
    | undefined
  readonly maxClients?: number | undefined
  readonly idleMs?: number | undefined
}

const codeOf = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e ? String(e.code) : undefined

/** Whether something accepts a connection on the socket `path`. */
const answers = (path: string): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = Net.createConnection({ path })
    const done = (alive: boolean) => {
      socket.destroy()
      resolve(alive)
    }
    socket.setTimeout(1000, () => done(true))
    socket.once("connect", () => done(true))
    socket.once("error", (e) => done(codeOf(e) !== "ECONNREFUSED" && codeOf(e) !== "ENOENT"))
  })

/** Clears the way for a socket at `path`: an error message, or undefined when it may be created. */
const clearStale = async (path: string): Promise<string | undefined> => {
  let st: Awaited<ReturnType<typeof fs.lstat>>
  try {
    st = await fs.lstat(path)
  } catch (e) {
    return codeOf(e) === "ENOENT" ? undefined : `cannot inspect it: ${codeOf(e) ?? String(e)}`
  }
  if (!st.isSocket()) return "a file that is not a socket is in the way (left as it is)"
  if (await answers(path)) return "another process answers on it"
  // A socket nobody listens on: the file a killed run left behind.
  await fs.unlink(path).catch(() => undefined)
  return undefined
}

const line = (reply: Reply): string => `${JSON.stringify(Schema.encodeSync(Reply)(reply))}\n`
const errorLine = (_tag: ErrorBody["_tag"], message: string) => line({ error: { _tag, message } })

/** Decodes one request line: the request, or why it is refused. */
export const decodeRequest = (text: string): Either.Either<Request, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left("not JSON")
  }
  return Either.mapLeft(Schema.decodeUnknownEither(Request)(json), (e) =>
    ParseResult.TreeFormatter.formatErrorSync(e).replace(/\s*\n\s*/g, " ")
  )
}

/**
 * Listens on `options.path` until the scope closes. Fails with `ControlListenFailed`
 * when the path is too long, taken by a live endpoint or a file that is not a socket.
 */
export const serve = (options: EndpointOptions): Effect.Effect<void, ControlListenFailed, Scope.Scope> =>
  Effect.gen(function* () {
    const { path } = options
    const maxClients = Math.max(1, options.maxClients ?? DEFAULT_MAX_CLIENTS)
    const idleMs = options.idleMs ?? DEFAULT_IDLE_MS
    const fail = (detail: string) => new ControlListenFailed({ path, detail })
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES)
      return yield* fail(
        `the path is ${Buffer.byteLength(path)} bytes, a unix socket's may have ${MAX_SOCKET_PATH_BYTES}: give a shorter one (--control)`
      )
    const blocked = yield* Effect.promise(() => clearStale(path))
    if (blocked !== undefined) return yield* fail(blocked)
    const runtime = yield* Effect.runtime<never>()
    const sockets = new Set<Net.Socket>()

    const converse = (socket: Net.Socket) => {
      let buffered = ""
      let busy = false
      socket.setEncoding("utf8")
      socket.setTimeout(idleMs, () => socket.destroy())
      socket.on("error", () => socket.destroy())
      const refuse = (_tag: ErrorBody["_tag"], message: string) => {
        buffered = ""
        socket.pause()
        socket.end(errorLine(_tag, message))
        setTimeout(() => socket.destroy(), 1000).unref()
      }
      const answer = (text: string, done: () => void) => {
        const request = decodeRequest(text)
        const write = (out: string) => {
          if (socket.destroyed) return
          if (socket.write(out)) done()
          else socket.once("drain", done)
        }
        if (Either.isLeft(request)) return write(errorLine("BadRequest", request.left))
        if (request.right.op === "verify") return verify(request.right, write)
        Runtime.runCallback(runtime)(options.status, {
          onExit: (exit: Exit.Exit<Report>) =>
            write(
              exit._tag === "Success"
                ? line({ status: exit.value })
                : errorLine("Failed", "the status could not be computed")
            )
        })
      }
      const verify = (request: VerifyRequest, write: (out: string) => void) => {
        if (options.verify === undefined)
          return write(errorLine("BadRequest", "this process does not verify (ask the filter's endpoint)"))
        // Progress lines are small and about a second apart: written without waiting for drain.
        const progress = (p: VerifyProgress) =>
          Effect.sync(() => {
            if (!socket.destroyed) socket.write(line({ progress: p }))
          })
        let ended = false
        const interrupt = () => cancel()
        const cancel = Runtime.runCallback(runtime)(options.verify(request, progress), {
          // May run before runCallback returns (a verify that ends at once).
          onExit: (exit: Exit.Exit<VerifyReport, VerifyFailed>) => {
            ended = true
            socket.off("close", interrupt)
            write(
              exit._tag === "Success"
                ? line({ verify: exit.value })
                : errorLine(
                    "Failed",
                    exit.cause._tag === "Fail"
                      ? exit.cause.error.detail
                      : "the verify was interrupted or failed"
                  )
            )
          }
        })
        if (!ended) socket.once("close", interrupt)
      }
      // One request at a time: the socket is paused until the answer is written.
      const pump = () => {
        while (!busy && !socket.destroyed) {
          const end = buffered.indexOf("\n")
          if (end < 0) {
            if (Buffer.byteLength(buffered) > MAX_REQUEST_BYTES)
              return refuse("RequestTooLarge", `a request is at most ${MAX_REQUEST_BYTES} bytes`)
            socket.resume()
            return
          }
          const text = buffered.slice(0, end).trim()
          buffered = buffered.slice(end + 1)
          if (text === "") continue
          if (Buffer.byteLength(text) > MAX_REQUEST_BYTES)
            return refuse("RequestTooLarge", `a request is at most ${MAX_REQUEST_BYTES} bytes`)
          busy = true
          socket.pause()
          answer(text, () => {
            busy = false
            pump()
          })
        }
      }
      socket.on("data", (chunk: string) => {
        buffered += chunk
        pump()
      })
    }

    const server = Net.createServer((socket) => {
      if (sockets.size >= maxClients) {
        socket.on("error", () => socket.destroy())
        socket.end(errorLine("Busy", `at most ${maxClients} clients at once`))
        setTimeout(() => socket.destroy(), 1000).unref()
        return
      }
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
      converse(socket)
    })
    const listened = yield* Effect.async<void, ControlListenFailed>((resume) => {
      server.once("error", (e) => resume(Effect.fail(fail(e.message))))
      server.listen({ path }, () => resume(Effect.void))
    })
    const ours = yield* Effect.promise(() => fs.lstat(path).catch(() => undefined))
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      }).pipe(
        // Removed only while it is still the file this endpoint made.
        Effect.zipRight(
          Effect.promise(async () => {
            const now = await fs.lstat(path).catch(() => undefined)
            if (now !== undefined && ours !== undefined && now.ino === ours.ino && now.dev === ours.dev)
              await fs.unlink(path).catch(() => undefined)
          })
        )
      )
    )
    return listened
  })

/**
 * Asks the endpoint on `path` once: the decoded reply (a report or the endpoint's error),
 * or `ControlUnreachable` when nothing answers in `timeoutMs` or the answer is not a reply.
 */
export const request = (
  path: string,
  req: Request = { op: "status" },
  timeoutMs = 5000
): Effect.Effect<StatusReply, ControlUnreachable> =>
  Effect.async<StatusReply, ControlUnreachable>((resume) => {
    let settled = false
    let text = ""
    const socket = Net.createConnection({ path })
    const finish = (result: Either.Either<StatusReply, string>) => {
      if (settled) return
      settled = true
      socket.destroy()
      resume(
        Either.isRight(result)
          ? Effect.succeed(result.right)
          : Effect.fail(new ControlUnreachable({ path, detail: result.left }))
      )
    }
    socket.setEncoding("utf8")
    socket.setTimeout(timeoutMs, () => finish(Either.left(`no answer in ${timeoutMs} ms`)))
    socket.once("connect", () => socket.write(`${JSON.stringify(req)}\n`))
    socket.on("error", (e) => finish(Either.left(codeOf(e) ?? e.message)))
    socket.on("data", (chunk: string) => {
      text += chunk
      const end = text.indexOf("\n")
      if (end < 0) {
        if (text.length > MAX_REPLY_BYTES) finish(Either.left("the reply is too large"))
        return
      }
      let json: unknown
      try {
        json = JSON.parse(text.slice(0, end))
      } catch {
        return finish(Either.left("the reply is not JSON"))
      }
      finish(
        Either.mapLeft(
          Schema.decodeUnknownEither(StatusReply)(json),
          (e) =>
            `not a status reply: ${ParseResult.TreeFormatter.formatErrorSync(e).replace(/\s*\n\s*/g, " ")}`
        )
      )
    })
    socket.on("close", () => finish(Either.left("the connection closed before a reply")))
    return Effect.sync(() => {
      settled = true
      socket.destroy()
    })
  })

/**
 * Runs an online verify on the filter's endpoint at `path`: `onProgress` for each
 * progress line, then the report. Fails with `ControlUnreachable` when nothing answers
 * (or a line is not a reply, or no line comes for `idleMs`), `VerifyFailed` with the
 * endpoint's error.
 */
export const verify = (
  path: string,
  req: Omit<VerifyRequest, "op">,
  onProgress: (p: VerifyProgress) => void,
  idleMs = 60_000
): Effect.Effect<VerifyReport, ControlUnreachable | VerifyFailed> =>
  Effect.async<VerifyReport, ControlUnreachable | VerifyFailed>((resume) => {
    let settled = false
    let text = ""
    const socket = Net.createConnection({ path })
    const finish = (result: Effect.Effect<VerifyReport, ControlUnreachable | VerifyFailed>) => {
      if (settled) return
      settled = true
      socket.destroy()
      resume(result)
    }
    const unreachable = (detail: string) => finish(Effect.fail(new ControlUnreachable({ path, detail })))
    socket.setEncoding("utf8")
    socket.setTimeout(idleMs, () => unreachable(`no answer in ${idleMs} ms`))
    socket.once("connect", () => socket.write(`${JSON.stringify({ op: "verify", ...req })}\n`))
    socket.on("error", (e) => unreachable(codeOf(e) ?? e.message))
    socket.on("data", (chunk: string) => {
      text += chunk
      for (let end = text.indexOf("\n"); end >= 0 && !settled; end = text.indexOf("\n")) {
        const one = text.slice(0, end)
        text = text.slice(end + 1)
        let json: unknown
        try {
          json = JSON.parse(one)
        } catch {
          return unreachable("a reply line is not JSON")
        }
        const reply = Schema.decodeUnknownEither(Reply)(json)
        if (Either.isLeft(reply))
          return unreachable(
            `not a verify reply: ${ParseResult.TreeFormatter.formatErrorSync(reply.left).replace(/\s*\n\s*/g, " ")}`
          )
        const r = reply.right
        if ("progress" in r) onProgress(r.progress)
        else if ("verify" in r) return finish(Effect.succeed(r.verify))
        else if ("error" in r) return finish(Effect.fail(new VerifyFailed({ detail: r.error.message })))
        else return unreachable("a status reply to a verify request")
      }
      if (text.length > MAX_REPLY_BYTES) unreachable("the reply is too large")
    })
    socket.on("close", () => unreachable("the connection closed before the verify ended"))
    return Effect.sync(() => {
      settled = true
      socket.destroy()
    })
  })

/**
 * `cdp-sync check-trace`: folds a trace from another implementation through the
 * legality rules of design §5 and reports the first event the model forbids.
 * Streams: memory stays bounded however long the trace, and however long a line
 * (one over `maxLineBytes`, 1 MiB by default, is refused as `line-too-long`).
 */
import { createReadStream } from "node:fs"
import { Data, Effect, Either } from "effect"
import * as Config from "../domain/Config.js"
import * as Legality from "../domain/Legality.js"
import * as State from "../domain/State.js"
import * as Trace from "../domain/Trace.js"

export class TraceUnreadable extends Data.TaggedError("TraceUnreadable")<{
  readonly path: string
  readonly cause: unknown
}> {
  override get message() {
    return `cannot read ${this.path}: ${(this.cause as Error)?.message ?? String(this.cause)}`
  }
}

export type Outcome =
  | { readonly valid: true; readonly summary: Legality.Summary; readonly lines: number }
  | {
      readonly valid: false
      /** 1-based line of the offending event, or the last line when the end of the trace is at fault. */
      readonly line: number
      readonly rule: string
      readonly reason: string
      /** Byte offset of the offending line's start in the file (`line-too-long`). */
      readonly offset?: number
      readonly event?: unknown
      readonly state?: Readonly<Record<string, unknown>>
      readonly summary?: Legality.Summary
    }

const encoder = new TextEncoder()

export interface CheckOptions extends Trace.ReadOptions {
  readonly quiescent: boolean
}

/**
 * Checks a stream of chunks: UTF-8 bytes (the fast way, as read from a file) or
 * text. Pure apart from pulling the chunks.
 */
export const checkChunks = async (
  chunks: AsyncIterable<string | Uint8Array>,
  options: CheckOptions
): Promise<Outcome> => {
  let checker: Legality.Checker | undefined
  let lastLine = 0
  // The hot loop: one call per event, no allocation beyond the event and the model's fold.
  const decoder = new Trace.StreamDecoder<Outcome>(
    {
      header: (h, line) => {
        lastLine = line
        const config = Config.make({ blockSize: h.blockSize, blockCount: h.blockCount, initial: h.initial })
        if (Either.isLeft(config))
          return { valid: false, line, rule: "bad-header", reason: config.left.message }
        checker = new Legality.Checker(State.initial(config.right))
        return undefined
      },
      event: (event, line) => {
        lastLine = line
        const violation = checker!.step(event)
        return violation === undefined
          ? undefined
          : {
              valid: false,
              line,
              rule: violation.rule,
              reason: violation.reason,
              event,
              state: violation.context,
              summary: checker!.summary()
            }
      }
    },
    options
  )
  const stopped = (stop: Outcome | Trace.TraceError | undefined): Outcome | undefined =>
    stop instanceof Trace.TraceError
      ? {
          valid: false,
          line: stop.line,
          rule: stop.kind,
          reason: stop.detail,
          ...(stop.offset === undefined ? {} : { offset: stop.offset }),
          event: stop.text
        }
      : stop
  // The stream's first bytes, held until there are 3 to tell a byte-order mark (some Windows
  // tools write one) from the header's start; `undefined` once decided.
  let head: Uint8Array | undefined = new Uint8Array(0)
  const withoutMark = (bytes: Uint8Array): Uint8Array => {
    head = undefined
    if (bytes[0] !== 0xef || bytes[1] !== 0xbb || bytes[2] !== 0xbf) return bytes
    // Offsets still name the stream's bytes.
    decoder.skipped(3)
    return bytes.subarray(3)
  }
  // Text cut inside a surrogate pair: hold the high half back for the next piece.
  let pending = ""
  for await (const piece of chunks) {
    let chunk: Uint8Array
    if (typeof piece === "string") {
      let text = pending + piece
      pending = ""
      const last = text.charCodeAt(text.length - 1)
      if (last >= 0xd800 && last <= 0xdbff) {
        pending = text.slice(-1)
        text = text.slice(0, -1)
      }
      chunk = encoder.encode(text)
    } else chunk = piece
    if (head !== undefined) {
      const joined: Uint8Array = new Uint8Array(head.length + chunk.length)
      joined.set(head)
      joined.set(chunk, head.length)
      if (joined.length < 3) {
        head = joined
        continue
      }
      chunk = withoutMark(joined)
    }
    const bad = stopped(decoder.push(chunk))
    if (bad !== undefined) return bad
  }
  if (head !== undefined && head.length > 0) {
    const bad = stopped(decoder.push(withoutMark(head)))
    if (bad !== undefined) return bad
  }
  if (pending !== "") {
    const bad = stopped(decoder.push(encoder.encode(pending)))
    if (bad !== undefined) return bad
  }
  const bad = stopped(decoder.end())
  if (bad !== undefined) return bad
  const end = checker!.end(options)
  if (end !== undefined)
    return {
      valid: false,
      line: lastLine,
      rule: end.rule,
      reason: end.reason,
      state: end.context,
      summary: checker!.summary()
    }
  return { valid: true, summary: checker!.summary(), lines: lastLine }
}

/** Checks a trace file, or standard input for `-`. */
export const checkFile = (path: string, options: CheckOptions) =>
  Effect.tryPromise({
    try: () => {
      // Bytes, not text: the decoder scans UTF-8 directly.
      const stream = path === "-" ? process.stdin : createReadStream(path, { highWaterMark: 1 << 20 })
      return checkChunks(stream as AsyncIterable<Uint8Array>, options)
    },
    catch: (cause) => new TraceUnreadable({ path, cause })
  }).pipe(Effect.withSpan("CheckTrace.checkFile", { attributes: { path } }))

/** A line's text with its control characters escaped (`\u0000`): it may be any bytes at all. */
const visible = (text: string): string =>
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding them is the point
  text.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

/** The human-readable report of an outcome. */
export const render = (outcome: Outcome): string => {
  if (outcome.valid) {
    const s = outcome.summary
    return `valid: ${s.events} events, ${s.epochs} epochs, ${s.modeChanges} mode changes, final mode ${s.finalMode} (link ${s.finalLink})`
  }
  const lines = [`invalid: line ${outcome.line}: ${outcome.rule}: ${outcome.reason}`]
  if (outcome.event !== undefined)
    lines.push(
      `  event: ${typeof outcome.event === "string" ? visible(outcome.event) : JSON.stringify(outcome.event)}`
    )
  if (outcome.state !== undefined) {
    const st = outcome.state
    lines.push(
      `  model: mode ${st.mode}, link ${st.link}, epoch ${st.epoch}, nextSeq ${st.nextSeq}, watermark ${st.watermark}, in flight ${st.inFlight}`,
      `  obligations left: ${st.obligations}${(st.obligationSample as Array<number>)?.length ? ` (blocks ${(st.obligationSample as Array<number>).join(", ")}${(st.obligations as number) > (st.obligationSample as Array<number>).length ? ", …" : ""})` : ""}`,
      `  block records unacked: ${st.blockRecordsUnacked}${(st.unackedBlockRecordSeqs as Array<number>)?.length ? ` (seqs ${(st.unackedBlockRecordSeqs as Array<number>).join(", ")})` : ""}`
    )
    if (st.owed !== null) lines.push(`  owed: ResyncActivated (${st.owed})`)
    // Only in a trace with comparisons (version 2): a version 1 report reads as before.
    const comparing = st.comparing as ReadonlyArray<readonly [number, number, number]> | undefined
    if (comparing !== undefined)
      lines.push(
        `  comparisons: ${st.compared} decided, ${comparing.length} waiting${comparing.length > 0 ? ` (${comparing.map(([id, block, after]) => `${id}: block ${block} after seq ${after}`).join(", ")})` : ""}`
      )
  }
  return lines.join("\n")
}

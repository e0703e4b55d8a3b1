/**
 * `cdp-sync check-trace`: folds a trace from another implementation through the
 * legality rules of design §5 and reports the first event the model forbids.
 * Streams: memory stays constant however long the trace.
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
      readonly event?: unknown
      readonly state?: Readonly<Record<string, unknown>>
      readonly summary?: Legality.Summary
    }

/** Checks a stream of text chunks. Pure apart from pulling the chunks. */
export const checkChunks = async (
  chunks: AsyncIterable<string>,
  options: { readonly quiescent: boolean }
): Promise<Outcome> => {
  const decoder = new Trace.Decoder()
  let checker: Legality.Checker | undefined
  let lastLine = 0
  const feed = (decoded: ReadonlyArray<Either.Either<Trace.Decoded, Trace.TraceError>>): Outcome | undefined => {
    for (const item of decoded) {
      if (Either.isLeft(item)) {
        const e = item.left
        return { valid: false, line: e.line, rule: e.kind, reason: e.detail, event: e.text }
      }
      const d = item.right
      lastLine = d.line
      if (d._tag === "Header") {
        const h = d.header
        const config = Config.make({ blockSize: h.blockSize, blockCount: h.blockCount, initial: h.initial })
        if (Either.isLeft(config)) return { valid: false, line: d.line, rule: "bad-header", reason: config.left.message }
        checker = new Legality.Checker(State.initial(config.right))
        continue
      }
      const violation = checker!.step(d.event)
      if (violation !== undefined)
        return {
          valid: false,
          line: d.line,
          rule: violation.rule,
          reason: violation.reason,
          event: d.event,
          state: violation.context,
          summary: checker!.summary()
        }
    }
    return undefined
  }
  for await (const chunk of chunks) {
    const bad = feed(decoder.push(chunk))
    if (bad !== undefined) return bad
  }
  const bad = feed(decoder.end())
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
export const checkFile = (path: string, options: { readonly quiescent: boolean }) =>
  Effect.tryPromise({
    try: () => {
      const stream =
        path === "-"
          ? process.stdin.setEncoding("utf8")
          : createReadStream(path, { encoding: "utf8", highWaterMark: 1 << 20 })
      return checkChunks(stream as AsyncIterable<string>, options)
    },
    catch: (cause) => new TraceUnreadable({ path, cause })
  }).pipe(Effect.withSpan("CheckTrace.checkFile", { attributes: { path } }))

/** The human-readable report of an outcome. */
export const render = (outcome: Outcome): string => {
  if (outcome.valid) {
    const s = outcome.summary
    return `valid: ${s.events} events, ${s.epochs} epochs, ${s.modeChanges} mode changes, final mode ${s.finalMode} (link ${s.finalLink})`
  }
  const lines = [`invalid: line ${outcome.line}: ${outcome.rule}: ${outcome.reason}`]
  if (outcome.event !== undefined)
    lines.push(`  event: ${typeof outcome.event === "string" ? outcome.event : JSON.stringify(outcome.event)}`)
  if (outcome.state !== undefined) {
    const st = outcome.state
    lines.push(
      `  model: mode ${st.mode}, link ${st.link}, epoch ${st.epoch}, nextSeq ${st.nextSeq}, watermark ${st.watermark}, in flight ${st.inFlight}`,
      `  obligations left: ${st.obligations}${(st.obligationSample as Array<number>)?.length ? ` (blocks ${(st.obligationSample as Array<number>).join(", ")}${(st.obligations as number) > (st.obligationSample as Array<number>).length ? ", …" : ""})` : ""}`,
      `  block records unacked: ${st.blockRecordsUnacked}${(st.unackedBlockRecordSeqs as Array<number>)?.length ? ` (seqs ${(st.unackedBlockRecordSeqs as Array<number>).join(", ")})` : ""}`
    )
    if (st.owed !== null) lines.push(`  owed: ResyncActivated (${st.owed})`)
  }
  return lines.join("\n")
}

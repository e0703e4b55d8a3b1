/**
 * Progress of a long command on stderr, as `qemu-img -p` does it: on a terminal one bar
 * redrawn in place, with the rate and the time left; elsewhere (a pipe, a log file) a plain
 * line every few seconds, so a log shows the command is alive without filling up. With
 * `json` (a command's `--json`), JSON lines instead, for programs: one at the plain lines'
 * cadence and a final one, always (see `progressJson`).
 */
import { progressBar } from "./charts.js"

export interface Progress {
  /** `done` of `total` units so far. */
  readonly update: (done: number, total: number) => void
  /** The last line ends (on a terminal). */
  readonly end: () => void
}

export interface ProgressOptions {
  /** What is done, first on the line (`restoring vm1`). */
  readonly label: string
  /** How a rate in units per second is written (`12.5 MiB/s`); default `N/s`. */
  readonly rate?: (perSecond: number) => string
  readonly stream?: NodeJS.WriteStream
  /** Between plain lines when not on a terminal (and between JSON lines). */
  readonly everyMillis?: number
  readonly now?: () => number
  /** JSON lines (`progressJson`) instead of text, on a terminal too. */
  readonly json?: ProgressJsonOptions | undefined
}

export interface ProgressJsonOptions {
  /** What is being done (`indexing`, `writing`). */
  readonly phase: string
  /** What is counted, naming the fields (`bytes`: `bytes`, `bytesPerSecond`); default `units`. */
  readonly unit?: string
}

const clock = (seconds: number): string => {
  if (!Number.isFinite(seconds)) return "--:--"
  const s = Math.max(0, Math.round(seconds))
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const mmss = `${String(m).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`
  return h > 0 ? `${h}:${mmss}` : mmss
}

/** One progress line: label, bar, rate, ETA. */
export const progressLine = (
  label: string,
  done: number,
  total: number,
  elapsedMillis: number,
  rate: (perSecond: number) => string = (r) => `${r.toFixed(0)}/s`
): string => {
  const perSecond = elapsedMillis > 0 ? (done / elapsedMillis) * 1000 : 0
  const eta = perSecond > 0 ? (total - done) / perSecond : Number.POSITIVE_INFINITY
  return `${label} ${progressBar(done, total)} ${rate(perSecond)} ETA ${done >= total ? "00:00" : clock(eta)}`
}

/**
 * One JSON progress line: `{"progress":{"phase","<unit>","total","<unit>PerSecond",
 * "etaSeconds","elapsedSeconds","final"}}` — `etaSeconds` is `null` while no rate is known,
 * `final` is true on the last line of a phase (written when the phase ends, however it ends).
 */
export const progressJson = (
  json: ProgressJsonOptions,
  done: number,
  total: number,
  elapsedMillis: number,
  final: boolean
): string => {
  const unit = json.unit ?? "units"
  const perSecond = elapsedMillis > 0 ? (done / elapsedMillis) * 1000 : 0
  const eta = done >= total ? 0 : perSecond > 0 ? (total - done) / perSecond : null
  return JSON.stringify({
    progress: {
      phase: json.phase,
      [unit]: done,
      total,
      [`${unit}PerSecond`]: Math.round(perSecond),
      etaSeconds: eta === null ? null : Math.round(eta * 10) / 10,
      elapsedSeconds: Math.round(elapsedMillis) / 1000,
      final
    }
  })
}

export const progress = (options: ProgressOptions): Progress => {
  const stream = options.stream ?? process.stderr
  const now = options.now ?? Date.now
  const json = options.json
  if (json !== undefined) return jsonProgress(json, stream, now, options.everyMillis ?? 5000)
  const tty = stream.isTTY === true
  const every = options.everyMillis ?? (tty ? 100 : 5000)
  const started = now()
  let last = started
  let drawn = false
  let lastDone = -1
  let lastTotal = 0
  const draw = (done: number, total: number) => {
    const line = progressLine(options.label, done, total, now() - started, options.rate)
    if (tty) stream.write(`\r${line}\u001b[K`)
    else stream.write(`${line}\n`)
    drawn = true
  }
  return {
    update: (done, total) => {
      lastDone = done
      lastTotal = total
      const t = now()
      if (t - last < every) return
      last = t
      draw(done, total)
    },
    end: () => {
      // The final state is drawn only where earlier ones were: a short command stays quiet.
      if (drawn && lastDone >= 0) draw(lastDone, lastTotal)
      if (drawn && tty) stream.write("\n")
    }
  }
}

/** JSON lines: one every `every` ms while it runs, and a final one when it ends (even a short one). */
const jsonProgress = (
  json: ProgressJsonOptions,
  stream: NodeJS.WritableStream,
  now: () => number,
  every: number
): Progress => {
  const started = now()
  let last = started
  let done = 0
  let total = 0
  let ended = false
  return {
    update: (d, t) => {
      done = d
      total = t
      const at = now()
      if (at - last < every) return
      last = at
      stream.write(`${progressJson(json, done, total, at - started, false)}\n`)
    },
    end: () => {
      if (ended) return
      ended = true
      stream.write(`${progressJson(json, done, total, now() - started, true)}\n`)
    }
  }
}

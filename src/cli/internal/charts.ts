/**
 * Terminal pictures: a mode timeline and a sparkline, in plain Unicode so they
 * survive logs and CI output.
 */

const bars = "▁▂▃▄▅▆▇█"

/** Buckets `values` into `width` columns (the max of each bucket) and draws one bar per column. */
export const sparkline = (values: ReadonlyArray<number>, width: number): string => {
  if (values.length === 0) return ""
  const columns = Math.min(width, values.length)
  const peaks: Array<number> = []
  for (let c = 0; c < columns; c++) {
    const from = Math.floor((c * values.length) / columns)
    const to = Math.max(from + 1, Math.floor(((c + 1) * values.length) / columns))
    let peak = 0
    for (let i = from; i < to; i++) peak = Math.max(peak, values[i]!)
    peaks.push(peak)
  }
  const top = Math.max(...peaks)
  return peaks
    .map((p) => (top === 0 || p === 0 ? " " : bars[Math.min(7, Math.floor((p / top) * 7.999))]!))
    .join("")
}

/**
 * One character per column: `─` all sync, `█` all resync, `▒` both within the column.
 */
export const modeTimeline = (modes: ReadonlyArray<"sync" | "resync">, width: number): string => {
  if (modes.length === 0) return ""
  const columns = Math.min(width, modes.length)
  let out = ""
  for (let c = 0; c < columns; c++) {
    const from = Math.floor((c * modes.length) / columns)
    const to = Math.max(from + 1, Math.floor(((c + 1) * modes.length) / columns))
    let sync = 0
    for (let i = from; i < to; i++) if (modes[i] === "sync") sync++
    out += sync === to - from ? "─" : sync === 0 ? "█" : "▒"
  }
  return out
}

/** A progress bar like `[#########.........]  45%`. */
export const progressBar = (done: number, total: number, width = 30): string => {
  const fraction = total === 0 ? 1 : Math.min(1, done / total)
  const filled = Math.round(fraction * width)
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%`
}

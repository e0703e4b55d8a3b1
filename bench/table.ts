/**
 * Benchmark rows and the table printer shared by every bench module.
 * Each figure stands beside its baseline: the same work done the plainest fast way.
 */
export interface BenchRow {
  /** What was measured, in the domain's words. */
  readonly name: string
  readonly value: number
  readonly unit: string
  /** The same work done the plainest fast way, in the same unit. */
  readonly baseline: number
  readonly baselineName: string
  /** Whether a larger value is better (throughput) or a smaller one (time, memory). */
  readonly higherIsBetter: boolean
  /**
   * The target, if the issue sets one: a fraction of the baseline (e.g. 1/50, as
   * `ratio`) and/or an absolute figure in the row's unit (`min` for throughput,
   * `max` for time and memory).
   */
  readonly target?: {
    readonly ratio?: number
    readonly min?: number
    readonly max?: number
    readonly text: string
  }
}

export const ratioOf = (row: BenchRow): number =>
  row.higherIsBetter ? row.value / row.baseline : row.baseline / row.value

const fmt = (n: number): string => {
  if (!Number.isFinite(n)) return String(n)
  const abs = Math.abs(n)
  if (abs >= 1e9) return `${(n / 1e9).toFixed(2)} G`
  if (abs >= 1e6) return `${(n / 1e6).toFixed(2)} M`
  if (abs >= 1e4) return `${(n / 1e3).toFixed(1)} k`
  if (abs >= 100) return n.toFixed(0)
  if (abs >= 1) return n.toFixed(2)
  return n.toPrecision(3)
}

export const targetMet = (row: BenchRow, ratio = ratioOf(row)): boolean => {
  const t = row.target
  if (t === undefined) return true
  return (
    (t.ratio === undefined || ratio >= t.ratio) &&
    (t.min === undefined || row.value >= t.min) &&
    (t.max === undefined || row.value <= t.max)
  )
}

/** Renders rows as a plain-text table: figure, baseline, ratio (value/baseline, >1 is better), target. */
export const renderTable = (title: string, rows: ReadonlyArray<BenchRow>): string => {
  const header = ["benchmark", "value", "baseline", "ratio", "target", "ok"]
  const body = rows.map((row) => {
    const ratio = ratioOf(row)
    const met = row.target === undefined ? "" : targetMet(row, ratio) ? "yes" : "NO"
    return [
      row.name,
      `${fmt(row.value)} ${row.unit}`,
      `${fmt(row.baseline)} ${row.unit} (${row.baselineName})`,
      `${ratio >= 0.01 ? ratio.toFixed(3) : ratio.toExponential(2)}x`,
      row.target?.text ?? "",
      met
    ]
  })
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")
  return [
    `\n${title}`,
    line(header),
    widths.map((w) => "-".repeat(w)).join("-|-"),
    ...body.map(line),
    "ratio: value/baseline for throughput, baseline/value for time and memory (higher is better)"
  ].join("\n")
}

/** Runs `fn` repeatedly for at least `minMs` and returns operations per second. */
export const opsPerSecond = (fn: () => number, minMs = 300): number => {
  let ops = 0
  const start = performance.now()
  let elapsed = 0
  while (elapsed < minMs) {
    ops += fn()
    elapsed = performance.now() - start
  }
  return (ops / elapsed) * 1000
}

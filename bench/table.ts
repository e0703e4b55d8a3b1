/**
 * Benchmark rows and the table printer shared by every bench module.
 * Each figure stands beside its baseline: the same work done the plainest fast way.
 * A row measured over several rounds carries its samples: it prints the median with
 * the spread (min–max), the baseline's likewise (run in the same rounds, interleaved
 * with it), and the ratio of the medians.
 */

/**
 * `npm run bench -- --quick` (or `CDP_SYNC_BENCH_QUICK=1`): a short pass of every group,
 * fewer or smaller rounds; its figures are for checking the bench runs, not for steering.
 */
export const QUICK = process.argv.includes("--quick") || process.env.CDP_SYNC_BENCH_QUICK === "1"

export const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((x, y) => x - y)
  if (s.length === 0) return Number.NaN
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

export interface BenchRow {
  /** What was measured, in the domain's words. */
  readonly name: string
  /** The figure; the median of `samples` when there are some. */
  readonly value: number
  readonly unit: string
  /**
   * The same work done the plainest fast way, in the same unit (the median of
   * `baselineSamples` when there are some). Absent where the target is absolute only.
   */
  readonly baseline?: number
  readonly baselineName?: string
  /** The figure in each round, when measured over rounds. */
  readonly samples?: ReadonlyArray<number>
  /** The baseline in each of the same rounds. */
  readonly baselineSamples?: ReadonlyArray<number>
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

/** A row from samples over rounds: the value and the baseline are their medians. */
export const overRounds = (
  row: Omit<BenchRow, "value" | "baseline" | "samples" | "baselineSamples">,
  samples: ReadonlyArray<number>,
  baselineSamples?: ReadonlyArray<number>
): BenchRow => ({
  ...row,
  value: median(samples),
  samples,
  ...(baselineSamples === undefined || baselineSamples.length === 0
    ? {}
    : { baseline: median(baselineSamples), baselineSamples })
})

export const ratioOf = (row: BenchRow): number =>
  row.baseline === undefined
    ? Number.NaN
    : row.higherIsBetter
      ? row.value / row.baseline
      : row.baseline / row.value

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
    (t.ratio === undefined || (Number.isFinite(ratio) && ratio >= t.ratio)) &&
    (t.min === undefined || row.value >= t.min) &&
    (t.max === undefined || row.value <= t.max)
  )
}

/** A figure, with its spread over the rounds when it has more than one sample. */
const figure = (value: number, unit: string, samples: ReadonlyArray<number> | undefined): string =>
  samples === undefined || samples.length < 2
    ? `${fmt(value)} ${unit}`
    : `${fmt(value)} ${unit} (${fmt(Math.min(...samples))}–${fmt(Math.max(...samples))})`

/**
 * Renders rows as a plain-text table: figure, baseline, ratio (value/baseline, >1 is
 * better), target. Figures over rounds print as `median (min–max)`.
 */
export const renderTable = (title: string, rows: ReadonlyArray<BenchRow>): string => {
  const header = ["benchmark", "value", "baseline", "ratio", "target", "ok"]
  const body = rows.map((row) => {
    const ratio = ratioOf(row)
    const met = row.target === undefined ? "" : targetMet(row, ratio) ? "yes" : "NO"
    return [
      row.name,
      figure(row.value, row.unit, row.samples),
      row.baseline === undefined
        ? ""
        : `${figure(row.baseline, row.unit, row.baselineSamples)} (${row.baselineName ?? ""})`,
      !Number.isFinite(ratio) ? "" : `${ratio >= 0.01 ? ratio.toFixed(3) : ratio.toExponential(2)}x`,
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
    "ratio: value/baseline for throughput, baseline/value for time and memory (higher is better);",
    "with rounds: median (min–max) of each, ratio of the medians"
  ].join("\n")
}

/** Runs `fn` repeatedly for at least `minMs` and returns operations per second. */
export const opsPerSecond = (fn: () => number, minMs = 300): number => {
  // The quick pass measures each for at most 100 ms.
  if (QUICK) minMs = Math.min(minMs, 100)
  let ops = 0
  const start = performance.now()
  let elapsed = 0
  while (elapsed < minMs) {
    ops += fn()
    elapsed = performance.now() - start
  }
  return (ops / elapsed) * 1000
}

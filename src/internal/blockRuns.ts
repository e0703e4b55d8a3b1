/**
 * Runs of consecutive blocks in ascending `blocks`, each at most `most` long: `[first, count]`.
 * The filter's verify reads the disk by these runs and the receiver hashes its answers by them,
 * so a request of scattered blocks costs a read each and a contiguous one a read per run; with
 * no bound (`Infinity`) they are a verify report's ranges of differing blocks.
 */
export const blockRuns = (blocks: ReadonlyArray<number>, most: number): Array<readonly [number, number]> => {
  const runs: Array<[number, number]> = []
  for (const b of blocks) {
    const last = runs[runs.length - 1]
    if (last !== undefined && last[0] + last[1] === b && last[1] < most) last[1]++
    else runs.push([b, 1])
  }
  return runs
}

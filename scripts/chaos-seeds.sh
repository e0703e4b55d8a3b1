#!/usr/bin/env bash
# The chaos seeds (issue 13): builds once, then runs
#   cdp-sync simulate --faults chaos --seconds 15 --seed N --json
# for each seed, one after the other, and prints one line per seed (seed, verdict,
# duration) and a summary line. Exits 1 if any seed does not end with a match, 2 on
# a usage or build error. Not part of CI (30 seeds take 10 minutes or more).
#
#   scripts/chaos-seeds.sh                  seeds 1 to 30
#   scripts/chaos-seeds.sh --from 16 --to 23
#   SEEDS="16 18 23" scripts/chaos-seeds.sh
#   scripts/chaos-seeds.sh --seconds 5      shorter runs
#
# The stderr of a seed that does not match is kept, and its path printed.
set -uo pipefail

usage() {
  echo "usage: $0 [--from N] [--to N] [--seconds S]   (or SEEDS=\"1 5 9\" $0)" >&2
  exit 2
}

from=1
to=30
seconds=15
while [ $# -gt 0 ]; do
  case "$1" in
    --from) [ $# -ge 2 ] || usage; from=$2; shift 2 ;;
    --to) [ $# -ge 2 ] || usage; to=$2; shift 2 ;;
    --seconds) [ $# -ge 2 ] || usage; seconds=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "$0: unknown argument: $1" >&2; usage ;;
  esac
done
is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_number "$from" && is_number "$to" && is_number "$seconds" || usage

if [ -n "${SEEDS:-}" ]; then
  read -r -a seeds <<<"${SEEDS//,/ }"
  for s in "${seeds[@]}"; do is_number "$s" || { echo "$0: not a seed: $s" >&2; exit 2; }; done
else
  seeds=()
  for ((s = from; s <= to; s++)); do seeds+=("$s"); done
fi
[ ${#seeds[@]} -gt 0 ] || usage

cd "$(dirname "$0")/.." || exit 2
npm run build --silent >&2 || { echo "$0: the build failed" >&2; exit 2; }

logs=$(mktemp -d "${TMPDIR:-/tmp}/chaos-seeds-XXXXXX")
failed=()
started=$(date +%s%N)
for seed in "${seeds[@]}"; do
  log="$logs/seed-$seed.log"
  t0=$(date +%s%N)
  out=$(node bin/cdp-sync.js simulate --faults chaos --seconds "$seconds" --seed "$seed" --json 2>"$log")
  code=$?
  t1=$(date +%s%N)
  verdict=$(printf '%s' "$out" | node -e '
    let s = ""
    process.stdin.on("data", (c) => (s += c)).on("end", () => {
      try { console.log(JSON.parse(s).verdict ?? "no-verdict") } catch { console.log("no-report") }
    })')
  duration=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", ns / 1e9 }')
  if [ "$verdict" = "match" ] && [ $code -eq 0 ]; then
    rm -f "$log"
    printf 'seed %3d  %-10s  %7s s\n' "$seed" "$verdict" "$duration"
  else
    failed+=("$seed")
    printf 'seed %3d  %-10s  %7s s  exit %d  log %s\n' "$seed" "$verdict" "$duration" "$code" "$log"
  fi
done
total=$(awk -v ns=$(($(date +%s%N) - started)) 'BEGIN { printf "%.0f", ns / 1e9 }')

if [ ${#failed[@]} -eq 0 ]; then
  rmdir "$logs" 2>/dev/null
  echo "summary: ${#seeds[@]} seeds, all match (${total} s)"
  exit 0
fi
echo "summary: ${#seeds[@]} seeds, $((${#seeds[@]} - ${#failed[@]})) match, ${#failed[@]} do not: ${failed[*]} (${total} s; logs in $logs)"
exit 1

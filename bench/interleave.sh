#!/usr/bin/env bash
# Compares two builds of tripline on one broker bench, in turn, so that the
# machine's drift (±10 % between runs here) falls on both sides alike — how
# the "interleaved runs" in docs/performance.md were measured. The order
# alternates by round (use an even number of rounds): the run going second
# in a pair was measured 5–15 % slower in some sets of runs on the seventh
# round's machine (not in others).
#
#   cargo build --release && cp target/release/tripline /tmp/tripline.before
#   # ...change, then:
#   cargo build --release && cp target/release/tripline /tmp/tripline.after
#   cargo bench --bench kafka_throughput --no-run
#   bash bench/interleave.sh /tmp/tripline.before /tmp/tripline.after kafka_throughput 6
#
# The bench starts `target/release/tripline`, so each binary is copied there
# in turn (the after one is left in place). Only the no-match case runs
# (TRIPLINE_BENCH_NO_MATCH_ONLY); TRIPLINE_BENCH_MESSAGES defaults to 100000.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2 bench=$3 rounds=${4:-4}
exe=$(ls -t target/release/deps/"$bench"-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -x "$exe" ] || { echo "no bench binary for $bench: run cargo bench --bench $bench --no-run" >&2; exit 2; }
declare -A sum
for i in $(seq 1 "$rounds"); do
  # The second run of a pair tends to be slower here (the broker's state
  # after the first): odd rounds run before → after, even rounds after →
  # before, so neither side always goes second.
  order="before after"; [ $((i % 2)) -eq 0 ] && order="after before"
  for side in $order; do
    bin=$before; [ "$side" = after ] && bin=$after
    cp "$bin" target/release/tripline
    line=$(TRIPLINE_BENCH_NO_MATCH_ONLY=1 TRIPLINE_BENCH_MESSAGES=${TRIPLINE_BENCH_MESSAGES:-100000} \
      "$exe" --bench 2>&1 | grep -E "no match|nothing matches" | head -1)
    rate=$(grep -oE '[0-9]+ msg/s' <<<"$line" | head -1 | cut -d' ' -f1)
    echo "round $i $side: $line"
    sum[$side]=$(( ${sum[$side]:-0} + rate ))
  done
done
cp "$after" target/release/tripline
echo "means: before $(( sum[before] / rounds )) msg/s, after $(( sum[after] / rounds )) msg/s"

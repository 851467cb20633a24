#!/bin/bash
# A/B of two loss_bench binaries in one sequence: each round runs A then B (3 interleaved
# repetitions each, glibc keeping freed memory), and the best median of the rounds is printed
# per binary and benchmark. On a noisy machine this compares two builds more fairly than two
# separate runs.
#
#   bench/ab.sh '^(floor_two_softmax|fwd_bwd/dml)/256/1000/' old/loss_bench build/bench/loss_bench 3
set -euo pipefail
filter=$1 a=$2 b=$3 rounds=${4:-3}
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4000000000 MALLOC_TOP_PAD_=268435456
for _ in $(seq "$rounds"); do
  for bin in "$a" "$b"; do
    "$bin" --benchmark_filter="$filter" --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true \
      --benchmark_report_aggregates_only=true 2>/dev/null |
      awk -v who="$([ "$bin" = "$a" ] && echo A || echo B)" '/_median/ {sub(/\/real_time_median/, "", $1); print $1, who, $2}'
  done
done | awk '{k = $1 " " $2; if (!(k in best) || $3 < best[k]) best[k] = $3}
            END {for (k in best) print k, best[k]}' | sort | awk '{printf "%-34s %s %8s us\n", $1, $2, $3}'

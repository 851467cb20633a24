#!/bin/bash
# End-to-end training steps, distill against the same step written as common PyTorch code
# (bench/train_step.cpp vs bench/train_step.py), interleaved: each round runs every case on
# both sides, one after the other, same threads; the median over rounds of each side's median
# step is printed with the ratio (> 1: distill faster).
#
#   bench/e2e.sh [BUILD=build] [ROUNDS=3] [THREADS=1]
set -euo pipefail
build=${1:-build} rounds=${2:-3} threads=${3:-1}
python=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
cases=(
  "--net resnet --kd --batch 32 --steps 5 --warmup 1"
  "--net convnet --batch 128 --channels-last --steps 60 --warmup 10"
  "--net convnet --kd --batch 128 --channels-last --steps 60 --warmup 10"
)
out=$(mktemp)
for round in $(seq "$rounds"); do
  for c in "${cases[@]}"; do
    # shellcheck disable=SC2086
    echo "$c|distill|$("$build/bench/train_step" $c --threads "$threads")" >> "$out"
    # shellcheck disable=SC2086
    echo "$c|pytorch|$("$python" "$here/train_step.py" $c --threads "$threads")" >> "$out"
  done
  echo "round $round of $rounds done" >&2
done
echo "# bench/e2e.sh $build $rounds $threads: $(nproc) cores, $threads intra-op thread(s), $(date -u +%F)"
"$python" - "$out" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    case, side, result = line.rstrip("\n").split("|")
    words = result.split()
    values = {words[i]: float(words[i + 1]) for i in range(len(words) - 1) if words[i] in ("step_s", "cpu_s")}
    runs.setdefault(case, {}).setdefault(side, []).append(values)
print("| case | distill s/step (CPU s) | PyTorch s/step (CPU s) | PyTorch / distill |")
print("|---|---:|---:|---:|")
for case, sides in runs.items():
    med = {s: (statistics.median(v["step_s"] for v in r), statistics.median(v["cpu_s"] for v in r)) for s, r in sides.items()}
    d, p = med["distill"], med["pytorch"]
    print("| %s | %.4f (%.4f) | %.4f (%.4f) | %.3f |" % (case, d[0], d[1], p[0], p[1], p[0] / d[0]))
PY
rm -f "$out"

#!/bin/bash
# End-to-end training steps, distill against the same step written as common PyTorch code
# (bench/train_step.cpp vs bench/train_step.py), and the JPEG input pipeline (bench/loader.cpp
# vs bench/loader.py with PIL and with torchvision.io, 2 loader workers, 512 synthetic 500x375
# JPEGs made once), interleaved: each round runs every case on both sides, one after the other,
# same threads; the median over rounds of each side's median step is printed with the ratio
# (> 1: distill faster).
#
#   bench/e2e.sh [BUILD=build] [ROUNDS=3] [THREADS=1]      (JPEGS=DIR keeps the images there)
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
jpegs=${JPEGS:-$(mktemp -d)}
[ -f "$jpegs/list.txt" ] || "$python" "$here/loader.py" --make "$jpegs" --count 512
load="--root $jpegs --list $jpegs/list.txt --workers 2 --batch 32 --epochs 6 --threads $threads"
for round in $(seq "$rounds"); do
  for c in "${cases[@]}"; do
    # shellcheck disable=SC2086
    echo "$c|distill|$("$build/bench/train_step" $c --threads "$threads")" >> "$out"
    # shellcheck disable=SC2086
    echo "$c|pytorch|$("$python" "$here/train_step.py" $c --threads "$threads")" >> "$out"
  done
  # shellcheck disable=SC2086
  echo "loader|distill|$("$build/bench/loader" $load)" >> "$out"
  for mode in pil tensor; do
    # shellcheck disable=SC2086
    echo "loader|pytorch $mode|$("$python" "$here/loader.py" $load --mode $mode)" >> "$out"
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
    values = {words[i]: float(words[i + 1]) for i in range(len(words) - 1) if words[i] in ("step_s", "cpu_s", "images_s")}
    runs.setdefault(case, {}).setdefault(side, []).append(values)
loader = runs.pop("loader", None)
print("| case | distill s/step (CPU s) | PyTorch s/step (CPU s) | PyTorch / distill |")
print("|---|---:|---:|---:|")
for case, sides in runs.items():
    med = {s: (statistics.median(v["step_s"] for v in r), statistics.median(v["cpu_s"] for v in r)) for s, r in sides.items()}
    d, p = med["distill"], med["pytorch"]
    print("| %s | %.4f (%.4f) | %.4f (%.4f) | %.3f |" % (case, d[0], d[1], p[0], p[1], p[0] / d[0]))
if loader:
    med = {s: statistics.median(v["images_s"] for v in r) for s, r in loader.items()}
    print("\n| JPEG decode + random resized crop 224 + flip + normalise, 2 workers, batch 32 | images/s | distill / this |")
    print("|---|---:|---:|")
    for side, v in med.items():
        print("| %s | %.1f | %.2f |" % (side, v, med["distill"] / v))
PY
rm -f "$out"
[ -n "${JPEGS:-}" ] || rm -rf "$jpegs"

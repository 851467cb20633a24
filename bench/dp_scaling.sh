#!/bin/bash
# Data-parallel scaling of `distill train` on this machine: one process against two workers
# (--nproc 2) with the gradient all-reduce overlapping backward and with it after backward
# (DISTILL_GRADIENT_OVERLAP=0), interleaved rounds, one intra-op thread per process. Fashion-MNIST
# KD (tests/distributed/recipe.json: ConvNets without BatchNorm), one epoch of 30000 images,
# batch 64 per process, no evaluation. Prints images/s (median over rounds) and the speed-up.
#
#   bench/dp_scaling.sh [BUILD=build] [ROUNDS=3] [STUDENT_WIDTHS=[16,32,64]]    (LIMIT=N images, default 30000)
set -euo pipefail
build=${1:-build} rounds=${2:-3} widths=${3:-[16,32,64]}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
args=(train -c "$here/tests/distributed/recipe.json" -o Global.epochs=1 -o Global.eval_during_train=false
      -o DataLoader.Train.dataset.limit=${LIMIT:-30000} -o "Arch.models[1].Student.widths=$widths"
      -o "Arch.models[0].Teacher.widths=[32,64,128]" -o DataLoader.Train.sampler.batch_size=64
      -o Global.output_dir="$work/out")
rate() { sed -n 's/.*done: 1 epochs in .* (\([0-9.]*\) img\/s).*/\1/p' | tail -1; }
out=$(mktemp)
for round in $(seq "$rounds"); do
  echo "one $("$build/examples/distill" "${args[@]}" --threads 1 2>&1 | rate)" >> "$out"
  echo "overlap $("$build/examples/distill" "${args[@]}" --nproc 2 --threads 1 2>&1 | rate)" >> "$out"
  echo "after $(DISTILL_GRADIENT_OVERLAP=0 "$build/examples/distill" "${args[@]}" --nproc 2 --threads 1 2>&1 | rate)" >> "$out"
  echo "round $round of $rounds done" >&2
done
echo "# LIMIT=${LIMIT:-30000} bench/dp_scaling.sh $build $rounds $widths: $(nproc) cores, 1 intra-op thread per process, $(date -u +%F)"
python3 - "$out" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    side, rate = line.split()
    runs.setdefault(side, []).append(float(rate))
med = {k: statistics.median(v) for k, v in runs.items()}
print("| run | images/s (rounds) | vs one process |")
print("|---|---:|---:|")
for k, label in (("one", "1 process"), ("overlap", "2 workers, all-reduce during backward"),
                 ("after", "2 workers, all-reduce after backward")):
    print("| %s | %.0f (%s) | %.2fx |" % (label, med[k], ", ".join("%.0f" % r for r in runs[k]), med[k] / med["one"]))
PY
rm -rf "$work" "$out"

#!/usr/bin/env bash
# The CUDA check of the losses, for a machine with a GPU and PyTorch 2.x (about 5 minutes):
# builds bench/ against that PyTorch's libtorch, runs the loss parity check on the CPU and on
# the GPU, the CUDA benchmarks, and the comparison with eager and torch.compile'd PyTorch, then
# prints a final table.
#
#   bench/gpu.sh [results folder]            (default bench/results/gpu)
#
# Needs python3 with a CUDA build of torch, CMake >= 3.21, Ninja, a C++17 compiler, and the
# CMake packages of fmt, nlohmann_json and Google Benchmark; DISTILL_DEPS_PREFIX adds a prefix
# for those (bench/pack_deps.sh makes one from Debian's packages). DISTILL_GPU_DEVICE=cpu runs
# the same steps without a GPU (to try the script), with TORCH_PREFIX naming the libtorch.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-bench/results/gpu}
device=${DISTILL_GPU_DEVICE:-cuda}
build=${DISTILL_GPU_BUILD:-build-gpu}
python=${PYTHON:-python3}
mkdir -p "$results"
start=$SECONDS
declare -a summary
step() {  # step <name> <command...>: runs it, records the outcome and the seconds it took
  local name=$1 t0=$SECONDS
  shift
  echo "== $name"
  "$@"
  local rc=$?
  summary+=("$(printf '%-34s %-6s %4ds' "$name" "$([[ $rc == 0 ]] && echo ok || echo FAILED)" $((SECONDS - t0)))")
  return $rc
}

"$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "(no GPU visible)")'
torch_prefix=${TORCH_PREFIX:-$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')}
configure() {
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix;${DISTILL_DEPS_PREFIX:-}" \
    -DDISTILL_BUILD_TESTS=OFF -DDISTILL_BUILD_EXAMPLES=OFF -DDISTILL_BUILD_BENCH=ON -DDISTILL_INSTALL=OFF
}
step "configure against $(basename "$(dirname "$(dirname "$torch_prefix")")")" configure &&
  step "build loss_bench, loss_parity" cmake --build "$build" -j"$(nproc)" --target loss_bench loss_parity || {
  printf '%s\n' "${summary[@]}"
  exit 1
}
step "parity on cpu" "$build/bench/loss_parity" tests/reference/losses.json --device cpu
[[ $device == cpu ]] || step "parity on cuda" "$build/bench/loss_parity" tests/reference/losses.json --device cuda
filter='^cuda/'
[[ $device == cpu ]] && filter='^(floor_two_softmax|fwd_bwd/[a-z_]+)/(256/1000|1024/32000)'
step "benchmarks ($device)" "$build/bench/loss_bench" --benchmark_filter="$filter" --benchmark_min_time=0.2 \
  --benchmark_out="$results/loss_bench_$device.json" --benchmark_out_format=json
step "eager and torch.compile comparison" bash -c "set -o pipefail; '$python' bench/compare_eager.py '$results/loss_bench_$device.json' \
  --device $device --compile --shapes 256x1000,1024x32000 --compile-shapes 1024x32000 | tee '$results/compare_$device.txt'"

echo
echo "== summary ($((SECONDS - start)) s)"
printf '%s\n' "${summary[@]}"
echo
cat "$results/compare_$device.txt" 2>/dev/null

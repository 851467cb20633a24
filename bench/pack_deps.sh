#!/usr/bin/env bash
# Copies what a build of bench/ needs besides libtorch (fmt, nlohmann-json, Google Benchmark)
# from this machine's Debian packages into a folder, for a GPU machine that cannot install
# packages. The folder's usr/ is then a CMake prefix:
#   bench/pack_deps.sh .gpu-deps && DISTILL_DEPS_PREFIX=$PWD/.gpu-deps/usr bench/gpu.sh
set -euo pipefail
dest=${1:?usage: bench/pack_deps.sh <folder>}
for pkg in libfmt-dev libfmt9 nlohmann-json3-dev libbenchmark-dev libbenchmark1debian; do
  dpkg -L "$pkg" | while read -r f; do
    [[ -f $f && $f != /usr/share/doc/* && $f != /usr/share/man/* ]] || continue
    mkdir -p "$dest$(dirname "$f")"
    cp -P "$f" "$dest$f"
  done
done
du -sh "$dest"

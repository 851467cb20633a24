#!/bin/sh
# Installs, from Debian 12's archive, whatever distill needs to build and test that is not yet
# installed. Run as root; does nothing when everything is present.
set -eu
packages="cmake ninja-build g++ ccache libtorch-dev libgloo-dev libfmt-dev nlohmann-json3-dev catch2 libbenchmark-dev libturbojpeg0-dev zlib1g-dev libyaml-cpp-dev libopenblas0-openmp strace dataset-fashion-mnist python3-torch python3-torchvision python3-pil python3-onnx"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "tools/deps.sh: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

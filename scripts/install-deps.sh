#!/usr/bin/env bash
# Installs pimtrain's Debian build and test dependencies (only what is missing; safe to re-run).
set -euo pipefail
packages=(
  g++ cmake ninja-build ccache pkg-config
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libfmt-dev zlib1g-dev libopenblas-dev libdnnl-dev
  librandom123-dev
  libgtest-dev libbenchmark-dev
  dataset-fashion-mnist
  openmpi-bin libopenmpi-dev python3-matplotlib
  python3-dev pybind11-dev python3-numpy python3-pytest python3-torch
  "$@"
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

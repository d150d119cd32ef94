#!/usr/bin/env bash
# The main job: install dependencies, build, train the T-PIM preset (presets/chips/tpim.yaml: the
# MLP on Fashion-MNIST with all four training stages on the simulated bit-serial SRAM macro) and
# print per-epoch progress, the final test accuracy and the chip's cost report. Extra arguments
# go to `pimtrain train`: another config file replaces the preset (e.g. configs/mlp.yaml for the
# exact FP32 engine); --set options apply on top (e.g. --set train.epochs=2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
/usr/bin/python3 python/install_pth.py build/release  # import pimtrain from anywhere
args=("$@")
has_config=0
for a in "$@"; do
  case "$a" in *.yaml | *.yml) has_config=1 ;; esac
done
if [ "$has_config" = 0 ]; then args=(presets/chips/tpim.yaml "${args[@]}"); fi
exec build/release/pimtrain train "${args[@]}"

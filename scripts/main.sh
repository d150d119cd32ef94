#!/usr/bin/env bash
# The main job: install dependencies, build, and train the default configuration on
# Fashion-MNIST, printing per-epoch progress and the final test accuracy. Extra arguments go to
# `pimtrain train` (e.g. a config file or --set train.epochs=2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
exec build/release/pimtrain train "$@"

#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole default test suite (slow studies excluded:
# they carry the CTest label "slow"; run them with `ctest --preset release -L slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
ctest --preset release -j "$(nproc)" -LE slow

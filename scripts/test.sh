#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole default test suite twice: optimized
# (preset "release"), then built with AddressSanitizer + UndefinedBehaviorSanitizer (preset
# "asan"), where any sanitizer report fails the test that triggered it. Slow studies are
# excluded from both: they carry the CTest label "slow"; run them with
# `ctest --preset release -L slow`. PIMTRAIN_SKIP_ASAN=1 skips the sanitizer pass (local use).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# ccache hits for clones at other paths too (CI starts from a fresh clone): paths under the
# checkout are hashed relative to it, and the debug build's working directory is not hashed.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
scripts/build.sh release
/usr/bin/python3 python/install_pth.py build/release  # import pimtrain from anywhere
ctest --preset release -j "$(nproc)" -LE slow

if [ "${PIMTRAIN_SKIP_ASAN:-0}" != 1 ]; then
  scripts/build.sh asan
  # Leaks count as findings too; UBSan stops at the first report (and the preset compiles
  # with -fno-sanitize-recover=all, so every report is fatal).
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  ctest --preset asan -j "$(nproc)" -LE slow
fi

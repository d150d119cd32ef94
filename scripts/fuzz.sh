#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, -DPIMTRAIN_FUZZ=ON) and runs each for a
# bounded number of executions and time, starting from the seed corpus in fuzz/corpus/<target>.
#
#   scripts/fuzz.sh [RUNS] [MAX_SECONDS] [TARGET...]
#     RUNS         executions per target (default 1000000)
#     MAX_SECONDS  wall-time cap per target (default 900)
#     TARGET       config idx cifar10 checkpoint results (default: all)
#
# Environment: PIMTRAIN_FUZZ_BUILD (build directory, default build/fuzz), PIMTRAIN_FUZZ_JOBS
# (ninja jobs, default nproc), PIMTRAIN_FUZZ_NO_BUILD=1 (run the binaries already built).
#
# Inputs that grow coverage go to build/fuzz/corpus/<target>/ (not in the repo); crashes, hangs
# and sanitizer reports leave build/fuzz/artifacts/<target>-*. The script prints one line per
# target (executions, seconds, new corpus size, verdict) and exits non-zero on any finding.
# A finding becomes a regression input: copy it into fuzz/regressions/<target>/ (replayed by
# tests/fuzz_regressions_test.cc) and fix the reader.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
max_seconds="${2:-900}"
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(config idx cifar10 checkpoint results)
build="${PIMTRAIN_FUZZ_BUILD:-build/fuzz}"

if [ "${PIMTRAIN_FUZZ_NO_BUILD:-0}" != 1 ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER="${CXX_FUZZ:-clang++}" -DPIMTRAIN_FUZZ=ON -DPIMTRAIN_TESTS=OFF \
    -DPIMTRAIN_BENCH=OFF >/dev/null
  ninja -C "$build" -j "${PIMTRAIN_FUZZ_JOBS:-$(nproc)}" $(printf 'fuzz_%s ' "${targets[@]}")
fi

# Inputs above these sizes add nothing: a CIFAR record is 3073 bytes, the rest are small texts.
declare -A max_len=([config]=4096 [idx]=4096 [cifar10]=8192 [checkpoint]=4096 [results]=4096)
status=0
mkdir -p "$build/artifacts"
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  log="$build/fuzz_$t.log"
  mkdir -p "$corpus"
  rc=0
  # The first corpus directory receives new inputs; the seeds and past findings are read only.
  seeds=("fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && seeds+=("fuzz/regressions/$t")
  "$build/fuzz/fuzz_$t" -runs="$runs" -max_total_time="$max_seconds" -max_len="${max_len[$t]}" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$t-" "$corpus" "${seeds[@]}" >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' |
         grep -o '[0-9]*' || echo "?")
  verdict="ok"
  if [ "$rc" -ne 0 ] || grep -qE 'ERROR: (libFuzzer|AddressSanitizer|UndefinedBehavior)|runtime error:' "$log"; then
    verdict="FINDING (exit $rc; see $log and $build/artifacts/$t-*)"
    status=1
  fi
  printf '%-11s %10s execs  %5ss  corpus %5s  %s\n' "$t" "$execs" "$secs" \
    "$(find "$corpus" -type f | wc -l)" "$verdict"
done
exit "$status"

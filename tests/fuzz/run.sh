#!/usr/bin/env bash
# tests/fuzz/run.sh SECONDS [BUILD_DIR] — builds the libFuzzer targets with clang (library
# instrumented, ASan + UBSan) and runs each for SECONDS on a copy of its committed seed corpus
# (tests/fuzz/corpus/<target>), printing the executions of each. Exits non-zero on the first crash,
# leak or sanitizer report (the crashing input is left in BUILD_DIR/crash-*).
# CI runs it with 30 s a target and a fixed seed (CO_FUZZ_SEED, default 1, so that a run can be
# repeated); a longer run is e.g. `CO_FUZZ_SEED=$RANDOM tests/fuzz/run.sh 1800`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECS="${1:-30}"
BUILD="${2:-$ROOT/build-fuzz}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
CC=clang cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCO_FUZZ=ON -DCO_WERROR=ON \
  -DCO_BUILD_TESTS=OFF -DCO_BUILD_TOOLS=OFF >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target fuzz_load fuzz_restore fuzz_step fuzz_npy fuzz_nets >/dev/null
total=0
for t in load restore step npy nets; do
  work="$BUILD/corpus-$t"
  rm -rf "$work" && mkdir -p "$work"
  cp "$ROOT/tests/fuzz/corpus/$t/"* "$work/" 2>/dev/null || true
  log="$BUILD/fuzz_$t.log"
  if ! (cd "$BUILD" && ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "./fuzz_$t" -seed="${CO_FUZZ_SEED:-1}" -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 "$work" >"$log" 2>&1); then
    tail -n 40 "$log"
    echo "fuzz_$t: FAILED (see $log)"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "fuzz_$t: ${runs:-?} executions in ${SECS} s, no crash"
  total=$((total + ${runs:-0}))
done
echo "fuzzers: $total executions in all"

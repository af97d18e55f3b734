#!/usr/bin/env bash
# `npm test`: builds what changed, runs the core's C++ unit tests (ctest; then again under
# ASan+UBSan and under TSan) and every node:test file (unit and integration). Integration tests
# build their own network namespaces, veth pairs and iptables rules, so they need root; without
# it they fail (they never skip quietly).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "npm test needs root: the integration tests create network namespaces and iptables rules." >&2
  exit 1
fi

echo "== build"
npx --no-install cmake-js compile --release --log-level warn
npx --no-install tsc -p tsconfig.json

# The core's tests (ctest) run under sanitizers, each in its own build dir; any report fails the
# suite: the builds use -fno-sanitize-recover, and the options below make every report fatal too.
# Every ctest test runs under AddressSanitizer + UndefinedBehaviorSanitizer (a separate plain run
# would only repeat them, and its build cost a minute of the suite); the threaded ones also under
# ThreadSanitizer. `cmake -S . -B build/ctest -DSPLICEGATE_TESTS=ON && ctest --test-dir build/ctest`
# runs them without sanitizers.
sanitizer_build() {
  local dir=$1 sanitizers=$2
  shift 2
  cmake -S . -B "$dir" -DSPLICEGATE_TESTS=ON -DCMAKE_BUILD_TYPE=Debug -DSPLICEGATE_SANITIZE="$sanitizers" >/dev/null
  cmake --build "$dir" -j2 "$@" >/dev/null
}
echo "== C++ core unit tests (ctest) under AddressSanitizer + UndefinedBehaviorSanitizer (build/asan)"
sanitizer_build build/asan address,undefined
ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build/asan --output-on-failure --no-tests=error --timeout 300
echo "== C++ core unit tests under ThreadSanitizer (build/tsan)"
# The tests with threads: the loop thread, posters and stat readers (core_tests); workers sharing
# the process-wide own-socket registry (stream_tests, own_sockets_tests); HTTP sessions on a loop thread polled by
# the test thread (http_tests); orphaned loops and their reaper (orphan_tests).
tsan_tests=(core_tests stream_tests own_sockets_tests http_tests orphan_tests)
sanitizer_build build/tsan thread --target "${tsan_tests[@]}"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build/tsan --output-on-failure --no-tests=error --timeout 300 -R "^($(IFS='|'; echo "${tsan_tests[*]}"))\$"

# Fuzzing: every target (scripts/fuzz.sh) for a bounded time from the seeds in the repo, plus a
# re-check of each known finding; any crash fails the suite. SPLICEGATE_FUZZ_SECONDS sets the time
# per target (default 10 here, keeping the suite well under 15 minutes; `npm run fuzz` runs 60 s per
# target and `npm run fuzz -- --seconds N` longer).
echo "== fuzz targets (${SPLICEGATE_FUZZ_SECONDS:-10}s each)"
bash scripts/fuzz.sh --seconds "${SPLICEGATE_FUZZ_SECONDS:-10}"

echo "== TypeScript unit and integration tests (node --test)"
mapfile -t files < <(find dist/test dist/bench/test -name "*.test.js" | sort)
if [ "${#files[@]}" -eq 0 ]; then
  echo "no test files found under dist/test" >&2
  exit 1
fi
# One file at a time: the integration tests measure timeouts and move hundreds of MiB, and this
# machine has two cores.
node --test --test-concurrency=1 "${files[@]}"

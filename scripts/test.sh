#!/usr/bin/env bash
# `npm test`: builds what changed, runs the core's C++ unit tests (ctest) and every node:test file
# (unit and integration). Integration tests build their own network namespaces, veth pairs and
# iptables rules, so they need root; without it they fail (they never skip quietly).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "npm test needs root: the integration tests create network namespaces and iptables rules." >&2
  exit 1
fi

echo "== build"
npx --no-install cmake-js compile --release --log-level warn
npx --no-install tsc -p tsconfig.json

echo "== C++ core unit tests (ctest)"
cmake -S . -B build/ctest -DSPLICEGATE_TESTS=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/ctest -j2 >/dev/null
ctest --test-dir build/ctest --output-on-failure

# Fuzzing: every target (scripts/fuzz.sh) for a bounded time from the seeds in the repo, plus a
# re-check of each known finding; any crash fails the suite. SPLICEGATE_FUZZ_SECONDS sets the time
# per target (default 60; `npm run fuzz -- --seconds N` for longer runs).
echo "== fuzz targets (${SPLICEGATE_FUZZ_SECONDS:-60}s each)"
bash scripts/fuzz.sh --seconds "${SPLICEGATE_FUZZ_SECONDS:-60}"

echo "== TypeScript unit and integration tests (node --test)"
mapfile -t files < <(find dist/test dist/bench/test -name "*.test.js" | sort)
if [ "${#files[@]}" -eq 0 ]; then
  echo "no test files found under dist/test" >&2
  exit 1
fi
# One file at a time: the integration tests measure timeouts and move hundreds of MiB, and this
# machine has two cores.
node --test --test-concurrency=1 "${files[@]}"

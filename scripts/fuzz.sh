#!/usr/bin/env bash
# `npm run fuzz [-- [--seconds N] [TARGET...]]`: builds and runs the coverage-guided fuzz targets,
# each for N seconds (default 60), and fails if any finds a crash.
#
#   TypeScript targets: test/fuzz/<name>.fuzz.ts, run by Jazzer.js (libFuzzer inside Node).
#   C++ targets:        cpp/fuzz/<name>_fuzz.cc, libFuzzer + ASan + UBSan (CMake SPLICEGATE_FUZZ).
# Seeds: test/fuzz/<name>_corpus/ and cpp/fuzz/<name>_corpus/ (in the repo, never written to).
# What a run learns goes to build/fuzz/corpus/<name>/ and is reused by the next local run; crash
# inputs go to build/fuzz/artifacts/<name>/. Known, tracked findings: test/fuzz/known-findings.json.
#
# Options: --seconds N   time per target
#          --list        print the targets and exit
#          --repro FILE  run one target (name required) on one input and show what it does
#          TARGET...     only these targets (names as --list prints them)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
repro=""
list=0
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --repro) repro="${2:?--repro needs a file}"; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) only+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: --seconds wants a positive integer, got '$seconds'" >&2; exit 2; }

# Per-target Jazzer.js options; a target not listed runs with the defaults (async, our code only).
#  config-text: synchronous (parseConfigText is), and the YAML parser is instrumented too, so
#  coverage guides the fuzzer through YAML syntax and not only through our schema checks.
#  latency-log: synchronous too, and hdr-histogram-js (the log reader and decoder) is instrumented.
#  envoy-text: synchronous; our converter only (config-text already steers the YAML parser).
declare -A JAZZER_OPTS=(
  [config-text]="--sync -i /dist/src/ -i /node_modules/yaml/ -e /node_modules/yaml/node_modules/"
  [admin-request]="-i /dist/src/"
  [latency-log]="--sync -i /dist/src/ -i /node_modules/hdr-histogram-js/"
  [envoy-text]="--sync -i /dist/src/"
)
declare -A MAX_LEN=([config-text]=8192 [latency-log]=16384 [envoy-text]=8192)

ts_targets=()
for f in test/fuzz/*.fuzz.ts; do ts_targets+=("$(basename "$f" .fuzz.ts)"); done
cpp_targets=()
for f in cpp/fuzz/*_fuzz.cc; do cpp_targets+=("$(basename "$f" _fuzz.cc)"); done
if [ "$list" -eq 1 ]; then
  printf '%s (ts)\n' "${ts_targets[@]}"
  printf '%s (c++)\n' "${cpp_targets[@]}"
  exit 0
fi
is_ts() { [[ " ${ts_targets[*]} " == *" $1 "* ]]; }
is_cpp() { [[ " ${cpp_targets[*]} " == *" $1 "* ]]; }
if [ ${#only[@]} -eq 0 ]; then only=("${ts_targets[@]}" "${cpp_targets[@]}"); fi
for t in "${only[@]}"; do
  is_ts "$t" || is_cpp "$t" || { echo "fuzz: no target '$t' (targets: ${ts_targets[*]} ${cpp_targets[*]})" >&2; exit 2; }
done
if [ -n "$repro" ] && [ ${#only[@]} -ne 1 ]; then echo "fuzz: --repro needs exactly one target name" >&2; exit 2; fi

step() { printf '== fuzz: %s\n' "$*"; }
started=$SECONDS

command -v clang++ >/dev/null && [ -f "$(clang++ -print-file-name=libclang_rt.fuzzer_no_main-x86_64.a)" ] || {
  echo "fuzz: clang and libFuzzer are missing: run 'bash scripts/system-deps.sh' (Debian: clang libclang-rt-14-dev)" >&2
  exit 1
}

need_ts=0; need_cpp=0
for t in "${only[@]}"; do if is_ts "$t"; then need_ts=1; else need_cpp=1; fi; done

if [ "$need_ts" -eq 1 ]; then
  # Jazzer.js's native part, built from the sources its npm package ships (cpp/fuzz/jazzer/ says why).
  jz=node_modules/@jazzer.js/fuzzer
  addon="$jz/build/Release/jazzerjs.node"
  if [ ! -f "$addon" ] || [ -n "$(find cpp/fuzz/jazzer -newer "$addon" -type f)" ]; then
    step "building the Jazzer.js addon against Debian's libFuzzer"
    mkdir -p build
    CXX=clang++ npx --no-install cmake-js compile --directory cpp/fuzz/jazzer --out build/jazzer \
      --CDJAZZER_FUZZER_DIR="$PWD/$jz" --log-level warn >build/jazzer-build.log 2>&1 ||
      { cat build/jazzer-build.log >&2; echo "fuzz: building the Jazzer.js addon failed" >&2; exit 1; }
    mkdir -p "$jz/build/Release"
    cp build/jazzer/Release/jazzerjs.node "$addon"
  fi
  step "compiling TypeScript"
  npx --no-install tsc -p tsconfig.json
fi
if [ "$need_cpp" -eq 1 ]; then
  step "building the C++ targets (clang, libFuzzer, ASan, UBSan)"
  cmake -S . -B build/fuzz-cpp -DSPLICEGATE_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build/fuzz-cpp -j2 >/dev/null
fi

build_seconds=$((SECONDS - started))

# target_cmd NAME [INPUTS...] -- [LIBFUZZER ARGS...]: sets `cmd` to the command that runs target
# NAME on those corpus dirs/files (Jazzer.js takes them before its own "--", libFuzzer directly).
target_cmd() {
  local name="$1"; shift
  local inputs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  if is_ts "$name"; then
    local opts
    read -r -a opts <<<"${JAZZER_OPTS[$name]:-}"
    cmd=(node_modules/.bin/jazzer "dist/test/fuzz/$name.fuzz" "${inputs[@]}" "${opts[@]}" --timeout=30000 -- "$@")
  else
    cmd=("build/fuzz-cpp/${name}_fuzz" "${inputs[@]}" "$@")
  fi
}
seeds_of() { if is_ts "$1"; then echo "test/fuzz/$1_corpus"; else echo "cpp/fuzz/$1_corpus"; fi; }
dict_of() { local d; d="$(seeds_of "$1")"; d="${d%_corpus}.dict"; [ -f "$d" ] && echo "-dict=$d"; return 0; }

if [ -n "$repro" ]; then
  name="${only[0]}"
  mkdir -p "build/fuzz/artifacts/$name"
  target_cmd "$name" "$repro" -- -runs=1 "-artifact_prefix=build/fuzz/artifacts/$name/"
  SPLICEGATE_FUZZ_STRICT=1 exec "${cmd[@]}"
fi

# Known findings: each listed seed must still reproduce its finding with the list switched off.
# When it no longer does (the fix is in), the entry has to go, or it would keep hiding that code.
stale=()
if [ "$need_ts" -eq 1 ] && [ -f test/fuzz/known-findings.json ]; then
  while IFS=$'\t' read -r target code seed; do
    [[ " ${only[*]} " == *" $target "* ]] || continue
    mkdir -p "build/fuzz/artifacts/$target"
    known_log="build/fuzz/artifacts/$target/known-${code//[^A-Za-z0-9_]/_}.log"
    target_cmd "$target" "$seed" -- -runs=1 "-artifact_prefix=build/fuzz/artifacts/$target/known-"
    if SPLICEGATE_FUZZ_STRICT=1 timeout --kill-after=10 300 "${cmd[@]}" >"$known_log" 2>&1; then
      stale+=("$target $code ($seed)")
    elif ! grep -qF "[$code]" "$known_log"; then
      stale+=("$target $code ($seed now fails differently: $known_log)")
    else
      step "known finding still reproduces: $target $code"
    fi
  done < <(node -e 'for (const k of require("./test/fuzz/known-findings.json")) console.log([k.target, k.code, k.seed].join("\t"))')
fi

failed=()
summary=()
for name in "${only[@]}"; do
  work="build/fuzz/corpus/$name"
  artifacts="build/fuzz/artifacts/$name"
  log="build/fuzz/logs/$name.log"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  step "$name: ${seconds}s (seeds $(seeds_of "$name"), log $log)"
  args=(-max_total_time="$seconds" -artifact_prefix="$artifacts/" -rss_limit_mb=2048 -print_final_stats=1)
  [ -n "${MAX_LEN[$name]:-}" ] && args+=(-max_len="${MAX_LEN[$name]}")
  dict="$(dict_of "$name")"
  [ -n "$dict" ] && args+=("$dict")
  rc=0
  t0=$SECONDS
  # The work corpus comes first: libFuzzer adds new inputs to the first directory only.
  target_cmd "$name" "$work" "$(seeds_of "$name")" -- "${args[@]}"
  # A liveness bound only: libFuzzer stops itself at -max_total_time.
  timeout --kill-after=10 $((seconds + 300)) "${cmd[@]}" >"$log" 2>&1 || rc=$?
  stats="$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 | grep -oE 'cov: [0-9]+|exec/s: [0-9]+' | tr '\n' ' ' || true)"
  runs="$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)"
  if [ "$rc" -eq 0 ]; then
    summary+=("ok     $name: ${runs:-no run count} ${stats}($((SECONDS - t0)) s wall)")
  else
    failed+=("$name")
    crash="$(grep -oE "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/Test unit written to //' || true)"
    summary+=("FAILED $name (exit $rc): ${crash:-no crash file, see $log}")
    echo "---- $name: last lines of $log" >&2
    grep -vE '^#[0-9]+' "$log" | tail -25 >&2
    if [ -n "$crash" ]; then
      echo "---- reproduce:  bash scripts/fuzz.sh $name --repro $crash" >&2
      echo "---- once fixed, keep it as a regression seed:  cp $crash $(seeds_of "$name")/regress-<what-it-was>" >&2
    fi
  fi
done

step "summary: builds ${build_seconds} s, all $((SECONDS - started)) s"
printf '  %s\n' "${summary[@]}"
if [ ${#stale[@]} -gt 0 ]; then
  printf '  STALE known finding (no longer reproduces: remove it from test/fuzz/known-findings.json): %s\n' "${stale[@]}"
fi
total=${#only[@]}
echo "fuzz: $((total - ${#failed[@]})) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ] && [ ${#stale[@]} -eq 0 ]

#!/usr/bin/env bash
# `npm run bench`: build what is needed, then run the benchmark lab (root: it creates network
# namespaces, veth pairs and iptables rules inside them; the host's network is never touched).
# Arguments go to the runner: `npm run bench -- --quick`, `-- --only splicegate,haproxy`, `-- --help`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "npm run bench needs root: it creates network namespaces and iptables rules." >&2
  exit 1
fi
for tool in wrk iperf3 haproxy nginx iptables taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (Debian: wrk iperf3 haproxy nginx-light iptables util-linux)" >&2; exit 1; }
done

echo "== build" >&2
npx --no-install cmake-js compile --release --log-level warn >&2
npx --no-install tsc -p tsconfig.json >&2
# The prototype relays (bench/cpp/proto_relay_*.cc) are built only when a run names them
# (`--only proto-epoll,proto-uring,proto-hybrid`, or "proto"), in their own Release build directory.
if [[ " $* " == *proto* ]]; then
  [ -f /usr/include/liburing.h ] || { echo "missing liburing (Debian: liburing-dev), needed by the proto-uring and proto-hybrid contenders" >&2; exit 1; }
  cmake -S . -B build/bench-protos -DSPLICEGATE_BENCH_PROTOS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/bench-protos -j2 --target proto_relay_epoll proto_relay_uring proto_relay_hybrid >/dev/null
fi

# Every process of the benchmark inherits this (8,000 idle connections through a proxy = 16,000 fds).
ulimit -n 20000
if [ "${1:-}" = "--preconnect" ]; then
  shift
  exec node dist/bench/preconnect.js "$@"
fi
if [ "${1:-}" = "--syscalls" ]; then
  shift
  command -v strace >/dev/null || { echo "missing strace (Debian: strace)" >&2; exit 1; }
  exec node dist/bench/syscalls.js "$@"
fi
if [ "${1:-}" = "--profile" ]; then
  shift
  command -v perf >/dev/null || { echo "missing perf (Debian: linux-perf)" >&2; exit 1; }
  exec node dist/bench/profile.js "$@"
fi
if [ "${1:-}" = "--latency-cost" ]; then
  shift
  exec node dist/bench/latency-cost.js "$@"
fi
if [ "${1:-}" = "--access-log-cost" ]; then
  shift
  exec node dist/bench/access-log-cost.js "$@"
fi
exec node dist/bench/run.js "$@"

#!/usr/bin/env bash
# `npm run soak`: build what is needed, then run the soak (root: it creates network namespaces,
# veth pairs and iptables rules inside them; the host's network is never touched). Not run by
# `npm test`. Arguments go to the runner: `npm run soak -- --minutes 30`, `-- --help`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "npm run soak needs root: it creates network namespaces and iptables rules." >&2
  exit 1
fi
for tool in wrk iperf3 nginx iptables taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (Debian: wrk iperf3 nginx-light iptables util-linux)" >&2; exit 1; }
done

echo "== build" >&2
npx --no-install cmake-js compile --release --log-level warn >&2
npx --no-install tsc -p tsconfig.json >&2

ulimit -n 20000
exec node dist/bench/soak.js "$@"

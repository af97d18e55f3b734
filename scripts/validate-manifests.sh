#!/usr/bin/env bash
# Offline checks of the service files under examples/: the Kubernetes manifests against the API
# schemas bundled in the kubernetes-models devDependency, their embedded splicegate configs and
# iptables flags, the systemd units (systemd-analyze verify) and the Dockerfile. No network, no
# cluster, no container engine. Also part of `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."
npx --no-install tsc -p tsconfig.json
node --test dist/test/service-files.test.js

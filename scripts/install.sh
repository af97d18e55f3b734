#!/usr/bin/env bash
# Run by `npm install` (the package's own install script): installs the system packages splicegate
# needs when they are missing, builds the native addon (cmake-js, offline against node-api-headers)
# and compiles the TypeScript. Every step says what it does; a failure says what to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '[splicegate install] %s\n' "$*" >&2; }

bash scripts/system-deps.sh

step "building the native addon (cmake-js)"
npx --no-install cmake-js compile --release --log-level warn >&2 || {
  step "native build failed: check that cmake and g++ are installed, then run: npm run compile"
  exit 1
}

step "compiling TypeScript"
npx --no-install tsc -p tsconfig.json || { step "tsc failed: run npm run build:ts to see the errors"; exit 1; }
step "done: try 'npx splicegate --help'"

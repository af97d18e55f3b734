#!/usr/bin/env bash
# Installs the Debian packages splicegate, its tests and its benchmark use, if any is missing.
# Runs apt only when something is absent, so a second `npm install` costs nothing.
set -euo pipefail

step() { printf '[splicegate install] %s\n' "$*" >&2; }

# command -> Debian package providing it
declare -A NEED=(
  [ip]=iproute2
  [iptables]=iptables
  [cmake]=cmake
  [g++]=g++
  [make]=make
  [wrk]=wrk
  [iperf3]=iperf3
  [dnsmasq]=dnsmasq-base  # the UDP test's DNS server (the binary only: Debian's dnsmasq adds a service)
  [dig]=bind9-dnsutils    # the UDP test's DNS client
  [haproxy]=haproxy
  [nginx]=nginx-light
  [curl]=curl
  [perf]=linux-perf     # npm run bench:profile (perf record -e cpu-clock)
  [chromium]=chromium   # renders `splicegate report --html` pages in the report test
  [clang++]=clang       # builds the fuzz targets (npm run fuzz)
)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# llhttp's C sources (the HTTP listener's parser, built by CMake from them): files, not a command.
[ -f /usr/share/llhttp/llhttp.c ] && [ -f /usr/share/include/llhttp/llhttp.h ] || missing+=(node-llhttp)
# libFuzzer (and clang's sanitizer runtimes) for the fuzz targets: a library, not a command.
if ! command -v clang++ >/dev/null 2>&1 || [ ! -f "$(clang++ -print-file-name=libclang_rt.fuzzer_no_main-x86_64.a)" ]; then
  missing+=(libclang-rt-14-dev)
fi
if [ ${#missing[@]} -eq 0 ]; then
  step "system packages present"
  exit 0
fi
step "installing missing system packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  step "not root: run 'sudo apt-get install -y ${missing[*]}' and then 'npm install' again"
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# The Debian packages start nothing here (no init system); if one did, stop its service so the
# benchmark's own instances own their ports.
step "system packages installed"

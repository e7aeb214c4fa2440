#!/usr/bin/env bash
# One large object through shardcache over a local-directory origin, measured with curl.
#
# Method: a SIZE_MIB file of random bytes in a temp directory is the origin. shardcache (release
# build) serves it with a memory tier large enough to hold it and a disk tier in the same temp
# directory. curl downloads the object to /dev/null: once cold (miss: origin read + fill), once
# warm (memory hit), then shardcache is restarted and it is read again (disk hit). For each read
# it prints curl's average speed and time to first byte, and the chunk fetches shardcache made
# (shardcache_upstream_requests_total{call="get"}). Beside it, the baseline: reading the file
# itself (cat to /dev/null, page cache warm). Loopback only; stops what it started, by PID.
#
# Usage: benches/one_object.sh [SIZE_MIB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
size_mib=${1:-1024}
cargo build --release --locked --quiet

work=$(mktemp -d)
pid=""
stop() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""; fi; }
trap 'stop; rm -rf "$work"' EXIT

mkdir -p "$work/data/bench"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/data/bench/object"
s3_port=$(free_port); admin_port=$(free_port)
write_fs_config "$work/config.yaml" "$s3_port" "$admin_port" "$work/data" "$work/cache" \
    $(((size_mib + 256) << 20)) $(((size_mib * 2 + 256) << 20))

start() {
    "$(shardcache_bin release)" serve --config "$work/config.yaml" > "$work/log" 2>&1 &
    pid=$!
    wait_ready "$admin_port" "$work/log"
}
fetches() {
    curl -s "http://127.0.0.1:$admin_port/metrics" |
        awk '/^shardcache_upstream_requests_total\{.*call="get"/ {s+=$2} END {print s+0}'
}
read_once() {
    local label=$1
    curl -s -o /dev/null -w "%{speed_download} %{time_starttransfer} %{time_total}" "http://127.0.0.1:$s3_port/bench/object" |
        awk -v l="$label" '{ printf "%s: %.2f GiB/s, ttfb %.1f ms, total %.2f s\n", l, $1 / 1073741824, $2 * 1000, $3 }'
    echo "  upstream chunk fetches so far: $(fetches)"
}

echo "object: ${size_mib} MiB; machine: $(nproc) cores, $(uname -r)"
cat "$work/data/bench/object" > /dev/null
t0=$(date +%s.%N); cat "$work/data/bench/object" > /dev/null; t1=$(date +%s.%N)
awk -v s="$size_mib" -v a="$t0" -v b="$t1" 'BEGIN { printf "baseline (cat from page cache): %.2f GiB/s\n", s / 1024 / (b - a) }'
start
read_once "cold miss"
read_once "memory hit"
stop
start
read_once "disk hit after restart"

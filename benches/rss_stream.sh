#!/usr/bin/env bash
# Peak memory of shardcache while it streams one object much larger than its memory tier.
#
# Method: a sparse SIZE_GIB file (reads as zeros, so the origin is never the bottleneck) in a
# local-directory origin; shardcache (release) with a 256 MiB memory tier, a 2 GiB disk tier
# and the default 64 MiB write queue; curl downloads the object once (cold: every chunk is
# fetched, streamed, stored) and once more (hits and misses mixed, since it no longer fits).
# Prints the process's peak resident set (VmHWM from /proc) beside the bound ARCHITECTURE.md
# gives: memory tier + foyer's flush buffers (2 x (write queue + 4 MiB)) + chunks held by fills
# (at most 2 x write queue: pieces and assembled copy). Loopback only; stops what it started.
#
# Usage: benches/rss_stream.sh [SIZE_GIB]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
size_gib=${1:-10}
cargo build --release --locked --quiet

work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/data/bench"
truncate -s "${size_gib}G" "$work/data/bench/object"
s3_port=$(free_port); admin_port=$(free_port)
memory=$((256 << 20))
write_fs_config "$work/config.yaml" "$s3_port" "$admin_port" "$work/data" "$work/cache" "$memory" $((2 << 30))
"$(shardcache_bin release)" serve --config "$work/config.yaml" > "$work/log" 2>&1 &
pid=$!
wait_ready "$admin_port" "$work/log"
idle=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
for pass in 1 2; do
    curl -s -o /dev/null -w "pass $pass: %{size_download} bytes at %{speed_download} B/s\n" \
        "http://127.0.0.1:$s3_port/bench/object"
done
peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
budget=$(( memory + 2 * ((64 << 20) + (4 << 20)) + 2 * (64 << 20) ))
awk -v idle="$idle" -v peak="$peak" -v mem="$memory" -v budget="$budget" -v g="$size_gib" 'BEGIN {
    printf "streamed 2 x %d GiB; RSS idle %.0f MiB, peak %.0f MiB\n", g, idle / 1024, peak / 1024
    printf "memory tier %.0f MiB; bound (memory tier + flush buffers + fills) = %.0f MiB\n", mem / 1048576, budget / 1048576
    printf "peak - memory tier = %.0f MiB\n", peak / 1024 - mem / 1048576
}'

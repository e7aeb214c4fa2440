# Helpers shared by the scripts that run a shardcache binary (sourced, not executed).

# Path of a built shardcache binary for PROFILE (debug or release), wherever cargo puts it.
shardcache_bin() { echo "${CARGO_TARGET_DIR:-target}/$1/shardcache"; }

# A loopback TCP port that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 20 s for a TCP listener on loopback PORT (no HTTP request is sent); prints LOG and
# fails if none appears.
wait_port() {
    local port=$1 log=$2
    python3 - "$port" <<'PY' && return 0
import socket, sys, time
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
    cat "$log" >&2
    return 1
}

# Polls ADMIN_PORT's /readyz for up to 20 s; prints LOG and fails if it never answers.
wait_ready() {
    local admin_port=$1 log=$2
    for _ in $(seq 1 400); do
        curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && return 0
        sleep 0.05
    done
    cat "$log" >&2
    return 1
}

# Writes a config serving DATA_DIR (a local-directory origin, every folder a bucket) on the given
# ports, with memory and disk tiers of the given sizes in bytes (disk tier in CACHE_DIR).
# Usage: write_fs_config FILE S3_PORT ADMIN_PORT DATA_DIR CACHE_DIR MEMORY_BYTES DISK_BYTES
write_fs_config() {
    cat > "$1" <<YAML
listen: 127.0.0.1:$2
admin_listen: 127.0.0.1:$3
grace_period_seconds: 0
cache:
  memory_bytes: $6
  disk:
    path: $5
    capacity_bytes: $7
upstreams:
  local:
    kind: fs
    root: $4
default_upstream: local
YAML
}

# Sum of the samples on ADMIN's /metrics whose line starts with PREFIX and contains every further
# argument, as an integer. Usage: scrape ADMIN_URL PREFIX [SUBSTRING...]
scrape() {
    local admin=$1 prefix=$2; shift 2
    curl -sf "$admin/metrics" | awk -v p="$prefix" -v subs="$*" '
        BEGIN { n = split(subs, want, " ") }
        index($0, p) == 1 { ok = 1; for (i = 1; i <= n; i++) if (index($0, want[i]) == 0) ok = 0; if (ok) sum += $NF }
        END { printf "%d\n", sum }'
}

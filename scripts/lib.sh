# Helpers shared by the scripts that run a shardcache binary (sourced, not executed).

# Path of a built shardcache binary for PROFILE (debug or release), wherever cargo puts it.
shardcache_bin() { echo "${CARGO_TARGET_DIR:-target}/$1/shardcache"; }

# A loopback TCP port that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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

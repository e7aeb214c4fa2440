#!/usr/bin/env bash
# Every config file in config/ must pass `shardcache check-config`. Secrets referenced as
# ${VAR} get placeholder values here: the check is about shape, not about real keys.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo build --locked --quiet
for f in config/*.yaml; do
    vars=$(grep -o '\${[A-Za-z_][A-Za-z0-9_]*}' "$f" | tr -d '${}' | sort -u || true)
    env_args=()
    for v in $vars; do env_args+=("$v=placeholder"); done
    env "${env_args[@]}" "$(shardcache_bin debug)" check-config "$f"
done
# And a broken file must fail, naming the field.
bad=$(mktemp)
trap 'rm -f "$bad"' EXIT
printf 'upstreams:\n  l:\n    kind: fs\n    root: .\ncache:\n  chunk_size: 1000\n' > "$bad"
if out=$("$(shardcache_bin debug)" check-config "$bad" 2>&1); then
    echo "check-config accepted an invalid file" >&2; exit 1
fi
grep -q 'cache.chunk_size' <<<"$out" || { echo "error does not name the field: $out" >&2; exit 1; }
echo "config examples: ok"

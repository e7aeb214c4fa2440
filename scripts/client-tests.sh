#!/usr/bin/env bash
# Real S3 clients through a running shardcache in front of a real S3 server (moto), then the
# dashboard and alerts against the /metrics scrape that traffic produced.
#   boto3: uploads passing through (multipart), reads, ranges, download_file, paginated listing,
#          virtual-hosted-style addressing;
#   aws CLI: s3 cp both ways (multipart), s3 sync, s3 ls, s3api get-object --range, head-object;
#   a WebDataset-style loader: two epochs, the second served entirely from the cache;
#   shardcache warm and shardcache stats.
# Everything listens on free loopback ports and is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo build --locked --quiet
bin=$(shardcache_bin debug)

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" > "$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$moto_port/" >/dev/null && break; sleep 0.05; done

s3_port=$(free_port); admin_port=$(free_port)
vhost_domain=s3.shardcache.test
cat > "$work/config.yaml" <<YAML
listen: 127.0.0.1:$s3_port
admin_listen: 127.0.0.1:$admin_port
grace_period_seconds: 0
virtual_host_domains: [$vhost_domain]
cache:
  memory_bytes: $((96 << 20))
  disk:
    path: $work/cache
    capacity_bytes: $((512 << 20))
upstreams:
  moto:
    kind: s3
    endpoint: http://127.0.0.1:$moto_port
    credentials:
      source: static
      access_key_id: testing
      secret_access_key: testing
default_upstream: moto
YAML
"$bin" serve --config "$work/config.yaml" > "$work/shardcache.log" 2>&1 &
pids+=($!)
wait_ready "$admin_port" "$work/shardcache.log"
endpoint="http://127.0.0.1:$s3_port"
admin="http://127.0.0.1:$admin_port"

python3 tests/clients/boto3_suite.py "$endpoint" "$vhost_domain" "$work"

export AWS_ACCESS_KEY_ID=any AWS_SECRET_ACCESS_KEY=any AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE="$work/aws-config"
# aws CLI v1 needs path-style for a custom endpoint; small parts force multipart both ways.
printf '[default]\ns3 =\n    addressing_style = path\n    multipart_threshold = 5MB\n    multipart_chunksize = 5MB\n' > "$AWS_CONFIG_FILE"
aws() { command aws --endpoint-url "$endpoint" "$@"; }
head -c $((17 * 1024 * 1024 + 5)) /dev/urandom > "$work/cli-up.bin"
aws s3 cp "$work/cli-up.bin" s3://train/cli/upload.bin --only-show-errors
aws s3 cp s3://train/cli/upload.bin "$work/cli-down.bin" --only-show-errors
cmp "$work/cli-up.bin" "$work/cli-down.bin"
aws s3 sync s3://train/shards/ "$work/synced" --only-show-errors
[ "$(ls "$work/synced" | wc -l)" -eq 7 ] || { echo "aws s3 sync copied $(ls "$work/synced" | wc -l) of 7 files" >&2; exit 1; }
aws s3 ls s3://train/cli/ | grep -q 'upload.bin'
aws s3api get-object --bucket train --key cli/upload.bin --range bytes=100-199 "$work/range.bin" >/dev/null
cmp "$work/range.bin" <(tail -c +101 "$work/cli-up.bin" | head -c 100)
aws s3api head-object --bucket train --key cli/upload.bin | grep -q "\"ContentLength\": $((17 * 1024 * 1024 + 5))"
echo "aws cli: cp up and down (multipart), sync, ls, get-object --range, head-object: ok"

python3 tests/clients/loader.py "$endpoint" "$admin"

warm=$("$bin" warm s3://train/ --endpoint "$endpoint" --admin "$admin")
echo "shardcache warm: $warm"
grep -q 'warmed 9 objects.* 0 failed' <<<"$warm"
"$bin" stats --admin "$admin" | tee "$work/stats.txt"
grep -q '^GetObject requests' "$work/stats.txt"

curl -sf "$admin/metrics" > "$work/scrape.txt"
python3 tests/observability/check.py "$work/scrape.txt"
echo "client tests: ok"

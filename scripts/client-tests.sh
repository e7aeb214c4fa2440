#!/usr/bin/env bash
# Real S3 clients (boto3, aws CLI) against a running shardcache serving a local directory.
# Starts shardcache on free loopback ports, runs the clients, stops it by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo build --locked --quiet

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/data/shards"
head -c $((24 * 1024 * 1024 + 123)) /dev/urandom > "$work/data/shards/shard-0000.tar"
for i in 1 2 3; do head -c 1000 /dev/urandom > "$work/data/shards/shard-000$i.tar"; done

s3_port=$(free_port); admin_port=$(free_port)
write_fs_config "$work/config.yaml" "$s3_port" "$admin_port" "$work/data" "$work/cache" $((64 << 20)) $((512 << 20))
"$(shardcache_bin debug)" serve --config "$work/config.yaml" > "$work/shardcache.log" 2>&1 &
pid=$!
wait_ready "$admin_port" "$work/shardcache.log"

endpoint="http://127.0.0.1:$s3_port"
python3 tests/clients/boto3_smoke.py "$endpoint" "$work/data"

export AWS_ACCESS_KEY_ID=any AWS_SECRET_ACCESS_KEY=any AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE="$work/aws-config"
printf '[default]\ns3 =\n    addressing_style = path\n' > "$AWS_CONFIG_FILE"
aws --endpoint-url "$endpoint" s3 ls s3://shards/ | grep -q shard-0003.tar
aws --endpoint-url "$endpoint" s3 cp s3://shards/shard-0000.tar "$work/cli.tar" --only-show-errors
cmp "$work/cli.tar" "$work/data/shards/shard-0000.tar"
aws --endpoint-url "$endpoint" s3api get-object --bucket shards --key shard-0001.tar --range bytes=0-99 "$work/range.bin" >/dev/null
cmp "$work/range.bin" <(head -c 100 "$work/data/shards/shard-0001.tar")
aws --endpoint-url "$endpoint" s3api head-object --bucket shards --key shard-0002.tar | grep -q '"ContentLength": 1000'
echo "aws cli: ok"

hits=$(curl -s "http://127.0.0.1:$admin_port/metrics" | awk '/^shardcache_served_bytes_total\{source="(memory|disk)"\}/ {s+=$2} END {print s+0}')
[ "$hits" -gt 0 ] || { echo "no bytes were served from the cache" >&2; exit 1; }
echo "client tests: ok ($hits bytes served from cache)"

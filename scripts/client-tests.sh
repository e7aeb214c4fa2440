#!/usr/bin/env bash
# Real S3 clients through a running shardcache in front of two real S3 servers that verify every
# signature, then the dashboard and alerts against the /metrics scrape that traffic produced.
#
# Upstreams (one shardcache, buckets routed by name):
#   moto (default upstream): SigV4 checked with botocore's rules, which leave `expect` out;
#   s3s-fs (buckets cli, webdataset, rclone, s5cmd, arrow): SigV4 checked by s3s.
#   moto's checker mis-reads query values holding `/` (direct boto3 calls with Prefix="a/" fail
#   against it too), so clients that list with such prefixes use s3s-fs.
# Clients:
#   boto3: put, multipart, copy, delete, DeleteObjects, list v1 and v2, reads, ranges, checksums,
#          parallel ranged download, virtual-hosted style (moto);
#   aws CLI: cp both ways (multipart), sync, ls, get-object --range, head-object, checksums, rm;
#   rclone, s5cmd, s3fs + pyarrow: writes, reads, ranged reads, listings, deletes;
#   minio-go (Debian's packaged library, built here): chunk-signed uploads, one request and
#          multipart, with and without signed checksum trailers;
#   a WebDataset-style loader: two epochs, the second served entirely from the cache;
#   s3torchconnector (PyTorch, on the AWS CRT), path-style and virtual-hosted style: map and
#          iterable datasets over a prefix, a DataLoader with 2 workers, S3Writer uploads and
#          S3Checkpoint save/load, the passes after the first served entirely from the cache;
#   shardcache warm and stats;
#   the default config (a local directory): rclone and s3cmd list and read it.
# Each client's check asserts the bytes and the cache counters it expects. Everything listens on
# free loopback ports and is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo build --locked --quiet --bin shardcache --example s3-server
bin=$(shardcache_bin debug)
s3server="${CARGO_TARGET_DIR:-target}/debug/examples/s3-server"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && { wait "$p" 2>/dev/null || true; }; done
    rm -rf "$work"
}
trap cleanup EXIT

# moto verifies SigV4 once its first 3 unauthenticated calls are spent on the IAM user whose keys
# shardcache signs with; readiness is a TCP connect, which spends none.
moto_port=$(free_port)
INITIAL_NO_AUTH_ACTION_COUNT=3 moto_server -H 127.0.0.1 -p "$moto_port" > "$work/moto.log" 2>&1 &
pids+=($!)
wait_port "$moto_port" "$work/moto.log"
keys=$(python3 tests/clients/moto_keys.py "http://127.0.0.1:$moto_port")
read -r moto_key moto_secret <<<"$keys"

"$s3server" "$work/s3s" s3s-key s3s-secret 1800 > "$work/s3s.port" 2> "$work/s3s.log" &
pids+=($!)
for _ in $(seq 1 200); do [ -s "$work/s3s.port" ] && break; sleep 0.05; done
s3s_port=$(head -n 1 "$work/s3s.port")
wait_port "$s3s_port" "$work/s3s.log"

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
      access_key_id: $moto_key
      secret_access_key: $moto_secret
  s3s:
    kind: s3
    endpoint: http://127.0.0.1:$s3s_port
    credentials:
      source: static
      access_key_id: s3s-key
      secret_access_key: s3s-secret
default_upstream: moto
buckets:
  - {name: cli, upstream: s3s}
  - {name: webdataset, upstream: s3s}
  - {name: rclone, upstream: s3s}
  - {name: s5cmd, upstream: s3s}
  - {name: arrow, upstream: s3s}
  - {name: minio, upstream: s3s}
  - {name: torch-ckpt, upstream: s3s}
# Every client signs with this key and shardcache verifies it: each client's own SigV4 (botocore,
# the Go and C++ SDKs, object_store) meets shardcache's verifier.
auth:
  keys:
    - {access_key_id: AKIDCLIENTSUITE, secret_access_key: "client/suite+secret", principal: suite}
  policy:
    - {effect: allow, principals: [suite], actions: ['*'], resources: ['*']}
  admin_token_file: $work/admin-token
YAML
echo "client-suite-admin-token" > "$work/admin-token"
"$bin" serve --config "$work/config.yaml" > "$work/shardcache.log" 2>&1 &
pids+=($!)
wait_ready "$admin_port" "$work/shardcache.log"
endpoint="http://127.0.0.1:$s3_port"
admin="http://127.0.0.1:$admin_port"
export AWS_ACCESS_KEY_ID=AKIDCLIENTSUITE AWS_SECRET_ACCESS_KEY="client/suite+secret"
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1

python3 tests/clients/boto3_suite.py "$endpoint" "$vhost_domain" "$work" "$admin"

# The client's counter of GetObject answers served from memory goes up after a repeated read.
hits() { scrape "$admin" 'shardcache_requests_total{operation="GetObject"' 'outcome="memory_hit"'; }

export AWS_CONFIG_FILE="$work/aws-config"
# aws CLI v1 needs path-style for a custom endpoint; small parts force multipart both ways.
printf '[default]\ns3 =\n    addressing_style = path\n    multipart_threshold = 5MB\n    multipart_chunksize = 5MB\n' > "$AWS_CONFIG_FILE"
aws() { command aws --endpoint-url "$endpoint" "$@"; }
aws s3 mb s3://cli >/dev/null
head -c $((17 * 1024 * 1024 + 5)) /dev/urandom > "$work/cli-up.bin"
aws s3 cp "$work/cli-up.bin" s3://cli/up/upload.bin --only-show-errors
aws s3 cp s3://cli/up/upload.bin "$work/cli-down.bin" --only-show-errors
cmp "$work/cli-up.bin" "$work/cli-down.bin"
before=$(hits)
aws s3 cp s3://cli/up/upload.bin "$work/cli-again.bin" --only-show-errors
cmp "$work/cli-up.bin" "$work/cli-again.bin"
[ "$(hits)" -gt "$before" ] || { echo "aws cli: a repeated download was not a cache hit" >&2; exit 1; }
mkdir -p "$work/tree" && for i in 1 2 3; do head -c $((i * 1000)) /dev/urandom > "$work/tree/f$i"; done
aws s3 sync "$work/tree" s3://cli/tree/ --only-show-errors
aws s3 sync s3://cli/tree/ "$work/synced" --only-show-errors
diff -r "$work/tree" "$work/synced"
grep -q 'upload.bin' <<<"$(aws s3 ls s3://cli/up/)"
aws s3api get-object --bucket cli --key up/upload.bin --range bytes=100-199 "$work/range.bin" >/dev/null
cmp "$work/range.bin" <(tail -c +101 "$work/cli-up.bin" | head -c 100)
grep -q "\"ContentLength\": $((17 * 1024 * 1024 + 5))" <<<"$(aws s3api head-object --bucket cli --key up/upload.bin)"
aws s3api put-object --bucket cli --key sums.bin --body "$work/tree/f2" --checksum-algorithm CRC32 >/dev/null
grep -q '"ChecksumCRC32"' <<<"$(aws s3api get-object --bucket cli --key sums.bin --checksum-mode ENABLED "$work/sums.bin")"
aws s3 rm s3://cli/tree/f1 --only-show-errors
if aws s3api head-object --bucket cli --key tree/f1 >/dev/null 2>&1; then echo "aws cli: deleted object still served" >&2; exit 1; fi
echo "aws cli: cp up and down (multipart), sync both ways, ls, ranged get, head, checksums, rm: ok"

tests/clients/cli_tools.sh "$endpoint" "$admin" "$work"
# Debian packages minio-go for GOPATH builds; nothing is fetched.
(cd tests/clients/minio_go && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/go-cache" \
    go build -o "$work/minio_go" .)
"$work/minio_go" "127.0.0.1:$s3_port" minio
python3 tests/clients/arrow_fsspec.py "$endpoint" "$admin"
python3 tests/clients/loader.py "$endpoint" "$admin"

aws s3 mb s3://torch >/dev/null
aws s3 mb s3://torch-ckpt >/dev/null
python3 tests/clients/torch_suite.py "$endpoint" "$admin" path
# The CRT resolves names itself (no Python hook reaches it): in a mount namespace of its own (as
# root, as CI runs), it reads a private /etc/hosts that sends both buckets' names to loopback.
printf '127.0.0.1 localhost\n127.0.0.1 torch.%s torch-ckpt.%s\n' "$vhost_domain" "$vhost_domain" > "$work/hosts"
unshare --mount sh -c 'mount --bind "$0" /etc/hosts && shift && exec "$@"' "$work/hosts" - \
    python3 tests/clients/torch_suite.py "http://$vhost_domain:$s3_port" "$admin" virtual

# shardcache warm signs its listing and its warm calls with the suite's key (its principal is
# allowed `*`, so shardcache:Warm), or uses the admin token; with neither it is refused.
if env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$bin" warm s3://train/ --endpoint "$endpoint" \
    --admin "$admin" >/dev/null 2>&1; then
    echo "shardcache warm: warmed with no credentials" >&2; exit 1
fi
warm=$("$bin" warm s3://train/ --endpoint "$endpoint" --admin "$admin" --admin-token-file "$work/admin-token")
echo "shardcache warm (admin token): $warm"
grep -q 'warmed 8 objects.* 0 failed' <<<"$warm"
warm=$("$bin" warm s3://train/ --endpoint "$endpoint" --admin "$admin")
echo "shardcache warm (signed by a principal): $warm"
grep -q 'warmed 8 objects.* 0 failed' <<<"$warm"
"$bin" stats --admin "$admin" | tee "$work/stats.txt"
grep -q '^GetObject requests' "$work/stats.txt"

curl -sf "$admin/metrics" > "$work/scrape.txt"
python3 tests/observability/check.py "$work/scrape.txt"

tests/clients/default_config.sh "$bin" "$work"
echo "client tests: ok"

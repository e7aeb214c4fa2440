#!/usr/bin/env bash
# The README's first command, as clients meet it: shardcache over a local directory (the repo's
# ./data, plus a nested tree written here), listed and read by rclone (ListObjects v1), s3cmd
# (GetBucketLocation, then ListObjects) and boto3 (list_objects, head_bucket, get_bucket_location);
# then the README's PyTorch example trains on shards it writes there.
# Usage: default_config.sh SHARDCACHE_BIN WORK_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
bin=$1 work=$2/default-config
fail() { echo "$*" >&2; exit 1; }

mkdir -p "$work/data/demo" "$work/data/shards/train/a b" "$work/cache"
cp data/demo/hello.txt "$work/data/demo/"
for i in 1 2 3; do head -c $((i * 70000)) /dev/urandom > "$work/data/shards/train/a b/s$i.tar"; done
s3_port=$(free_port); admin_port=$(free_port)
write_fs_config "$work/config.yaml" "$s3_port" "$admin_port" "$work/data" "$work/cache" $((64 << 20)) $((128 << 20))
"$bin" serve --config "$work/config.yaml" > "$work/shardcache.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
wait_ready "$admin_port" "$work/shardcache.log"
endpoint="http://127.0.0.1:$s3_port"

export RCLONE_CONFIG_LOCAL_TYPE=s3 RCLONE_CONFIG_LOCAL_PROVIDER=Other RCLONE_CONFIG_LOCAL_ENDPOINT="$endpoint"
export RCLONE_CONFIG_LOCAL_ACCESS_KEY_ID=any RCLONE_CONFIG_LOCAL_SECRET_ACCESS_KEY=any
# rclone refuses a custom CA bundle (AWS_CA_BUNDLE, set on some machines) on plain HTTP.
rc() { env -u AWS_CA_BUNDLE rclone --config /dev/null --retries 1 --low-level-retries 1 "$@"; }
[ "$(rc lsf local:demo)" = "hello.txt" ] || fail "rclone lsf local:demo: $(rc lsf local:demo)"
listed=$(rc ls --max-depth 3 local:shards | sort -k2)
[ "$(wc -l <<<"$listed")" -eq 3 ] && grep -q 'train/a b/s3.tar' <<<"$listed" || fail "rclone ls local:shards: $listed"
rc cat "local:shards/train/a b/s2.tar" | cmp - "$work/data/shards/train/a b/s2.tar"
echo "rclone on the default config: lsf, ls (nested, a space in a key), cat: ok"

s3c() { s3cmd --no-ssl --host="127.0.0.1:$s3_port" --host-bucket="127.0.0.1:$s3_port" \
    --access_key=any --secret_key=any --region=us-east-1 --config=/dev/null "$@"; }
grep -q 's3://demo/hello.txt' <<<"$(s3c ls s3://demo)" || fail "s3cmd ls s3://demo: $(s3c ls s3://demo)"
grep -q 's3://shards/train/a b/s1.tar' <<<"$(s3c ls --recursive s3://shards)" || fail "s3cmd ls --recursive s3://shards"
s3c get --force s3://demo/hello.txt "$work/hello.txt" >/dev/null
cmp "$work/hello.txt" data/demo/hello.txt
echo "s3cmd on the default config: ls, ls --recursive, get: ok"

python3 - "$endpoint" <<'PY'
import sys
import boto3
from botocore.config import Config

s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="any", aws_secret_access_key="any",
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
s3.head_bucket(Bucket="shards")
assert s3.get_bucket_location(Bucket="shards").get("LocationConstraint") is None
page = s3.list_objects(Bucket="shards", Prefix="train/", Delimiter="/")
assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["train/a b/"], page
keys, marker = [], ""
while True:
    page = s3.list_objects(Bucket="shards", MaxKeys=2, Marker=marker)
    keys += [o["Key"] for o in page["Contents"]]
    if not page["IsTruncated"]:
        break
    marker = page.get("NextMarker", keys[-1])
assert keys == [f"train/a b/s{i}.tar" for i in (1, 2, 3)], keys
try:
    s3.head_bucket(Bucket="missing")
    raise AssertionError("a missing bucket was found")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "404", e.response
print("boto3 on the default config: head_bucket, get_bucket_location, list_objects (delimiter, markers): ok")
PY

# The README's PyTorch example, as a user runs it against the default config (here with 2
# epochs): it writes its shards into the origin directory, then trains on them through
# shardcache; the second epoch must come entirely from the cache.
python3 examples/pytorch_training.py --endpoint "$endpoint" --admin "http://127.0.0.1:$admin_port" \
    --data "$work/data" --epochs 2 | tee "$work/training.txt"
grep -q '^epoch 2: 16000 samples .*fetched 0.0 MiB from the origin$' "$work/training.txt" \
    || fail "examples/pytorch_training.py: the second epoch was not served from the cache"
echo "examples/pytorch_training.py on the default config: ok"

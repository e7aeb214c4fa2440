#!/usr/bin/env bash
# rclone and s5cmd through shardcache (buckets routed to a signature-checking s3s-fs upstream):
# each writes, reads whole and ranged, lists and deletes, with the bytes compared and a repeated
# read proven to come from the cache.
# Usage: cli_tools.sh ENDPOINT ADMIN_URL WORK_DIR (AWS_ACCESS_KEY_ID etc. in the environment)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
endpoint=$1 admin=$2 work=$3
hits() { scrape "$admin" 'shardcache_requests_total{operation="GetObject"' 'outcome="memory_hit"'; }
fail() { echo "$*" >&2; exit 1; }

head -c $((9 * 1024 * 1024 + 3)) /dev/urandom > "$work/tool.bin"

# rclone: an "Other" S3 provider, path-style, configured from the environment alone. It lists
# with ListObjects v1 and reads ranges with --offset/--count.
export RCLONE_CONFIG_SC_TYPE=s3 RCLONE_CONFIG_SC_PROVIDER=Other RCLONE_CONFIG_SC_ENDPOINT="$endpoint"
export RCLONE_CONFIG_SC_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" RCLONE_CONFIG_SC_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
export RCLONE_CONFIG_SC_FORCE_PATH_STYLE=true RCLONE_CONFIG_SC_REGION=us-east-1
# rclone refuses a custom CA bundle (AWS_CA_BUNDLE, set on some machines) on plain HTTP.
rc() { env -u AWS_CA_BUNDLE rclone --config /dev/null --retries 1 --low-level-retries 1 "$@"; }
rc mkdir sc:rclone
rc copyto "$work/tool.bin" sc:rclone/dir/tool.bin
rc cat sc:rclone/dir/tool.bin | cmp - "$work/tool.bin"
before=$(hits)
rc cat sc:rclone/dir/tool.bin | cmp - "$work/tool.bin"
[ "$(hits)" -gt "$before" ] || fail "rclone: a repeated read was not a cache hit"
rc cat --offset 5000000 --count 1000 sc:rclone/dir/tool.bin | cmp - <(tail -c +5000001 "$work/tool.bin" | head -c 1000)
[ "$(rc lsf sc:rclone/dir/)" = "tool.bin" ] || fail "rclone lsf: $(rc lsf sc:rclone/dir/)"
rc deletefile sc:rclone/dir/tool.bin
[ -z "$(rc lsf sc:rclone/dir/ 2>/dev/null)" ] || fail "rclone: deleted file still listed"
# rclone cat asks for the object (HEAD), and on 404 takes the path for an empty directory.
[ -z "$(rc cat sc:rclone/dir/tool.bin 2>/dev/null | head -c 1)" ] || fail "rclone: deleted file still served"
echo "rclone: copyto, cat (whole, ranged, cached), lsf, deletefile: ok"

# s5cmd ignores AWS_ENDPOINT_URL: it takes --endpoint-url.
s5() { s5cmd --endpoint-url "$endpoint" --retry-count 0 "$@"; }
s5 mb s3://s5cmd >/dev/null
s5 cp "$work/tool.bin" s3://s5cmd/dir/tool.bin >/dev/null
s5 cat s3://s5cmd/dir/tool.bin | cmp - "$work/tool.bin"
before=$(hits)
s5 cp s3://s5cmd/dir/tool.bin "$work/s5-down.bin" >/dev/null
cmp "$work/s5-down.bin" "$work/tool.bin"
[ "$(hits)" -gt "$before" ] || fail "s5cmd: a repeated read was not a cache hit"
grep -q 'tool.bin' <<<"$(s5 ls 's3://s5cmd/dir/*')" || fail "s5cmd ls: no tool.bin"
s5 rm s3://s5cmd/dir/tool.bin >/dev/null
if s5 cat s3://s5cmd/dir/tool.bin >/dev/null 2>&1; then fail "s5cmd: deleted object still served"; fi
echo "s5cmd: cp both ways, cat, ls, rm: ok"

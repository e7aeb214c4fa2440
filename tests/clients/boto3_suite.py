"""boto3 through shardcache in front of a real S3 server that checks signatures (moto): uploads
pass through, reads come from the cache, listings paginate, parallel ranged downloads reassemble,
checksums come back, copies and deletes are seen at once, virtual-hosted-style addressing works.

Usage: boto3_suite.py ENDPOINT VHOST_DOMAIN WORK_DIR ADMIN_URL
VHOST_DOMAIN is listed in shardcache's virtual_host_domains; names under it resolve to loopback
inside this process only.
"""
import base64
import hashlib
import os
import pathlib
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import zlib

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, vhost_domain, work, admin = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4]
port = urllib.parse.urlsplit(endpoint).port

# bucket.<vhost_domain> -> 127.0.0.1, for this process (no DNS or /etc/hosts changes).
_getaddrinfo = socket.getaddrinfo


def _loopback_vhosts(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith("." + vhost_domain):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_vhosts


def client(style, url=endpoint):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 1}),
    )


def sha(b):
    return hashlib.sha256(b).hexdigest()


def counter(prefix, *parts):
    """Sum of shardcache's /metrics samples whose line starts with `prefix` and holds `parts`."""
    text = urllib.request.urlopen(f"{admin}/metrics", timeout=10).read().decode()
    lines = [l for l in text.splitlines() if l.startswith(prefix) and all(p in l for p in parts)]
    return sum(float(l.rsplit(" ", 1)[1]) for l in lines)


s3 = client("path")
vhost = client("virtual", f"http://{vhost_domain}:{port}")
MiB = 1 << 20

# Uploads pass through to the upstream: a bucket, small objects, a multipart upload.
s3.create_bucket(Bucket="train")
small = {f"shards/part-{i:04d}.bin": os.urandom(1000 + i) for i in range(7)}
for key, body in small.items():
    s3.put_object(Bucket="train", Key=key, Body=body)
big_path = work / "big.bin"
big_path.write_bytes(os.urandom(21 * MiB + 17))
big = big_path.read_bytes()
multipart = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
s3.upload_file(str(big_path), "train", "big/shard.tar", Config=multipart)
assert s3.head_object(Bucket="train", Key="big/shard.tar")["ContentLength"] == len(big)
print("boto3: uploads (put_object, multipart upload_file) passed through")

# Reads: whole, ranged, suffix range, then parallel ranged GETs reassembled by download_file.
assert sha(s3.get_object(Bucket="train", Key="big/shard.tar")["Body"].read()) == sha(big)
fetched = counter("shardcache_upstream_received_bytes_total")
assert sha(s3.get_object(Bucket="train", Key="big/shard.tar")["Body"].read()) == sha(big)
assert counter("shardcache_upstream_received_bytes_total") == fetched, "a repeated read fetched again"
assert counter("shardcache_requests_total{", 'operation="GetObject"', 'outcome="memory_hit"') >= 1
part = s3.get_object(Bucket="train", Key="big/shard.tar", Range="bytes=9000000-9999999")["Body"].read()
assert part == big[9000000:10000000]
tail = s3.get_object(Bucket="train", Key="big/shard.tar", Range="bytes=-100")
assert tail["Body"].read() == big[-100:] and tail["ContentRange"] == f"bytes {len(big) - 100}-{len(big) - 1}/{len(big)}"
ranged = TransferConfig(multipart_threshold=2 * MiB, multipart_chunksize=2 * MiB, max_concurrency=8)
out = work / "download.bin"
s3.download_file("train", "big/shard.tar", str(out), Config=ranged)
assert sha(out.read_bytes()) == sha(big)
print("boto3: get_object (whole, ranges) and download_file (11 parallel ranged GETs) match")

# Listings paginate through the upstream. (No `/` in the prefix: moto's signature check
# mis-reads it in a query, even from boto3 directly.)
pages = s3.get_paginator("list_objects_v2").paginate(Bucket="train", Prefix="shards", PaginationConfig={"PageSize": 3})
listed = [o["Key"] for page in pages for o in page.get("Contents", [])]
assert listed == sorted(small), listed
print("boto3: list_objects_v2 paginator (3 pages) lists every key")

# Virtual-hosted-style addressing reads the same bytes.
for key, body in small.items():
    assert vhost.get_object(Bucket="train", Key=key)["Body"].read() == body
assert sha(vhost.get_object(Bucket="train", Key="big/shard.tar")["Body"].read()) == sha(big)
print("boto3: virtual-hosted-style reads match")

# An overwrite through shardcache is seen at once (write invalidates the cached metadata).
s3.put_object(Bucket="train", Key="shards/part-0000.bin", Body=b"v2")
assert s3.get_object(Bucket="train", Key="shards/part-0000.bin")["Body"].read() == b"v2"
try:
    s3.get_object(Bucket="train", Key="shards/missing.bin")
    raise AssertionError("missing key was served")
except s3.exceptions.NoSuchKey:
    pass
try:
    s3.put_object(Bucket="no-such-bucket", Key="k", Body=b"x")
    raise AssertionError("a PUT to a missing bucket succeeded")
except s3.exceptions.NoSuchBucket:
    pass
print("boto3: overwrite visible, missing key is NoSuchKey, PUT to a missing bucket is NoSuchBucket")

# Checksums: asked for, they come back as the upstream stores them, and boto3 checks the body.
body = os.urandom(3 * MiB + 7)
crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
s3.put_object(Bucket="train", Key="sums/one.bin", Body=body, ChecksumAlgorithm="CRC32")
assert s3.head_object(Bucket="train", Key="sums/one.bin", ChecksumMode="ENABLED")["ChecksumCRC32"] == crc
for round in ("cold", "cached"):
    got = s3.get_object(Bucket="train", Key="sums/one.bin", ChecksumMode="ENABLED")
    assert got.get("ChecksumCRC32") == crc, (round, got.get("ChecksumCRC32"))
    assert got["Body"].read() == body
print("boto3: checksums returned on GET and HEAD, validated by boto3")

# Copy, batch delete and ListObjects v1 pass through, and reads see their effect at once.
s3.copy_object(Bucket="train", Key="copies/part-0001.bin", CopySource={"Bucket": "train", "Key": "shards/part-0001.bin"})
assert s3.get_object(Bucket="train", Key="copies/part-0001.bin")["Body"].read() == small["shards/part-0001.bin"]
s3.copy_object(Bucket="train", Key="copies/part-0001.bin", CopySource={"Bucket": "train", "Key": "shards/part-0002.bin"})
assert s3.get_object(Bucket="train", Key="copies/part-0001.bin")["Body"].read() == small["shards/part-0002.bin"]
v1 = s3.list_objects(Bucket="train", Prefix="copies")
assert [o["Key"] for o in v1["Contents"]] == ["copies/part-0001.bin"], v1
s3.delete_objects(Bucket="train", Delete={"Objects": [{"Key": "copies/part-0001.bin"}, {"Key": "sums/one.bin"}]})
for key in ("copies/part-0001.bin", "sums/one.bin"):
    try:
        s3.get_object(Bucket="train", Key=key)
        raise AssertionError(f"{key} served after DeleteObjects")
    except s3.exceptions.NoSuchKey:
        pass
print("boto3: copy_object, delete_objects and list_objects (v1) pass through; reads see them at once")

# Client authentication: shardcache verifies every signature (auth.keys); presigned URLs are
# plain, cached reads; a wrong secret or no signature gets S3's refusal.
bad = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                   aws_secret_access_key="not-the-secret", config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
try:
    bad.get_object(Bucket="train", Key="big/shard.tar")
    raise AssertionError("a wrong secret was accepted")
except bad.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "SignatureDoesNotMatch", e.response["Error"]
try:
    urllib.request.urlopen(f"{endpoint}/train/big/shard.tar", timeout=10)
    raise AssertionError("an unsigned read was served")
except urllib.error.HTTPError as e:
    assert e.code == 403 and b"AccessDenied" in e.read()
# boto3 presigns with Signature Version 2 unless told otherwise: refused, saying so.
v2_url = s3.generate_presigned_url("get_object", Params={"Bucket": "train", "Key": "big/shard.tar"}, ExpiresIn=300)
try:
    urllib.request.urlopen(v2_url, timeout=10)
    raise AssertionError("a SigV2 presigned URL was served")
except urllib.error.HTTPError as e:
    assert e.code == 400 and b"Signature Version 2 is not supported" in e.read()
v4 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
url = v4.generate_presigned_url("get_object", Params={"Bucket": "train", "Key": "big/shard.tar"}, ExpiresIn=300)
fetched = counter("shardcache_upstream_received_bytes_total")
for _ in range(2):
    assert sha(urllib.request.urlopen(url, timeout=30).read()) == sha(big)
assert counter("shardcache_upstream_received_bytes_total") == fetched, "presigned GETs of a cached object fetched again"
put_url = v4.generate_presigned_url("put_object", Params={"Bucket": "train", "Key": "presigned/up.bin"}, ExpiresIn=300)
# (urllib's default form content type would make moto parse the body as a form and store nothing.)
upload = urllib.request.Request(put_url, data=b"put through a presigned URL", method="PUT",
                                headers={"Content-Type": "application/octet-stream"})
urllib.request.urlopen(upload, timeout=10)
got = s3.get_object(Bucket="train", Key="presigned/up.bin")["Body"].read()
assert got == b"put through a presigned URL", got
s3.delete_object(Bucket="train", Key="presigned/up.bin")
print("boto3: signatures verified; wrong secret and unsigned reads refused; presigned GET (cached) and PUT work")

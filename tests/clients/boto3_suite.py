"""boto3 through shardcache in front of a real S3 server (moto): uploads pass through, reads come
from the cache, listings paginate, parallel ranged downloads reassemble, virtual-hosted-style
addressing works.

Usage: boto3_suite.py ENDPOINT VHOST_DOMAIN WORK_DIR
VHOST_DOMAIN is listed in shardcache's virtual_host_domains; names under it resolve to loopback
inside this process only.
"""
import hashlib
import os
import pathlib
import socket
import sys
import urllib.parse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, vhost_domain, work = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
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
        aws_access_key_id="any",
        aws_secret_access_key="any",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 1}),
    )


def sha(b):
    return hashlib.sha256(b).hexdigest()


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
part = s3.get_object(Bucket="train", Key="big/shard.tar", Range="bytes=9000000-9999999")["Body"].read()
assert part == big[9000000:10000000]
tail = s3.get_object(Bucket="train", Key="big/shard.tar", Range="bytes=-100")
assert tail["Body"].read() == big[-100:] and tail["ContentRange"] == f"bytes {len(big) - 100}-{len(big) - 1}/{len(big)}"
ranged = TransferConfig(multipart_threshold=2 * MiB, multipart_chunksize=2 * MiB, max_concurrency=8)
out = work / "download.bin"
s3.download_file("train", "big/shard.tar", str(out), Config=ranged)
assert sha(out.read_bytes()) == sha(big)
print("boto3: get_object (whole, ranges) and download_file (11 parallel ranged GETs) match")

# Listings paginate through the upstream.
pages = s3.get_paginator("list_objects_v2").paginate(Bucket="train", Prefix="shards/", PaginationConfig={"PageSize": 3})
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
print("boto3: overwrite visible, missing key is NoSuchKey")

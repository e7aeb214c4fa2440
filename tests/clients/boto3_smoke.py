"""Real S3 clients through shardcache: boto3 reads, lists and parallel ranged downloads.

Usage: boto3_smoke.py ENDPOINT DATA_DIR
DATA_DIR is the local-directory origin shardcache serves; its files are the expected bytes.
"""
import hashlib
import pathlib
import sys
import tempfile

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, data_dir = sys.argv[1], pathlib.Path(sys.argv[2])
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="any",
    aws_secret_access_key="any",
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}),
)


def digest(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


big = (data_dir / "shards" / "shard-0000.tar").read_bytes()

buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert "shards" in buckets, buckets

pages = s3.get_paginator("list_objects_v2").paginate(Bucket="shards", PaginationConfig={"PageSize": 2})
keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
assert keys == sorted(p.name for p in (data_dir / "shards").iterdir()), keys

head = s3.head_object(Bucket="shards", Key="shard-0000.tar")
assert head["ContentLength"] == len(big), head

got = s3.get_object(Bucket="shards", Key="shard-0000.tar")["Body"].read()
assert digest(got) == digest(big), "full GET differs"

part = s3.get_object(Bucket="shards", Key="shard-0000.tar", Range="bytes=1000-1999")["Body"].read()
assert part == big[1000:2000], "ranged GET differs"

with tempfile.TemporaryDirectory() as tmp:
    target = pathlib.Path(tmp) / "out.tar"
    config = TransferConfig(multipart_threshold=1 << 20, multipart_chunksize=1 << 20, max_concurrency=8)
    s3.download_file("shards", "shard-0000.tar", str(target), Config=config)
    assert digest(target.read_bytes()) == digest(big), "parallel ranged download differs"

try:
    s3.get_object(Bucket="shards", Key="missing")
    raise AssertionError("missing key was found")
except s3.exceptions.NoSuchKey:
    pass

print("boto3: ok")

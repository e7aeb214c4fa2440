"""s3fs (fsspec), pyarrow and polars through shardcache: writes, whole and ranged reads, Parquet
tables written and read back, listings and deletes, with a repeated read proven to come from the
cache. pyarrow (the AWS C++ SDK) and polars (Rust object_store) have their own S3 clients and
their own endpoint settings.

Usage: arrow_fsspec.py ENDPOINT ADMIN_URL (keys in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
"""
import os
import sys
import urllib.parse
import urllib.request

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import s3fs

endpoint, admin = sys.argv[1], sys.argv[2]
KEY, SECRET = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
MiB = 1 << 20


def memory_hits():
    text = urllib.request.urlopen(f"{admin}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('shardcache_requests_total{operation="GetObject"') and 'outcome="memory_hit"' in line
    )


fs = s3fs.S3FileSystem(
    key=KEY,
    secret=SECRET,
    endpoint_url=endpoint,
    client_kwargs={"region_name": "us-east-1"},
    config_kwargs={"s3": {"addressing_style": "path"}},
)
fs.mkdir("arrow")
blob = os.urandom(3 * MiB + 11)
with fs.open("arrow/raw/blob.bin", "wb") as f:
    f.write(blob)
assert fs.cat("arrow/raw/blob.bin") == blob
before = memory_hits()
with fs.open("arrow/raw/blob.bin", "rb") as f:
    f.seek(MiB + 5)
    assert f.read(4096) == blob[MiB + 5 : MiB + 5 + 4096]
assert memory_hits() > before, "s3fs: a repeated read was not a cache hit"
assert fs.ls("arrow/raw/", refresh=True) == ["arrow/raw/blob.bin"]
fs.rm("arrow/raw/blob.bin")
assert not fs.exists("arrow/raw/blob.bin")
print("s3fs: write, cat, ranged read (cached), ls, rm: ok")

host = urllib.parse.urlsplit(endpoint).netloc
arrow = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, region="us-east-1", endpoint_override=host, scheme="http")
table = pa.table({"step": list(range(200_000)), "label": [f"sample-{i % 997}" for i in range(200_000)]})
pq.write_table(table, "arrow/tables/train.parquet", filesystem=arrow)
assert pq.read_table("arrow/tables/train.parquet", filesystem=arrow).equals(table)
before = memory_hits()
assert pq.read_table("arrow/tables/train.parquet", filesystem=fs).equals(table)
assert memory_hits() > before, "pyarrow: a repeated read was not a cache hit"
info = arrow.get_file_info(pafs.FileSelector("arrow/tables"))
assert [i.path for i in info] == ["arrow/tables/train.parquet"], info
arrow.delete_file("arrow/tables/train.parquet")
assert arrow.get_file_info("arrow/tables/train.parquet").type == pafs.FileType.NotFound
print("pyarrow: Parquet written and read back (pyarrow and s3fs), listed, deleted: ok")

# polars takes the endpoint in storage_options.
options = {"aws_endpoint_url": endpoint, "aws_allow_http": "true", "aws_region": "us-east-1",
           "aws_access_key_id": KEY, "aws_secret_access_key": SECRET}
pq.write_table(table, "arrow/tables/polars.parquet", filesystem=arrow)
frame = pl.read_parquet("s3://arrow/tables/polars.parquet", storage_options=options)
assert frame.height == table.num_rows and frame["step"].to_list() == table["step"].to_pylist()
before = memory_hits()
assert pl.read_parquet("s3://arrow/tables/polars.parquet", storage_options=options).equals(frame)
assert memory_hits() > before, "polars: a repeated read was not a cache hit"
print("polars: read_parquet over s3:// (cached on the second read): ok")

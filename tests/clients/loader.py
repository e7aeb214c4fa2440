"""A PyTorch-style data loader reading WebDataset tar shards through shardcache for two epochs.

Worker threads (like DataLoader workers) take shards in a shuffled order, stream each one with
boto3 and split it into samples with tarfile's streaming mode, as WebDataset does. Every sample is
checked against what was written. Between epochs the script reads shardcache's /metrics: epoch 1
fills the cache; epoch 2 must come entirely from the cache, with no upstream fetch at all.

Usage: loader.py ENDPOINT ADMIN_URL
"""
import hashlib
import io
import os
import queue
import random
import sys
import tarfile
import threading

import boto3
from botocore.config import Config

from scrape import metrics

endpoint, admin = sys.argv[1], sys.argv[2]
BUCKET, SHARDS, SAMPLES, WORKERS = "webdataset", 8, 24, 4

s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, max_pool_connections=WORKERS),
)


def total(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))


# Write the dataset: shards of (jpg, cls) samples, like an image-classification WebDataset.
expected = {}
shard_bytes = 0
s3.create_bucket(Bucket=BUCKET)
for s in range(SHARDS):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(SAMPLES):
            key = f"{s:03d}{i:04d}"
            for ext, data in (("jpg", os.urandom(random.randint(64, 512) << 10)), ("cls", str(i % 10).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                expected[f"{key}.{ext}"] = hashlib.sha256(data).hexdigest()
    body = buf.getvalue()
    shard_bytes += len(body)
    s3.put_object(Bucket=BUCKET, Key=f"train/shard-{s:06d}.tar", Body=body)


def samples(shard):
    """Streams one shard and yields (name, bytes) per tar member, never holding the whole shard."""
    body = s3.get_object(Bucket=BUCKET, Key=shard)["Body"]
    with tarfile.open(fileobj=body, mode="r|") as tar:
        for member in tar:
            yield member.name, tar.extractfile(member).read()


def epoch(n):
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="train/")["Contents"]
    shards = [o["Key"] for o in listed]
    random.Random(n).shuffle(shards)
    todo, out = queue.Queue(), queue.Queue(maxsize=64)
    for shard in shards:
        todo.put(shard)

    def worker():
        while True:
            try:
                shard = todo.get_nowait()
            except queue.Empty:
                out.put(None)
                return
            for sample in samples(shard):
                out.put(sample)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    seen, done = set(), 0
    while done < WORKERS:  # the "training loop"
        item = out.get(timeout=60)
        if item is None:
            done += 1
            continue
        name, data = item
        assert hashlib.sha256(data).hexdigest() == expected[name], f"epoch {n}: {name} differs"
        seen.add(name)
    for t in threads:
        t.join()
    assert seen == set(expected), f"epoch {n}: {len(expected) - len(seen)} samples missing"


before = metrics(admin)
epoch(1)
after1 = metrics(admin)
epoch(2)
after2 = metrics(admin)


def delta(a, b, prefix):
    return total(b, prefix) - total(a, prefix)


served1 = delta(before, after1, "shardcache_served_bytes_total")
assert served1 == shard_bytes, (served1, shard_bytes)
fetched1 = delta(before, after1, "shardcache_upstream_received_bytes_total")
assert fetched1 >= shard_bytes, f"epoch 1 fetched {fetched1} of {shard_bytes} bytes"

hits2 = delta(after1, after2, 'shardcache_served_bytes_total{source="memory"}') + delta(
    after1, after2, 'shardcache_served_bytes_total{source="disk"}'
)
fetched2 = delta(after1, after2, "shardcache_upstream_received_bytes_total")
chunk_calls2 = delta(after1, after2, 'shardcache_upstream_requests_total{call="GetObject"') + delta(
    after1, after2, 'shardcache_upstream_requests_total{call="HeadObject"'
)
changes = {k: after2.get(k, 0) - after1.get(k, 0) for k in after2 if "_bucket" not in k and after2.get(k, 0) != after1.get(k, 0)}
assert hits2 == shard_bytes, f"epoch 2 served {hits2} of {shard_bytes} bytes from the cache; metric changes: {changes}"
assert fetched2 == 0 and chunk_calls2 == 0, f"epoch 2 fetched {fetched2} bytes in {chunk_calls2} calls"
print(
    f"loader: {SHARDS} shards x {SAMPLES} samples ({shard_bytes / 2**20:.1f} MiB), {WORKERS} workers, 2 epochs: "
    f"epoch 1 fetched {fetched1 / 2**20:.1f} MiB from the upstream, epoch 2 served all "
    f"{hits2 / 2**20:.1f} MiB from the cache with 0 upstream fetches"
)

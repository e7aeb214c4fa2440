"""PyTorch's S3 path (s3torchconnector, on the AWS CRT) through shardcache, with client auth on.

Two signature-checking upstreams, because each deviates from S3 where the CRT looks:
  bucket `torch` (moto): a dataset uploaded with boto3, read as training does: S3MapDataset and
    S3IterableDataset over a prefix, the latter in a DataLoader with 2 worker processes. (moto
    answers CompleteMultipartUpload with a root element the CRT does not read, and its signature
    checker mis-reads query values holding `/`, so the prefix has none.)
  bucket `torch-ckpt` (s3s-fs): S3Writer uploads (the CRT uploads every object as a multipart
    upload; one object spans several parts) read back by key, and an S3Checkpoint saved and
    loaded. (s3s-fs lists objects without ETags, which the CRT requires to list.)
Every object read is compared with what was written. The first pass over each set fills the
cache; every pass after it must be served from the cache, with no GET or HEAD sent upstream (read
off shardcache's /metrics).

Usage: torch_suite.py ENDPOINT ADMIN_URL path|virtual
  path:    path-style requests (S3ClientConfig(force_path_style=True)) to ENDPOINT;
  virtual: virtual-hosted style: ENDPOINT's host is a domain in shardcache's
           virtual_host_domains, and torch.<host> and torch-ckpt.<host> resolve to loopback (the
           CRT resolves names itself, so scripts/client-tests.sh gives it a private /etc/hosts).
Credentials and region come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION.
"""
import hashlib
import os
import random
import sys

import boto3
import torch
from botocore.config import Config
from s3torchconnector import S3Checkpoint, S3ClientConfig, S3IterableDataset, S3MapDataset
from torch.utils.data import DataLoader

from scrape import metrics

REGION = os.environ.get("AWS_REGION", "us-east-1")
DATA, CKPT = "torch", "torch-ckpt"


def upstream_reads(before, after):
    """GETs and HEADs shardcache sent upstream, and the bytes they fetched, between two scrapes."""
    calls = sum(
        v - before.get(k, 0)
        for k, v in after.items()
        if k.startswith("shardcache_upstream_requests_total")
        and ('call="GetObject"' in k or 'call="HeadObject"' in k)
    )
    fetched = sum(
        v - before.get(k, 0) for k, v in after.items() if k.startswith("shardcache_upstream_received_bytes_total")
    )
    return calls, fetched


def sha(data):
    return hashlib.sha256(data).hexdigest()


def digest(reader):
    return reader.key, sha(reader.read())


def check(pairs, expected, what):
    """Every expected object read exactly once, with the bytes that were written."""
    pairs = list(pairs)
    keys = sorted(key for key, _ in pairs)
    assert keys == sorted(expected), f"{what}: read {keys}, expected {sorted(expected)}"
    for key, value in pairs:
        assert value == sha(expected[key]), f"{what}: {key} differs"


def main(endpoint, admin, style):
    prefix = f"{style}-train-"
    config = S3ClientConfig(force_path_style=style == "path")

    rng = random.Random(29)
    # The training set, on moto, written with boto3 through the same listener, path-style (at
    # 127.0.0.1: boto3 resolves names itself).
    dataset = {f"{prefix}{i:03d}.bin": rng.randbytes(rng.randint(1, 2048) << 10) for i in range(12)}
    port = endpoint.rsplit(":", 1)[1]
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}),
    )
    for key, data in dataset.items():
        s3.put_object(Bucket=DATA, Key=key, Body=data)

    # S3Writer uploads on s3s-fs: small objects, and one over the CRT's 8 MiB part size.
    checkpoint = S3Checkpoint(region=REGION, endpoint=endpoint, s3client_config=config)
    written = {f"{style}/written/{i}.bin": rng.randbytes(rng.randint(1, 512) << 10) for i in range(3)}
    written[f"{style}/written/large.bin"] = rng.randbytes((20 << 20) + 7)
    for key, data in written.items():
        with checkpoint.writer(f"s3://{CKPT}/{key}") as writer:
            writer.write(data)

    # A checkpoint saved with torch.save through S3Writer, loaded back with torch.load.
    state = {"weights": torch.arange(100_000, dtype=torch.float32), "step": 7}
    with checkpoint.writer(f"s3://{CKPT}/{style}/ckpt/model.pt") as writer:
        torch.save(state, writer)
    with checkpoint.reader(f"s3://{CKPT}/{style}/ckpt/model.pt") as reader:
        loaded = torch.load(reader, weights_only=True)
    assert loaded["step"] == 7 and torch.equal(loaded["weights"], state["weights"]), "checkpoint differs"

    def map_pass(what):
        uri = f"s3://{DATA}/{prefix}"
        ds = S3MapDataset.from_prefix(uri, region=REGION, endpoint=endpoint, s3client_config=config)
        check((digest(ds[i]) for i in range(len(ds))), dataset, what)

    def loader_pass(what):
        ds = S3IterableDataset.from_prefix(
            f"s3://{DATA}/{prefix}",
            region=REGION,
            endpoint=endpoint,
            transform=digest,
            s3client_config=config,
            enable_sharding=True,
        )
        # Each worker opens its own CRT client; `enable_sharding` shares the keys out between
        # them. Workers are spawned, not forked: the CRT's threads do not survive a fork.
        loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
        check(loader, dataset, what)

    def written_pass(what):
        uris = [f"s3://{CKPT}/{key}" for key in written]
        ds = S3MapDataset.from_objects(uris, region=REGION, endpoint=endpoint, s3client_config=config)
        check((digest(ds[i]) for i in range(len(ds))), written, what)

    total = sum(len(d) for d in dataset.values()) + sum(len(d) for d in written.values())
    before = metrics(admin)
    map_pass("map dataset over a prefix, epoch 1")
    written_pass("S3Writer's objects, first read")
    after1 = metrics(admin)
    calls1, fetched1 = upstream_reads(before, after1)
    assert fetched1 >= total, f"epoch 1 fetched {fetched1} of {total} bytes from the upstream"
    map_pass("map dataset over a prefix, epoch 2")
    loader_pass("DataLoader over an iterable dataset, 2 workers")
    written_pass("S3Writer's objects, second read")
    after2 = metrics(admin)
    calls2, fetched2 = upstream_reads(after1, after2)
    assert calls2 == 0 and fetched2 == 0, f"epochs after the first sent {calls2} reads upstream ({fetched2} bytes)"
    print(
        f"s3torchconnector ({style}-style): S3MapDataset and a 2-worker DataLoader over S3IterableDataset "
        f"({len(dataset)} objects under a prefix), S3Writer uploads ({len(written)} objects, one of several parts) "
        f"and S3Checkpoint save/load: {total / 2**20:.1f} MiB; the first pass fetched {fetched1 / 2**20:.1f} MiB "
        f"in {calls1:.0f} upstream reads, the passes after it none: ok"
    )


if __name__ == "__main__":
    endpoint, admin, style = sys.argv[1:4]
    assert style in ("path", "virtual"), style
    main(endpoint, admin, style)

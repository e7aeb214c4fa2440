"""A small PyTorch training loop reading WebDataset-style shards through shardcache.

With shardcache running on its default config (README, "Run it"):

    pip install torch s3torchconnector
    python3 examples/pytorch_training.py

It first writes 16 tar shards of synthetic samples (32x32 RGB images, each with a class) into
data/demo/shards/, the default config's origin directory, unless they are there already. Then it
trains a small convolutional network for 3 epochs on those shards, read through shardcache with
s3torchconnector by a DataLoader of 2 workers: the demo bucket may be read anonymously, so the
requests go unsigned. After each epoch it prints samples per second, the loss, and from
shardcache's /metrics the bytes shardcache served and the bytes it fetched from the origin:
the first epoch fills the cache, the ones after it fetch nothing.

Flags: --endpoint and --admin (shardcache's listeners), --data (the origin directory),
--epochs, --workers. --prefix s3://BUCKET/PREFIX/ reads shards of this example's format (raw
3x32x32 `.img` and `.cls` members) from another bucket, signed with --signed (keys from the
usual AWS variables); for your own shards, change Samples' decoding.
"""
import argparse
import io
import os
import tarfile
import time
import urllib.request

import torch
from s3torchconnector import S3ClientConfig, S3IterableDataset
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

SHARDS, SAMPLES, CLASSES = 16, 1000, 10


def write_shards(root):
    """Writes SHARDS tar shards of SAMPLES samples (`NNNNNN.img`: 3x32x32 bytes; `NNNNNN.cls`)."""
    os.makedirs(root, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    # Each class has its own mean colour, so there is something to learn.
    colours = torch.randint(0, 256, (CLASSES, 3, 1, 1), generator=generator)
    for s in range(SHARDS):
        path = os.path.join(root, f"shard-{s:05d}.tar")
        with tarfile.open(path + ".part", "w") as tar:
            for i in range(SAMPLES):
                label = int(torch.randint(0, CLASSES, (1,), generator=generator))
                noise = torch.randint(-64, 64, (3, 32, 32), generator=generator)
                image = (colours[label] + noise).clamp(0, 255).to(torch.uint8)
                for ext, data in (("cls", str(label).encode()), ("img", image.numpy().tobytes())):
                    info = tarfile.TarInfo(f"{s * SAMPLES + i:08d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        os.replace(path + ".part", path)


class Samples(IterableDataset):
    """(image, label) pairs streamed out of each tar shard under a prefix, in shard order."""

    def __init__(self, prefix, endpoint, signed):
        # Path-style requests to shardcache's listener. `enable_sharding` gives each DataLoader
        # worker its own share of the shards.
        config = S3ClientConfig(force_path_style=True, unsigned=not signed)
        region = os.environ.get("AWS_REGION", "us-east-1")
        self.shards = S3IterableDataset.from_prefix(
            prefix, region=region, endpoint=endpoint, s3client_config=config, enable_sharding=True
        )

    def __iter__(self):
        for shard in self.shards:
            label = None
            with tarfile.open(fileobj=shard, mode="r|") as tar:
                for member in tar:
                    data = tar.extractfile(member).read()
                    if member.name.endswith(".cls"):
                        label = int(data)
                    elif member.name.endswith(".img") and label is not None:
                        image = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(3, 32, 32)
                        yield image.float() / 255, label
                        label = None


def cache_bytes(admin):
    """(bytes shardcache served, bytes it fetched from the origin) so far, from /metrics."""
    served = fetched = 0.0
    text = urllib.request.urlopen(f"{admin}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("shardcache_served_bytes_total"):
            served += float(line.rsplit(" ", 1)[1])
        elif line.startswith("shardcache_upstream_received_bytes_total"):
            fetched += float(line.rsplit(" ", 1)[1])
    return served, fetched


def mib(n):
    return f"{n / 2**20:.1f} MiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:8080", help="shardcache's S3 listener")
    parser.add_argument("--admin", default="http://127.0.0.1:9090", help="shardcache's admin listener")
    parser.add_argument("--data", default="data", help="the origin directory of the default config")
    parser.add_argument("--prefix", help="read this s3://BUCKET/PREFIX/ instead of writing demo shards")
    parser.add_argument("--signed", action="store_true", help="sign requests (AWS_ACCESS_KEY_ID, ...)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    prefix = args.prefix
    if prefix is None:
        root = os.path.join(args.data, "demo", "shards")
        if len([f for f in os.listdir(root) if f.endswith(".tar")] if os.path.isdir(root) else []) < SHARDS:
            print(f"writing {SHARDS} shards of {SAMPLES} samples into {root}/")
            write_shards(root)
        prefix = "s3://demo/shards/"

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, CLASSES),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    # Workers are spawned, not forked: the AWS CRT under s3torchconnector does not survive a fork.
    loader = DataLoader(
        Samples(prefix, args.endpoint, args.signed),
        batch_size=64,
        num_workers=args.workers,
        multiprocessing_context="spawn" if args.workers else None,
        persistent_workers=args.workers > 0,
    )
    for epoch in range(1, args.epochs + 1):
        served0, fetched0 = cache_bytes(args.admin)
        start, samples, loss_sum = time.monotonic(), 0, 0.0
        for images, labels in loader:
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            samples += len(labels)
            loss_sum += loss.item() * len(labels)
        seconds = time.monotonic() - start
        served1, fetched1 = cache_bytes(args.admin)
        print(
            f"epoch {epoch}: {samples} samples in {seconds:.1f} s ({samples / seconds:.0f}/s), "
            f"loss {loss_sum / max(samples, 1):.3f}; shardcache served {mib(served1 - served0)}, "
            f"fetched {mib(fetched1 - fetched0)} from the origin"
        )


if __name__ == "__main__":
    main()

"""The kit's dataset sweep (benches/run.py calls it; issue #26): datasets from half to three times
the disk tier, read for four epochs by one client, the same order every epoch and reshuffled every
epoch, as a training job reads its shards.

Per ratio and order, two contenders, each fresh:

  shardcache   1 MiB chunks, a 64 MiB disk tier (47 chunk slots once its small-slot region is
               set aside), a memory tier of one chunk (so hits are disk hits)
  nginx        nginx proxy_cache with max_size 47m. Its cache manager trims the cache to
               max_size only when it wakes, at most every 10 s (nginx's
               ngx_http_file_cache_expire caps its sleep there); these epochs take well under a
               second, so it holds the whole dataset and misses nothing: measured and kept in
               the table, but it is not an LRU cache of 47 slots here.
  LRU          a least-recently-used cache of 47 slots, replayed on the same reads in this
               script (what nginx converges to when its manager keeps up)

and the bound: from the second epoch on, no cache of C slots can serve more than C of D shards
per epoch, so at least 1 - C/D comes from the upstream.

Each shard is one chunk (1 MiB). The measure is the share of the dataset the origin served per
epoch (its access log). Reads are sequential GETs over one keep-alive connection, in order.
"""
import http.client
import random
import time
from collections import OrderedDict

import kit

CASE = "sweep"
SLOTS = 47
CHUNK = 1 << 20
RATIOS = (0.5, 1.0, 1.25, 1.5, 2.0, 3.0)
EPOCHS = 4
PREFIX = "sweep"


def shards():
    """The shard keys, written under the origin's bench bucket if missing (3 x SLOTS of them)."""
    keys = [f"{PREFIX}/shard-{i:04}" for i in range(3 * SLOTS)]
    for i, key in enumerate(keys):
        path = kit.DATA / "bench" / key
        if not path.exists() or path.stat().st_size != CHUNK:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(random.Random(i).randbytes(CHUNK))
    return keys


def read(port, keys):
    """GETs `keys` in order over one connection; each must come back whole."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for key in keys:
            conn.request("GET", f"/bench/{key}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or len(body) != CHUNK:
                raise SystemExit(f"sweep: GET {key} answered {resp.status} with {len(body)} bytes")
    finally:
        conn.close()


def start(contender, origin_port):
    if contender == "shardcache":
        return kit.start_shardcache("shardcache-sweep", origin_port, CHUNK, kit.WORK / "shardcache-sweep-cache",
                                    capacity=64 * CHUNK, chunk_size=CHUNK)
    return kit.start_nginx_cache(origin_port, max_size=f"{SLOTS}m", name="sweep")


def orders(dataset, order):
    """The read order of each epoch."""
    out = []
    for epoch in range(EPOCHS):
        ordered = list(dataset)
        if order == "shuffled":
            random.Random(epoch).shuffle(ordered)
        out.append(ordered)
    return out


def lru(epochs, slots):
    """The share of each epoch a least-recently-used cache of `slots` misses."""
    cache, shares = OrderedDict(), []
    for keys in epochs:
        missed = 0
        for key in keys:
            if key in cache:
                cache.move_to_end(key)
                continue
            missed += 1
            cache[key] = True
            if len(cache) > slots:
                cache.popitem(last=False)
        shares.append(missed / len(keys))
    return shares


def run(origin):
    """Every ratio, order and contender once: rows of per-epoch upstream shares."""
    keys = shards()
    rows = []
    for ratio in RATIOS:
        dataset = keys[:round(ratio * SLOTS)]
        bound = max(0.0, 1 - SLOTS / len(dataset))
        for order in ("same", "shuffled"):
            row = lambda name, shares: {"case": CASE, "contender": name, "round": 1, "ratio": ratio,  # noqa: E731
                                        "order": order, "shards": len(dataset), "slots": SLOTS,
                                        "epoch_shares": shares, "bound": bound}
            rows.append(row("LRU", lru(orders(dataset, order), SLOTS)))
            for name in ("shardcache", "nginx"):
                contender = start(name, origin.port)
                shares = []
                try:
                    for ordered in orders(dataset, order):
                        mark = origin.mark()
                        read(contender.port, ordered)
                        time.sleep(0.3)  # let the origin log the last responses
                        _, body = origin.since(mark)
                        shares.append(body / (len(dataset) * CHUNK))
                finally:
                    for p in contender.procs:
                        p.stop()
                rows.append(row(name, shares))
                print(f"  {CASE} {ratio:>4}x {order:<8} {name:<10} upstream share per epoch "
                      f"{' '.join(f'{s:.2f}' for s in shares)} (bound {bound:.2f})", flush=True)
    return rows

#!/usr/bin/env python3
"""shardcache's benchmark kit: every case run side by side, in one run, on loopback, against

  upstream    the origin itself (nginx serving files as /bucket/key: the no-cache baseline and
              "nginx static" ceiling in one)
  shardcache  this repo's release build, S3 upstream = the origin
  nginx       nginx proxy_cache in front of the origin (benches/peers/nginx-cache.conf)
  cachey      cachey (Rust + foyer), `cargo install cachey --locked`

plus the machine's ceilings: iperf3 over loopback with the same number of streams (at its
default 128 KiB writes and with 1 MiB writes), a tokio sender/receiver pair with 1 MiB writes on
two threads (benches/ceiling), and fio (io_uring, O_DIRECT) reading the cache disk (a full run
only). The remote cases (benches/remote.py) and the epoch simulation read the origin's remote
port instead: 30 ms to the first byte, 80 MiB/s per connection, with s5cmd's cp as a contender.

Every case runs once per round for each contender, contenders in a rotating order, rounds
interleaved, so all contenders see the same machine conditions; the tables give the median of the
rounds. The load client is benches/loadgen (Rust, hyper, 2 threads). Per run: throughput, req/s,
TTFB and latency percentiles, upstream bytes and requests (from the origin's access log), CPU
seconds and peak RSS of the contender's processes (/proc; peak reset per run with clear_refs), and
the load client's own CPU seconds (its rusage).

Usage: benches/run.sh [--quick] [--rounds N] [--seconds S] [--only CASE_PREFIX]
Writes BENCHMARKS.md's results section and benches/results.json. Loopback only; everything it
starts is stopped by PID.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cluster
import remote
import sweep
from kit import (
    CACHEY, CEILING, CLUSTER_SHARDS, Contender, DATA, Dataset, fio_read, get_args, GiB, iperf3,
    LOADGEN, loopback, measure, MEMORY_TIER, MiB, Origin, REMOTE_RATE, ROOT, SHARDCACHE, start_caches,
    start_cachey, start_nginx_cache, start_shardcache, start_trust_contenders, warm, WORK,
)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller objects and dataset, 1 round, 2 s runs")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--only", default="", help="run only cases whose name starts with this")
    ap.add_argument("--seconds", type=float, default=None, help="length of a timed run (default 4, --quick 2)")
    ap.add_argument("--json", default=str(ROOT / "benches" / "results.json"))
    opts = ap.parse_args()
    rounds = opts.rounds or (1 if opts.quick else 3)
    seconds = opts.seconds or (2 if opts.quick else 4)
    WORK.mkdir(parents=True, exist_ok=True)
    # `--only trust`, `--only disk`, `--only stream`, `--only cluster`, `--only sweep` and
    # `--only remote` measure shardcache against itself (and fio), or start their own peers: the
    # peers are not started.
    peers = not opts.only.startswith(("trust", "disk", "stream", "cluster", "sweep", "remote"))
    for tool in (LOADGEN, CEILING, SHARDCACHE, *([CACHEY] if peers else [])):
        if not tool.exists():
            sys.exit(f"missing {tool}: run benches/run.sh, which builds and installs it")

    data = Dataset(opts.quick)
    print("preparing data ...", flush=True)
    data.build()
    origin = Origin()
    direct = Contender("upstream", origin.port, [origin.proc])
    caches = start_caches(origin.port) if peers else [
        start_shardcache("shardcache", origin.port, MEMORY_TIER, WORK / "shardcache-cache")]
    sc = caches[0]
    started = [origin.proc] + [p for c in caches for p in c.procs]
    rows = []

    def record(case, contender, rnd, result, **extra):
        row = {"case": case, "contender": contender.name, "round": rnd, **extra, **result}
        rows.append(row)
        print(f"  {case:<44} {contender.name:<10} r{rnd} {result.get('gb_per_s', 0):7.3f} GB/s "
              f"{result.get('req_per_s', 0):9.1f} req/s  ttfb p99 {result.get('ttfb', {}).get('p99_ms', 0):8.2f} ms  "
              f"upstream {result.get('upstream_bytes', 0) / MiB:9.1f} MiB", flush=True)

    def wanted(case):
        return case.startswith(opts.only)

    try:
        # Ceilings (a partial run keeps the last full run's: report.py reads those).
        ceilings = {}
        # iperf3 at its default 128 KiB writes, then with 1 MiB writes, and a tokio pair with
        # the proxy's two threads: the last is what loopback can carry (issue #15).
        if not opts.only:
            secs = 3 if opts.quick else 5
            for streams in (1, 16, 64):
                ceilings[f"iperf3 {streams} streams"] = statistics.median(
                    iperf3(streams, secs)["gb_per_s"] for _ in range(rounds))
                ceilings[f"iperf3 {streams} streams, 1 MiB writes"] = statistics.median(
                    iperf3(streams, secs, "1M")["gb_per_s"] for _ in range(rounds))
                ceilings[f"tokio loopback {streams} streams, 1 MiB writes, 2 threads"] = statistics.median(
                    loopback(streams, secs)["gb_per_s"] for _ in range(rounds))
            ceilings["fio io_uring O_DIRECT sequential read"] = fio_read(WORK, "1G" if opts.quick else "4G")["gb_per_s"]
            print(f"ceilings: {ceilings}", flush=True)

        # Warm every cache with the hit sets.
        hit_sets = data.sets
        for c in caches:
            for objs in hit_sets.values():
                warm(c, objs)
        trust_case = "trust: hit 64KiB x16 (auth, audit, lineage)"
        trust = []
        if wanted(trust_case):
            trust = start_trust_contenders(origin.port)
            started.extend(p for c in trust for p in c.procs)
            for c in trust:
                warm(c, hit_sets["64KiB"])

        for rnd in range(1, rounds + 1):
            order = [direct, *caches]
            order = order[rnd % len(order):] + order[:rnd % len(order)]
            print(f"round {rnd}", flush=True)
            # Hits (the origin for "upstream"): every size x concurrency, whole objects. Each set
            # is read once through every cache first, unmeasured: the last round's cold cases
            # pushed part of it out of the memory tiers.
            for size, objs in hit_sets.items():
                if any(wanted(f"hit {size} x{conns}") for conns in (1, 16, 64)):
                    for c in caches:
                        warm(c, objs)
                for conns in (1, 16, 64):
                    case = f"hit {size} x{conns}"
                    if not wanted(case):
                        continue
                    if size == "1GiB" and conns == 64 and not opts.quick:
                        continue  # 64 GiB per run; the cold burst case covers 64 readers of 1 GiB
                    for c in order:
                        dur = seconds * (3 if size == "1GiB" else 1)
                        record(case, c, rnd, measure(c, origin, get_args(c, objs, conns, seconds=dur)))
            # The cost of verifying, authorizing, auditing and recording lineage on small hits.
            if trust:
                trust_order = [sc, *trust]
                for c in trust_order[rnd % 3:] + trust_order[:rnd % 3]:
                    record(trust_case, c, rnd, measure(c, origin, get_args(c, hit_sets["64KiB"], 16, seconds=seconds)))
            # Random 1 MiB ranges of large objects.
            for size in ("16MiB", "1GiB"):
                case = f"hit random 1MiB ranges of {size} x16"
                if wanted(case):
                    for c in caches:
                        warm(c, hit_sets[size])
                    for c in order:
                        record(case, c, rnd, measure(c, origin, get_args(c, hit_sets[size], 16, seconds=seconds,
                                                                         range_size=MiB)))
            # Cold: a fresh copy per contender and round.
            case = "cold 1GiB x1"
            if wanted(case):
                for c in order:
                    objs = data.cold_copies(f"r{rnd}-{c.name}-huge", data.sets["1GiB"])
                    record(case, c, rnd, measure(c, origin, get_args(c, objs, 1, requests=1)))
            # The same cold read through a memory-only shardcache: the proxy path without the disk.
            case = "cold 1GiB x1, memory-only tier"
            if wanted(case):
                mem = start_shardcache("shardcache-mem", origin.port, MEMORY_TIER, None)
                objs = data.cold_copies(f"r{rnd}-mem-huge", data.sets["1GiB"])
                record(case, mem, rnd, measure(mem, origin, get_args(mem, objs, 1, requests=1)))
                mem.procs[0].stop()
            case = "cold 1MiB x1 (64 objects)"
            if wanted(case):
                for c in order:
                    objs = data.cold_copies(f"r{rnd}-{c.name}-mid", data.sets["1MiB"])
                    record(case, c, rnd, measure(c, origin, get_args(c, objs, 1, requests=len(objs))))

        # One round: 64 clients start together on one cold large object.
        case = f"cold burst 64 readers of {data.sets['1GiB'][0][1] // MiB} MiB"
        if wanted(case):
            for c in caches:
                objs = data.cold_copies(f"burst-{c.name}", data.sets["1GiB"])
                record(case, c, 1, measure(c, origin, get_args(c, objs, 64, requests=64)),
                       object_bytes=objs[0][1])

        # Disk hits: shardcache with a 64 MiB memory tier and O_DIRECT, against fio: whole objects
        # and random 1 MiB ranges (which read only the segments that cover them), encrypted (the
        # default) and not, the two stores side by side in each round. Then cold reads of fresh
        # copies, 4 at a time: misses whose chunks are written to disk, encrypted or not.
        disk_cases = ("disk hit 16MiB x16", "disk range 1MiB of 16MiB x16")
        disk_cold = "disk cold 16MiB x4"
        if any(wanted(case) for case in (*disk_cases, disk_cold)):
            disk_stores = [("", ""), (", encryption none", "encryption: none")]
            for i, (suffix, disk_extra) in enumerate(disk_stores):
                c = start_shardcache(f"shardcache-disk{i}", origin.port, 64 * MiB, WORK / f"shardcache-disk{i}-cache",
                                     disk_extra=disk_extra)
                started.append(c.procs[0])
                warm(c, hit_sets["16MiB"])
                disk_stores[i] = (suffix, c)
            time.sleep(2)  # let the last chunks reach the disk
            for rnd in range(1, rounds + 1):
                for suffix, c in disk_stores[rnd % 2:] + disk_stores[:rnd % 2]:
                    for case, range_size in zip(disk_cases, (None, MiB)):
                        if wanted(case):
                            args = get_args(c, hit_sets["16MiB"], 16, seconds=seconds, range_size=range_size)
                            record(case + suffix, c, rnd, measure(c, origin, args))
                    if wanted(disk_cold):
                        objs = data.cold_copies(f"disk-r{rnd}-{c.name}", data.sets["16MiB"])
                        args = get_args(c, objs, 4, requests=len(objs))
                        record(disk_cold + suffix, c, rnd, measure(c, origin, args))
            for _, c in disk_stores:
                c.procs[0].stop()

        # Idle CPU of shardcache (the disk engine must not busy-poll).
        cpu0 = sc.procs[0].cpu_seconds()
        time.sleep(10)
        idle = (sc.procs[0].cpu_seconds() - cpu0) / 10

        # Cold reads from the remote origin (30 ms to the first byte, 80 MiB/s per connection):
        # fresh caches each round, in a rotating order, against the origin read directly (one
        # connection per reader, and 16 connections of 8 MiB ranges: what it can give at most)
        # and s5cmd's cp (its defaults, and 16 parts of 8 MiB at once).
        if any(wanted(case) for case in remote.CASES):
            for c in caches:
                for p in c.procs:
                    p.stop()
            rows.extend(remote.run(origin, data, rounds, opts.only))

        # Training-epoch simulation through the remote origin, with fresh caches.
        case = "epochs"
        if wanted(case):
            for c in caches:
                for p in c.procs:
                    p.stop()
            shards = [(k, data.shard_sizes[k]) for k in data.shards]
            rate = 400e6  # accelerator consumption, bytes/s
            fresh = [
                lambda: Contender("upstream", origin.remote_port, [origin.proc]),
                lambda: start_shardcache("shardcache-epochs", origin.remote_port, MEMORY_TIER, WORK / "shardcache-cache"),
                lambda: start_nginx_cache(origin.remote_port),
                lambda: start_cachey(origin.remote_port, MEMORY_TIER),
            ]
            for start in fresh:
                c = start()
                ours = [p for p in c.procs if p is not origin.proc]
                started.extend(ours)
                result = measure(c, origin, ["epoch", *c.loadgen_target(shards), "--workers", "8", "--epochs", "3",
                                             "--consume-rate", str(rate), "--prefetch", "4"])
                record(case, c, 1, result, consume_rate=rate, remote_rate=REMOTE_RATE)
                for p in ours:
                    p.stop()

        # Peak memory while streaming an object far larger than the memory tier, twice (cold, then
        # mixed): a sparse file, so the origin reads zeros at memory speed.
        # Default settings, then the smaller disk write queue CONFIG.md suggests for a tight budget.
        for case, write_queue in (("stream 10GiB twice (256 MiB memory tier)", None),
                                  ("stream 10GiB twice (256 MiB memory tier, 16 MiB write queue)", 16 * MiB)):
            if not wanted(case):
                continue
            size = (2 if opts.quick else 10) * GiB
            sparse = DATA / "bench" / "sparse" / "obj-10g"
            sparse.parent.mkdir(parents=True, exist_ok=True)
            if not sparse.exists() or sparse.stat().st_size != size:
                sparse.unlink(missing_ok=True)
                sparse.touch()
                os.truncate(sparse, size)
            c = start_shardcache("shardcache-rss", origin.port, 256 * MiB, WORK / "shardcache-rss-cache",
                                 write_queue=write_queue)
            started.extend(c.procs)
            record(case, c, 1, measure(c, origin, get_args(c, [("sparse/obj-10g", size)], 1, requests=2)))
            for p in c.procs:
                p.stop()
        # Three nodes reading one dataset, independent and as a cluster (benches/cluster.py).
        if wanted(cluster.CASE):
            shards = [(k, data.shard_sizes[k]) for k in data.shards[:CLUSTER_SHARDS]]
            for rnd in range(1, rounds + 1):
                for name, result in cluster.run(origin, shards):
                    record(cluster.CASE, Contender(name, 0, []), rnd, result)
        # Datasets 0.5x to 3x the disk tier, read epoch after epoch (benches/sweep.py): one round,
        # the shares it measures are counts, not times.
        if wanted(sweep.CASE):
            rows.extend(sweep.run(origin))
    finally:
        for p in reversed(started):
            p.stop()

    machine = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1),
        "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), ""),
    }
    command = " ".join(["benches/run.sh", *sys.argv[1:]])
    out = {"machine": machine, "rounds": rounds, "quick": opts.quick, "ceilings": ceilings,
           "shardcache_idle_cpu_fraction": idle, "runs": rows, "command": command}
    previous = Path(opts.json)
    if opts.only and previous.exists():
        # A partial run replaces only its own cases in the results of the last full run.
        out = json.loads(previous.read_text())
        out["runs"] = [r for r in out["runs"] if not r["case"].startswith(opts.only)] + rows
        reruns = [r for r in out.get("reruns", []) if r["only"] != opts.only]
        out["reruns"] = reruns + [{"only": opts.only, "command": command, "date": time.strftime("%Y-%m-%d")}]
    Path(opts.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {opts.json}")


if __name__ == "__main__":
    main()

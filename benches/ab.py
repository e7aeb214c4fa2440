#!/usr/bin/env python3
"""Two shardcache builds side by side on one hit case of the kit: the way to tell whether a
change made shardcache faster on this noisy machine. Both serve the same objects from the same
origin, warmed first; the rounds alternate which build goes first; the report is the median and
range of each, and the ratio of medians.

Usage: benches/ab.py BASELINE_BINARY CANDIDATE_BINARY [--set 64KiB|1MiB|16MiB|1GiB] [--connections N]
                     [--rounds R] [--seconds S] [--cold] [--disk] [--remote] [--auth]
With --cold, each build's memory tier is first filled with cold reads (unmeasured), then each round
reads fresh names (hard links) of the set once, cold, through each build, and reports GB/s and the
build's CPU seconds per GiB; --disk gives both builds the kit's default disk tier (encrypted,
O_DIRECT) under the memory tier; --remote puts both in front of the origin's remote port (30 ms to
the first byte, 80 MiB/s per connection, benches/remote.py); --auth turns on the kit's trust-case
client authentication in both, every request a presigned URL (benches/kit.py). The disk tiers and
the fresh names are removed at the end.
Build the binaries first (for example `git worktree add` of the baseline commit, and
`cargo build --release` in each, copying target/release/shardcache aside). The data and the load
client are the kit's (run benches/run.sh once). Loopback only; everything started is stopped.
"""
import argparse
import shutil
import statistics
import time
from pathlib import Path

import kit


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("baseline")
    ap.add_argument("candidate")
    ap.add_argument("--set", default="64KiB")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--cold", action="store_true", help="cold reads of fresh names, not hits")
    ap.add_argument("--disk", action="store_true", help="a disk tier under the memory tier")
    ap.add_argument("--remote", action="store_true", help="the origin's remote port as the upstream")
    ap.add_argument("--auth", action="store_true", help="client authentication, presigned URLs")
    opts = ap.parse_args()
    data = kit.Dataset(quick=False)
    stamp = int(time.time())
    objects = data.sets[opts.set]
    if not all((kit.DATA / "bench" / key).exists() for key, _ in objects):
        raise SystemExit("the kit's data is missing: run benches/run.sh once")
    origin = kit.Origin()
    started = [origin.proc]
    builds, disks = {}, []
    try:
        for name, binary in (("baseline", opts.baseline), ("candidate", opts.candidate)):
            kit.SHARDCACHE = Path(binary).resolve()
            disk = kit.WORK / f"ab-{name}-cache" if opts.disk else None
            disks.append(disk)
            port = origin.remote_port if opts.remote else origin.port
            contender = kit.start_shardcache(f"ab-{name}", port, kit.MEMORY_TIER, disk,
                                             extra=kit.AUTH_YAML if opts.auth else "")
            if opts.auth:
                contender = kit.PresignedContender(f"ab-{name}", contender)
            started.extend(contender.procs)
            if opts.cold:
                # Fill the memory tier first, as the kit's hit cases do before its cold ones: a
                # fresh process's first touch of memory is slower on this VM than a full tier's.
                for i in range(kit.MEMORY_TIER // kit.GiB):
                    kit.warm(contender, data.cold_copies(f"ab-{stamp}-fill{i}-{name}", data.sets["1GiB"]))
            else:
                kit.warm(contender, objects)
            builds[name] = contender
        results = {name: [] for name in builds}
        order = list(builds)
        for rnd in range(opts.rounds):
            for name in order[rnd % 2:] + order[:rnd % 2]:
                proc = builds[name].procs[0]
                cpu = proc.cpu_seconds()
                if opts.cold:
                    objs = data.cold_copies(f"ab-{stamp}-r{rnd}-{name}-{opts.set}", objects)
                    args = kit.get_args(builds[name], objs, opts.connections, requests=len(objs))
                else:
                    args = kit.get_args(builds[name], objects, opts.connections, seconds=opts.seconds)
                out = kit.loadgen(args)
                out["cpu_s_per_gib"] = (proc.cpu_seconds() - cpu) / (out["bytes"] / kit.GiB)
                results[name].append(out)
                print(f"round {rnd + 1} {name:<9} {out['req_per_s']:9.1f} req/s {out['gb_per_s']:.3f} GB/s "
                      f"ttfb p99 {out['ttfb']['p99_ms']:.2f} ms, {out['cpu_s_per_gib']:.2f} CPU-s/GiB", flush=True)
    finally:
        for p in reversed(started):
            p.stop()
        # Each disk tier may hold up to 24 GiB: left behind, a few runs fill the disk.
        for path in [d for d in disks if d] + list((kit.DATA / "bench" / "cold").glob(f"ab-{stamp}-*")):
            shutil.rmtree(path, ignore_errors=True)
    medians = {}
    for name, runs in results.items():
        rps = [r["req_per_s"] for r in runs]
        medians[name] = statistics.median(rps)
        cpu = statistics.median(r["cpu_s_per_gib"] for r in runs)
        print(f"{name:<9} req/s median {medians[name]:.1f} (min {min(rps):.1f}, max {max(rps):.1f}), "
              f"CPU-s/GiB median {cpu:.2f}")
    kind = "cold" if opts.cold else "hit"
    tier = "memory and disk tiers" if opts.disk else "memory tier"
    tier += ", remote origin" if opts.remote else ""
    tier += ", presigned (auth)" if opts.auth else ""
    print(f"candidate / baseline: {medians['candidate'] / medians['baseline']:.3f}x "
          f"({kind} {opts.set} x{opts.connections}, {opts.rounds} rounds, {tier})")


if __name__ == "__main__":
    main()

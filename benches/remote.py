"""The kit's remote-upstream cases (benches/run.py calls them): cold reads from the origin's
remote port, which answers 30 ms late and gives each connection 80 MiB/s (kit.REMOTE_DELAY,
kit.REMOTE_RATE), as a distant object store does. Loopback hides both; a cache that fetches one
chunk at a time from such a store makes a first epoch slower than reading it directly with a
good client.

  remote cold 1GiB x1             one client reads a 1 GiB object once
  remote cold 16MiB x8 (64 ...)   8 readers read 64 objects of 16 MiB once

Contenders, each round with fresh caches (their memory tiers filled first with the kit's hit
sets, as a cache that has run a while has them: a process's first touch of memory costs this VM
up to 3 CPU-s per GiB), in a rotating order:

  upstream            the remote origin read directly, one connection per reader
  upstream x16        (1 GiB only) the origin read with 16 connections of random 8 MiB ranges:
                      what it gives at most, the figure cold reads are held to (>= 0.8x)
  s5cmd, s5cmd -c16   (1 GiB only) `s5cmd cp` of the object to a file: its defaults (5 parts of
                      50 MiB at once), and 16 parts of 8 MiB at once
  shardcache, nginx, cachey   each in front of the remote origin, empty

The quick kit reads 256 MiB and 32 objects instead.
"""
import os
import resource
import shutil
import subprocess
import sys
import time

import kit

ONE = "remote cold 1GiB x1"
MANY = "remote cold 16MiB x8 (64 objects)"
CASES = (ONE, MANY)
S5CMD_FLAGS = {"s5cmd": [], "s5cmd -c16": ["--concurrency", "16", "--part-size", "8"]}


def s5cmd_cp(origin, key, size, flags):
    """`s5cmd cp` of `key` from the remote origin to a file, timed, with the origin's traffic."""
    out = kit.WORK / "s5cmd-out"
    out.unlink(missing_ok=True)
    argv = ["s5cmd", "--endpoint-url", f"http://127.0.0.1:{origin.remote_port}", "--no-sign-request",
            "cp", *flags, f"s3://bench/{key}", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    mark = origin.mark()
    begin = time.perf_counter()
    env = {**os.environ, "AWS_REGION": "us-east-1"}  # else it asks the origin for the bucket's region
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    seconds = time.perf_counter() - begin
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or out.stat().st_size != size:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    out.unlink()
    time.sleep(1.0)  # let the origin log the last responses
    requests, body = origin.since(mark)
    return {"gb_per_s": size / seconds / 1e9, "seconds": seconds, "upstream_requests": requests,
            "upstream_bytes": body,
            "client_cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def caches(port):
    """How to start each cache, fresh and empty, in front of the remote origin, as the kit's
    other cases run them."""
    return {
        "shardcache": lambda: kit.start_shardcache("shardcache-remote", port, kit.MEMORY_TIER,
                                                   kit.WORK / "shardcache-remote-cache"),
        "nginx": lambda: kit.start_nginx_cache(port, name="cache-remote"),
        "cachey": lambda: kit.start_cachey(port, kit.MEMORY_TIER),
    }


def run(origin, data, rounds, only=""):
    """Every wanted case, `rounds` rounds: the rows for the kit's results."""
    if shutil.which("s5cmd") is None or not kit.CACHEY.exists():
        sys.exit("s5cmd or cachey missing: run benches/run.sh, which installs them")
    port = origin.remote_port
    starts = caches(port)
    huge = data.cold_copies("remote", data.sets["1GiB"])  # a name the hit sets do not warm
    # 64 distinct keys: every 16 MiB object under two names (hard links).
    many = data.cold_copies("remote-a", data.sets["16MiB"]) + data.cold_copies("remote-b", data.sets["16MiB"])
    wanted = [case for case in CASES if case.startswith(only)]
    direct = kit.Contender("upstream", port, [origin.proc])
    rows = []

    def record(case, name, rnd, result):
        rows.append({"case": case, "contender": name, "round": rnd, **result})
        print(f"  {case:<44} {name:<10} r{rnd} {result['gb_per_s']:7.3f} GB/s  "
              f"upstream {result.get('upstream_bytes', 0) / kit.MiB:9.1f} MiB in {result.get('upstream_requests', 0)}",
              flush=True)

    def read(case, contender):
        if case == ONE:
            return kit.measure(contender, origin, kit.get_args(contender, huge, 1, requests=1))
        return kit.measure(contender, origin, kit.get_args(contender, many, 8, requests=len(many)))

    for rnd in range(1, rounds + 1):
        steps = ["upstream", "upstream x16", *S5CMD_FLAGS, *starts]
        steps = steps[rnd % len(steps):] + steps[:rnd % len(steps)]
        for step in steps:
            if step == "upstream":
                for case in wanted:
                    record(case, "upstream", rnd, read(case, direct))
            elif step == "upstream x16":
                if ONE in wanted:
                    requests = huge[0][1] // (8 * kit.MiB)
                    args = kit.get_args(direct, huge, 16, requests=requests, range_size=8 * kit.MiB)
                    record(ONE, "upstream x16", rnd, kit.measure(direct, origin, args))
            elif step in S5CMD_FLAGS:
                if ONE in wanted:
                    key, size = huge[0]
                    record(ONE, step, rnd, s5cmd_cp(origin, key, size, S5CMD_FLAGS[step]))
            else:
                contender = starts[step]()
                try:
                    for objects in data.sets.values():
                        kit.warm(contender, objects)
                    for case in wanted:
                        record(case, contender.name, rnd, read(case, contender))
                finally:
                    for p in contender.procs:
                        p.stop()
    return rows

#!/usr/bin/env python3
"""Turns benches/results.json (written by benches/run.py) into BENCHMARKS.md: the method, the
machine, the ceilings, the targets with their measured ratios, and one table per case with every
contender side by side (medians over the rounds).

Usage: benches/report.py [RESULTS_JSON] [BENCHMARKS_MD]
"""
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
ORDER = ["upstream", "upstream x16", "s5cmd", "s5cmd -c16", "shardcache", "shardcache+auth", "shardcache+auth+audit+lineage", "nginx", "cachey"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def grouped(runs):
    by = defaultdict(lambda: defaultdict(list))
    for r in runs:
        by[r["case"]][r["contender"]].append(r)
    return by


def summary(rows):
    """Median of each figure over the rounds of one (case, contender)."""
    pick = lambda f: median([f(r) for r in rows])  # noqa: E731
    return {
        "gb_per_s": pick(lambda r: r.get("gb_per_s")),
        "gb_min": min(r.get("gb_per_s", 0) for r in rows),
        "gb_max": max(r.get("gb_per_s", 0) for r in rows),
        "req_per_s": pick(lambda r: r.get("req_per_s")),
        "ttfb_p50": pick(lambda r: r.get("ttfb", {}).get("p50_ms")),
        "ttfb_p99": pick(lambda r: r.get("ttfb", {}).get("p99_ms")),
        "lat_p50": pick(lambda r: r.get("latency", {}).get("p50_ms")),
        "lat_p95": pick(lambda r: r.get("latency", {}).get("p95_ms")),
        "lat_p99": pick(lambda r: r.get("latency", {}).get("p99_ms")),
        "upstream_mib": pick(lambda r: r.get("upstream_bytes", 0) / MiB),
        "upstream_req": pick(lambda r: r.get("upstream_requests", 0)),
        "cpu_s": pick(lambda r: r.get("cpu_seconds")),
        "client_cpu_s": pick(lambda r: r.get("client_cpu_seconds")),
        "rss_mib": pick(lambda r: r.get("peak_rss_bytes", 0) / MiB),
        "errors": sum(r.get("errors", 0) for r in rows),
        "rounds": len(rows),
    }


def cpu_per_gib(run):
    """The contender's CPU seconds per GiB served in one run; None if it served nothing."""
    return run["cpu_seconds"] / (run["bytes"] / 2**30) if run.get("bytes") else None


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def loopback_ceiling(data, case):
    """The run's tokio loopback ceiling (benches/ceiling) for a case's number of connections:
    x1 -> 1 stream, x16 -> 16, x64 (and more) -> 64; None if the run did not measure it."""
    m = re.search(r" x(\d+)", case)
    if not m:
        return None
    streams = min((n for n in (1, 16, 64) if n >= int(m.group(1))), default=64)
    return data["ceilings"].get(f"tokio loopback {streams} streams, 1 MiB writes, 2 threads")


def case_table(contenders, ceiling=None):
    """One case, each contender's medians; with `ceiling` (GB/s), throughput as a share of it."""
    share = " | x loopback ceiling" if ceiling else ""
    lines = [
        "| contender | GB/s (median, min-max) | req/s | TTFB p50 / p99 ms | latency p50 / p95 / p99 ms "
        f"| upstream MiB / requests | CPU s | client CPU s | peak RSS MiB{share} |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if ceiling else ""),
    ]
    for name in sorted(contenders, key=lambda n: ORDER.index(n) if n in ORDER else 9):
        s = summary(contenders[name])
        err = f" ({s['errors']} errors)" if s["errors"] else ""
        of_ceiling = f" | {fmt(s['gb_per_s'] / ceiling)}" if ceiling and s["gb_per_s"] is not None else ""
        lines.append(
            f"| {name}{err} | {fmt(s['gb_per_s'], 3)} ({fmt(s['gb_min'], 3)}-{fmt(s['gb_max'], 3)}) "
            f"| {fmt(s['req_per_s'], 0)} | {fmt(s['ttfb_p50'])} / {fmt(s['ttfb_p99'])} "
            f"| {fmt(s['lat_p50'])} / {fmt(s['lat_p95'])} / {fmt(s['lat_p99'])} "
            f"| {fmt(s['upstream_mib'], 1)} / {fmt(s['upstream_req'], 0)} | {fmt(s['cpu_s'])} "
            f"| {fmt(s['client_cpu_s'])} | {fmt(s['rss_mib'], 0)}"
            f"{of_ceiling} |"
        )
    return "\n".join(lines)


def cluster_table(contenders):
    """The cluster case: upstream bytes over the dataset, aggregate and per-node figures."""
    lines = [
        "| contender | upstream bytes / dataset | aggregate GB/s (median, min-max) | per node GB/s | "
        "per node TTFB p99 ms | upstream requests | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(contenders):
        runs = contenders[name]
        best = min(runs, key=lambda r: abs(r["gb_per_s"] - median([x["gb_per_s"] for x in runs])))
        lines.append(
            f"| {name} | {fmt(median([r['upstream_over_dataset'] for r in runs]), 3)} "
            f"| {fmt(median([r['gb_per_s'] for r in runs]), 3)} ({fmt(min(r['gb_per_s'] for r in runs), 3)}-"
            f"{fmt(max(r['gb_per_s'] for r in runs), 3)}) "
            f"| {' / '.join(fmt(n['gb_per_s'], 3) for n in best['nodes'])} "
            f"| {' / '.join(fmt(n['ttfb']['p99_ms']) for n in best['nodes'])} "
            f"| {fmt(median([r['upstream_requests'] for r in runs]), 0)} | {sum(r['errors'] for r in runs)} |"
        )
    lines.append("")
    lines.append("Per-node figures are those of the round closest to the median; nodes 127.0.0.1, .2, .3 in order.")
    return "\n".join(lines)


def epoch_table(contenders):
    lines = ["| contender | epoch | GB/s | accelerator utilization | upstream MiB (all epochs) |", "|---|---|---|---|---|"]
    for name in sorted(contenders, key=lambda n: ORDER.index(n) if n in ORDER else 9):
        run = contenders[name][0]
        for e in run["epochs"]:
            lines.append(
                f"| {name} | {e['epoch']} | {e['gb_per_s']:.3f} | {100 * e['accelerator_utilization']:.1f}% "
                f"| {run['upstream_bytes'] / MiB:.0f} |"
            )
    return "\n".join(lines)


def targets(data, by):
    """(case, target, measured, met) rows, ratios from the same run."""
    ceil = data["ceilings"]
    get = lambda case, who, key="gb_per_s": summary(by[case][who])[key] if by.get(case, {}).get(who) else None  # noqa: E731
    ratio = lambda a, b: a / b if a is not None and b else None  # noqa: E731
    rows = []

    def add(case, target, value, ok, shown):
        rows.append((case, target, shown if value is not None else "not run", "-" if value is None else ("met" if ok(value) else "missed")))

    r1 = ratio(get("hit 64KiB x16", "shardcache", "req_per_s"), get("hit 64KiB x16", "nginx", "req_per_s"))
    r2 = ratio(get("hit 64KiB x16", "shardcache", "req_per_s"), get("hit 64KiB x16", "cachey", "req_per_s"))
    add("RAM hit, 64 KiB, 16 conns, req/s", ">= 1.0x nginx and >= 1.0x cachey", r1 and r2 and min(r1, r2),
        lambda v: v >= 1.0, f"{fmt(r1)}x nginx, {fmt(r2)}x cachey")
    trust = "trust: hit 64KiB x16 (auth, audit, lineage)"
    open_rps = get(trust, "shardcache", "req_per_s")
    r1 = ratio(get(trust, "shardcache+auth", "req_per_s"), open_rps)
    r2 = ratio(get(trust, "shardcache+auth+audit+lineage", "req_per_s"), open_rps)
    add("RAM hit, 64 KiB, 16 conns, SigV4 + policy", ">= 0.95x the same hits without auth", r1,
        lambda v: v >= 0.95, f"{fmt(r1)}x without auth (with audit of every request and lineage: {fmt(r2)}x)")
    sc16 = get("hit 16MiB x16", "shardcache")
    r1, r2 = ratio(sc16, ceil.get("iperf3 16 streams")), ratio(sc16, get("hit 16MiB x16", "cachey"))
    add("RAM hit, 16 MiB, 16 conns, GB/s", ">= 0.95x iperf3 16 streams, >= 1.0x cachey",
        r1 and r2 and min(r1 / 0.95, r2), lambda v: v >= 1.0, f"{fmt(r1)}x iperf3, {fmt(r2)}x cachey")
    sc1g = get("hit 1GiB x1", "shardcache")
    r1, r2 = ratio(sc1g, ceil.get("iperf3 1 streams")), ratio(sc1g, get("hit 1GiB x1", "nginx"))
    add("RAM hit, 1 GiB, 1 stream, GB/s", ">= 0.9x iperf3 1 stream, >= 1.0x nginx",
        r1 and r2 and min(r1 / 0.9, r2), lambda v: v >= 1.0, f"{fmt(r1)}x iperf3, {fmt(r2)}x nginx")
    r = ratio(get("disk hit 16MiB x16", "shardcache"), ceil.get("fio io_uring O_DIRECT sequential read"))
    add("disk hit, 16 MiB, GB/s", ">= 0.9x fio io_uring O_DIRECT", r, lambda v: v >= 0.9, f"{fmt(r)}x fio")
    per_gib = lambda case: median([cpu_per_gib(r) for r in by.get(case, {}).get("shardcache", [])])  # noqa: E731
    for case in ("disk hit 16MiB x16", "disk range 1MiB of 16MiB x16", "disk cold 16MiB x4"):
        none = f"{case}, encryption none"
        r = ratio(get(case, "shardcache"), get(none, "shardcache"))
        add(f"{case}, encrypted", ">= 0.9x encryption none", r, lambda v: v >= 0.9,
            f"{fmt(r)}x not encrypted; CPU-s per GiB {fmt(per_gib(case))} against {fmt(per_gib(none))}")
    ranges = "disk range 1MiB of 16MiB x16"
    p99, p99_none = get(ranges, "shardcache", "ttfb_p99"), get(f"{ranges}, encryption none", "shardcache", "ttfb_p99")
    add("disk range, 1 MiB of 16 MiB, 16 readers, encrypted: TTFB p99", "<= 5 ms", p99, lambda v: v <= 5.0,
        f"{fmt(p99)} ms (not encrypted {fmt(p99_none)} ms; the same ranges in the memory tier's hit case "
        f"{fmt(get('hit random 1MiB ranges of 16MiB x16', 'shardcache', 'ttfb_p99'))} ms)")
    r = ratio(get("cold 1GiB x1", "shardcache"), get("cold 1GiB x1", "upstream"))
    rn = ratio(get("cold 1GiB x1", "nginx"), get("cold 1GiB x1", "upstream"))
    rm = ratio(get("cold 1GiB x1, memory-only tier", "shardcache"), get("cold 1GiB x1", "upstream"))
    add("cold miss, 1 GiB, 1 stream", ">= 0.9x direct upstream", r, lambda v: v >= 0.9,
        f"{fmt(r)}x upstream (nginx {fmt(rn)}x; shardcache memory-only {fmt(rm)}x)")
    sc_p99 = get("cold 1MiB x1 (64 objects)", "shardcache", "ttfb_p99")
    up_p99 = get("cold 1MiB x1 (64 objects)", "upstream", "ttfb_p99")
    d = sc_p99 - up_p99 if sc_p99 is not None and up_p99 is not None else None
    add("cold miss TTFB p99", "<= direct upstream + 2 ms", d, lambda v: v <= 2.0,
        f"{fmt(sc_p99)} ms vs {fmt(up_p99)} ms (+{fmt(d)} ms)")
    one, many = "remote cold 1GiB x1", "remote cold 16MiB x8 (64 objects)"
    sc = get(one, "shardcache")
    r16, r5, r5c = ratio(sc, get(one, "upstream x16")), ratio(sc, get(one, "s5cmd")), ratio(sc, get(one, "s5cmd -c16"))
    add("cold 1 GiB, 1 client, remote upstream", ">= 0.8x the origin's 16 connections, >= 1.0x s5cmd cp",
        r16 and r5 and min(r16 / 0.8, r5), lambda v: v >= 1.0,
        f"{fmt(r16)}x the origin x16, {fmt(r5)}x s5cmd ({fmt(r5c)}x s5cmd -c16 -p8; "
        f"{fmt(ratio(sc, get(one, 'upstream')))}x one connection)")
    fetched = [ratio(r.get("upstream_bytes"), get(c, "upstream", "upstream_mib") * MiB)
               for c in (one, many) for r in by.get(c, {}).get("shardcache", [])]
    worst = max((f for f in fetched if f is not None), default=None)
    add("cold reads from the remote upstream, bytes fetched", "<= 1.00x the bytes read (none fetched twice)",
        worst, lambda v: v <= 1.0, f"{fmt(worst, 3)}x at most over the rounds")
    r = ratio(get(many, "shardcache"), get(many, "upstream"))
    add("cold 64 x 16 MiB, 8 readers, remote upstream", ">= 1.0x the origin read directly", r, lambda v: v >= 1.0,
        f"{fmt(r)}x the origin (nginx {fmt(ratio(get(many, 'nginx'), get(many, 'upstream')))}x, "
        f"cachey {fmt(ratio(get(many, 'cachey'), get(many, 'upstream')))}x)")
    burst = [c for c in by if c.startswith("cold burst")]
    if burst:
        run = by[burst[0]].get("shardcache", [None])[0]
        r = run["upstream_bytes"] / run["object_bytes"] if run else None
        add("64 concurrent cold readers of one object", "upstream bytes <= 1.02x object", r, lambda v: v <= 1.02,
            f"{fmt(r, 3)}x object size")
    if by.get("epochs", {}).get("shardcache"):
        e = by["epochs"]["shardcache"][0]["epochs"]
        speedup = e[1]["gb_per_s"] / e[0]["gb_per_s"]
        au = min(x["accelerator_utilization"] for x in e[1:])
        add("epochs 2+ of the training simulation (remote upstream)", "accelerator utilization >= 90%",
            au, lambda v: v >= 0.9, f"AU {100 * au:.1f}% (epoch 2 at {speedup:.2f}x epoch 1)")
    for suffix, label in (("", ""), (", 16 MiB write queue", ", write_queue_bytes 16 MiB")):
        rss = by.get(f"stream 10GiB twice (256 MiB memory tier{suffix})", {}).get("shardcache")
        if rss:
            over = rss[0]["peak_rss_bytes"] / MiB - 256
            add(f"peak RSS while streaming 10 GiB{label}", "<= memory tier + 64 MiB", over, lambda v: v <= 64,
                f"memory tier + {over:.0f} MiB")
    idle = data.get("shardcache_idle_cpu_fraction")
    add("idle CPU", "~0 (no busy polling)", idle, lambda v: v < 0.01, f"{100 * idle:.2f}% of a core" if idle is not None else "")
    cluster = "cluster: 3 nodes read one dataset"
    if by.get(cluster, {}).get("3 nodes, cluster"):
        share = median([r["upstream_over_dataset"] for r in by[cluster]["3 nodes, cluster"]])
        alone = median([r["upstream_over_dataset"] for r in by[cluster]["3 nodes, independent"]])
    else:
        share = alone = None
    add("Cluster, 3 nodes, one dataset", "upstream bytes <= 1.02x the dataset", share, lambda v: v <= 1.02,
        f"{fmt(share, 3)}x (3 independent nodes: {fmt(alone, 3)}x)")
    sweep = {(r["ratio"], r["order"]): r for r in by.get("sweep", {}).get("shardcache", [])}
    for ratio in (1.25, 1.5, 2.0, 3.0):
        for order in ("same", "shuffled"):
            r = sweep.get((ratio, order))
            later = later_share(r) if r else None
            bound = r["bound"] if r else None
            target, met = ("<= 0.40", lambda v: v <= 0.40) if ratio == 1.5 else \
                ("within 0.07 of 1 - C/D", lambda v, b=bound: v - b <= 0.07)
            add(f"dataset {ratio}x the disk tier, {order} order: upstream share, epochs 2-4", target, later, met,
                f"{fmt(later)} (bound {fmt(bound)})")
    return rows


def later_share(row):
    """The share of the dataset the upstream served in epochs 2 onward, averaged."""
    later = row["epoch_shares"][1:]
    return sum(later) / len(later)


SWEEP_METHOD = (
    "Datasets of one-chunk shards (1 MiB) from half to three times a 64 MiB disk tier (47 chunk slots), "
    "read for four epochs by one client in the same order every epoch and reshuffled every epoch "
    "(`benches/sweep.py`); the share of the dataset the origin served in each epoch, from its access log. "
    "LRU is a least-recently-used cache of 47 slots replayed on the same reads. nginx proxy_cache "
    "(max_size 47m) is measured too, but its cache manager trims the cache only when it wakes, at most every "
    "10 s, and these epochs take under a second: it holds the whole dataset, so it is not an LRU of this "
    "size here. The bound: from the second epoch on, no cache of C slots serves more than C of D shards."
)


def sweep_table(contenders):
    """Per ratio and order: each contender's upstream share per epoch, and the bound."""
    lines = ["| dataset / disk tier | order | bound, epochs 2+ | shardcache, per epoch | LRU (replayed), per epoch "
             "| nginx proxy_cache, per epoch (see above) |", "|---|---|---|---|---|---|"]
    rows = {(r["ratio"], r["order"], r["contender"]): r for rs in contenders.values() for r in rs}
    for ratio, order in sorted({(k[0], k[1]) for k in rows}):
        cells = []
        for name in ("shardcache", "LRU", "nginx"):
            r = rows.get((ratio, order, name))
            cells.append(" / ".join(f"{s:.2f}" for s in r["epoch_shares"]) if r else "-")
        bound = next(r["bound"] for k, r in rows.items() if k[:2] == (ratio, order))
        lines.append(f"| {ratio}x | {order} | {bound:.2f} | {cells[0]} | {cells[1]} | {cells[2]} |")
    return "\n".join(lines)


def sweep_plot(contenders):
    """An SVG per order: the upstream share of epochs 2-4 by dataset / disk tier ratio, for each
    contender and the bound 1 - C/D."""
    rows = [r for rs in contenders.values() for r in rs]
    ratios = sorted({r["ratio"] for r in rows})
    w, h, left, top, gap = 300, 200, 50, 30, 70
    x = lambda v: left + w * (v - ratios[0]) / (ratios[-1] - ratios[0])  # noqa: E731
    y = lambda v: top + h * (1 - v)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * (left + w) + gap}" height="{top + h + 60}" '
           'font-family="sans-serif" font-size="10">']
    for i, order in enumerate(("same", "shuffled")):
        dx = i * (left + w + gap)
        out.append(f'<text x="{dx + left}" y="14" font-weight="bold">{order} order each epoch: '
                   'upstream share, epochs 2-4</text>')
        for t in (0, 0.25, 0.5, 0.75, 1):
            out.append(f'<line x1="{dx + left}" y1="{y(t):.1f}" x2="{dx + left + w}" y2="{y(t):.1f}" stroke="#ddd"/>'
                       f'<text x="{dx + left - 4}" y="{y(t) + 3:.1f}" text-anchor="end">{t:g}</text>')
        for r in ratios:
            out.append(f'<text x="{dx + x(r):.1f}" y="{top + h + 14}" text-anchor="middle">{r:g}x</text>')
        out.append(f'<text x="{dx + left + w / 2}" y="{top + h + 30}" text-anchor="middle">dataset / disk tier</text>')
        series = [(name, color, "", {r["ratio"]: later_share(r) for r in contenders.get(name, [])
                                     if r["order"] == order})
                  for name, color in (("shardcache", COLORS["shardcache"]), ("LRU", COLORS["nginx"]))]
        # The bound last, on top: where shardcache reaches it the two lines are one.
        series.append(("bound 1 - C/D", "#000", "4 3", {r["ratio"]: r["bound"] for r in rows if r["order"] == order}))
        for j, (name, color, dash, points) in enumerate(series):
            pts = " ".join(f"{dx + x(k):.1f},{y(v):.1f}" for k, v in sorted(points.items()))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2" '
                       f'stroke-dasharray="{dash}"/>')
            out.append(f'<line x1="{dx + left + 90 * j}" y1="{top + h + 45}" x2="{dx + left + 90 * j + 14}" '
                       f'y2="{top + h + 45}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>'
                       f'<text x="{dx + left + 90 * j + 18}" y="{top + h + 48}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


COLORS = {"upstream": "#8c8c8c", "shardcache": "#d9480f", "shardcache+auth": "#f08c00",
          "shardcache+auth+audit+lineage": "#fab005", "nginx": "#1c7ed6", "cachey": "#37b24d"}


def peer_table(by):
    """Each case with peers: shardcache's median throughput over the faster peer's (nginx or
    cachey, by median), the range of the per-round ratios to that peer, and CPU seconds per GiB
    served of both (medians)."""
    lines = ["| case | best peer | shardcache / best peer, medians | per-round ratios, min-max "
             "| CPU-s per GiB: shardcache / peer |", "|---|---|---|---|---|"]
    for case, contenders in by.items():
        peers = [p for p in ("nginx", "cachey") if p in contenders]
        if "shardcache" not in contenders or not peers or not summary(contenders["shardcache"])["gb_per_s"]:
            continue
        best = max(peers, key=lambda p: summary(contenders[p])["gb_per_s"] or 0)
        ours, theirs = contenders["shardcache"], contenders[best]
        ratio = summary(ours)["gb_per_s"] / summary(theirs)["gb_per_s"]
        rounds = {r["round"]: r["gb_per_s"] for r in theirs}
        per_round = [r["gb_per_s"] / rounds[r["round"]] for r in ours if rounds.get(r["round"])]
        lines.append(f"| {case} | {best} | {ratio:.2f} | {min(per_round):.2f}-{max(per_round):.2f} "
                     f"| {fmt(median([cpu_per_gib(r) for r in ours]))} / {fmt(median([cpu_per_gib(r) for r in theirs]))} |")
    return lines


def plot(by):
    """An SVG of every case that has a throughput: GB/s (left) and TTFB p99 (right, log scale),
    one bar per contender, medians over the rounds."""
    cases = [c for c in by if c not in ("epochs", "cluster: 3 nodes read one dataset", "sweep")
             and any(summary(r)["gb_per_s"] for r in by[c].values())]
    names = [n for n in ORDER if any(n in by[c] for c in cases)]
    bar, gap, label_w, panel_w = 9, 10, 330, 300
    rows = [(c, n) for c in cases for n in names if n in by[c]]
    height = 40 + len(rows) * bar + len(cases) * gap + 30
    gb_max = max(summary(by[c][n])["gb_per_s"] or 0 for c, n in rows)
    p99s = [summary(by[c][n])["ttfb_p99"] for c, n in rows]
    lo, hi = math.log10(0.05), math.log10(max(p or 0.05 for p in p99s) * 1.2)
    x_gb = lambda v: label_w + panel_w * v / gb_max  # noqa: E731
    x_ms = lambda v: label_w + panel_w + 60 + panel_w * (math.log10(max(v, 0.05)) - lo) / (hi - lo)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + 2 * panel_w + 80}" height="{height}" '
           'font-family="sans-serif" font-size="10">',
           f'<text x="{label_w}" y="14" font-weight="bold">throughput, GB/s</text>',
           f'<text x="{label_w + panel_w + 60}" y="14" font-weight="bold">TTFB p99, ms (log scale)</text>']
    for i, n in enumerate(names):
        out.append(f'<rect x="{label_w + 90 * i}" y="20" width="10" height="10" fill="{COLORS.get(n, "#000")}"/>'
                   f'<text x="{label_w + 90 * i + 14}" y="29">{n}</text>')
    y = 40
    for c in cases:
        out.append(f'<text x="{label_w - 6}" y="{y + bar * len(by[c]) / 2 + 4}" text-anchor="end">{c}</text>')
        for n in names:
            if n not in by[c]:
                continue
            s = summary(by[c][n])
            color = COLORS.get(n, "#000")
            if s["gb_per_s"]:
                out.append(f'<rect x="{label_w}" y="{y}" width="{x_gb(s["gb_per_s"]) - label_w:.1f}" '
                           f'height="{bar - 1}" fill="{color}"/>')
            if s["ttfb_p99"]:
                out.append(f'<rect x="{label_w + panel_w + 60}" y="{y}" '
                           f'width="{x_ms(s["ttfb_p99"]) - label_w - panel_w - 60:.1f}" height="{bar - 1}" fill="{color}"/>')
            y += bar
        y += gap
    ticks = [(x_gb(v), f"{v:.1f}") for v in (0, gb_max / 2, gb_max)]
    ticks += [(x_ms(10.0 ** e), f"{10.0 ** e:g}") for e in range(math.ceil(lo), math.floor(hi) + 1)]
    # Grid lines first, under the bars.
    out[1:1] = [f'<line x1="{x:.1f}" y1="36" x2="{x:.1f}" y2="{y}" stroke="#ddd"/>'
                f'<text x="{x:.1f}" y="{y + 12}" text-anchor="middle">{text}</text>' for x, text in ticks]
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render(data):
    by = grouped(data["runs"])
    m = data["machine"]
    out = [
        "# Benchmarks",
        "",
        "Produced by `benches/run.sh` (method in its docstring: `benches/run.py`), rendered from",
        "[benches/results.json](benches/results.json) by `benches/report.py`. Re-run with one command:",
        "",
        "```sh",
        data["command"],
        "```",
        "",
        f"**Machine:** {m['cpus']} vCPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}; "
        "everything on loopback on the same machine (client, caches, origin), so the load client and the "
        "contender share the 2 cores.",
        "",
        f"**Method:** {data['rounds']} round(s); in each round every case runs once per contender, in an order "
        "that rotates between rounds. Tables show the median over rounds (throughput also min-max). Client: "
        "`benches/loadgen` (Rust, hyper, 2 threads, keep-alive; TTFB = first body byte). Upstream figures "
        "come from the origin's access log; CPU and peak RSS from /proc for the contender's processes "
        "(nginx: master and workers); client CPU is the load client's own (rusage), so each run's CPU "
        "shows what the client took of the two cores. Hits are measured after an unmeasured pass over "
        "their set in the same round (the round before read cold data through the same caches).",
        "",
        "**Contenders:** `upstream` = the origin itself (nginx serving the files as `/bucket/key`; also the "
        "\"nginx static\" ceiling); `shardcache` (release build, 2 worker threads, a 2.5 GiB memory tier "
        "in the main rounds, whose three quarters for cached chunks hold every hit set, 2 GiB elsewhere); "
        "`nginx` = nginx proxy_cache with proxy_cache_lock and 8 MiB slices (`benches/peers/nginx-cache.conf`); "
        "`cachey` 0.13 (the same memory, same disk). The \"remote\" cases and the epochs read the origin's "
        "remote port (30 ms to the first byte, 80 MiB/s per connection, `benches/remote.py`), where "
        "`upstream x16` is the origin read with 16 connections of 8 MiB ranges and `s5cmd` its `cp`.",
        "",
        *[f"Cases starting with \"{r['only']}\" were re-run on {r['date']} with `{r['command']}`; the rest "
          "come from the run above." for r in data.get("reruns", [])],
        "",
        "## Ceilings",
        "",
        "| ceiling | GB/s |",
        "|---|---|",
    ]
    out += [f"| {k} | {v:.3f} |" for k, v in data["ceilings"].items()]
    out += ["", "## Targets", "", "| case | target | measured (same run) | |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(data, by)]
    out += ["", "## Against the best peer", "", *peer_table(by)]
    out += ["", "## Results by case", "", "![throughput and TTFB p99 by case](benches/results.svg)", ""]
    for case in by:
        out += [f"### {case}", ""]
        if case == "epochs":
            table = epoch_table(by[case])
        elif case == "cluster: 3 nodes read one dataset":
            table = cluster_table(by[case])
        elif case == "sweep":
            table = SWEEP_METHOD + "\n\n![upstream share by dataset size](benches/sweep.svg)\n\n" + sweep_table(by[case])
        else:
            table = case_table(by[case], loopback_ceiling(data, case))
        out += [table, ""]
    return "\n".join(out)


def main():
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benches" / "results.json"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "BENCHMARKS.md"
    data = json.loads(results.read_text())
    text = render(data)
    notes = ROOT / "benches" / "NOTES.md"
    if notes.exists():
        text += "\n" + notes.read_text()
    target.write_text(text + "\n")
    by = grouped(data["runs"])
    svg = target.parent / "benches" / "results.svg"
    svg.write_text(plot(by))
    if "sweep" in by:
        (target.parent / "benches" / "sweep.svg").write_text(sweep_plot(by["sweep"]))
    print(f"wrote {target} and {svg}")


if __name__ == "__main__":
    main()

"""shardcache's /metrics, read by the client checks: each `shardcache_*` series and its value."""
import urllib.request


def metrics(admin):
    """{series: value} of every `shardcache_*` sample on ADMIN's /metrics."""
    text = urllib.request.urlopen(f"{admin}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("shardcache_"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out

"""The kit's cluster case (benches/run.py calls it): three shardcache nodes on 127.0.0.1, .2 and
.3, each read the whole dataset at once by its own client, as three training nodes do.

Two contenders, side by side in each round, each with fresh caches:

  3 nodes, independent   three shardcache processes, no cluster: each fetches the dataset
  3 nodes, cluster       the same three in cluster mode (static peer list): each chunk is fetched
                         once, by its owner, and the other nodes get it from the owner

Per contender: upstream bytes over the dataset's size (the origin's access log), aggregate
throughput (bytes the three clients received over the time until the last finished), and each
node's client figures. Each node has a 1 GiB memory tier and its own disk tier (O_DIRECT,
encrypted, as by default).
"""
import json
import subprocess
import time

import kit

CASE = "cluster: 3 nodes read one dataset"
NODES = 3
CONNECTIONS = 4  # per node's client
SECRET_NAME = "cluster-secret"


def start(label, upstream_port):
    """Three nodes (in cluster mode if `label` is "cluster"): (host, contender) for each."""
    secret = kit.WORK / SECRET_NAME
    secret.write_text("a benchmark cluster secret, at least thirty-two bytes long\n")
    peers = [kit.free_port() for _ in range(NODES)]
    nodes = []
    for i in range(NODES):
        host = f"127.0.0.{i + 1}"
        extra = ""
        if label == "cluster":
            members = "".join(f"    - {{id: node-{j}, address: \"127.0.0.{j + 1}:{port}\"}}\n"
                              for j, port in enumerate(peers))
            extra = (f"cluster:\n  node: node-{i}\n  listen: {host}:{peers[i]}\n"
                     f"  secret_file: {secret}\n  peers:\n{members}")
        node = kit.start_shardcache(f"{label}-{i}", upstream_port, kit.GiB, kit.WORK / f"{label}-{i}-cache",
                                    extra=extra, host=host, capacity=4 * kit.GiB)
        nodes.append((host, node))
    return nodes


def run(origin, shards):
    """Both contenders once: a list of (contender name, result)."""
    dataset = sum(size for _, size in shards)
    out = []
    for label, name in (("independent", "3 nodes, independent"), ("cluster", "3 nodes, cluster")):
        nodes = start(label, origin.port)
        try:
            paths = kit.WORK / "paths-cluster.txt"
            paths.write_text("".join(f"/bench/{key} {size}\n" for key, size in shards))
            mark = origin.mark()
            started = time.monotonic()
            clients = [subprocess.Popen([str(kit.LOADGEN), "get", "--addr", f"{host}:{n.port}", "--paths", str(paths),
                                         "--connections", str(CONNECTIONS), "--requests", str(len(shards))],
                                        stdout=subprocess.PIPE, text=True) for host, n in nodes]
            per_node = []
            for c in clients:
                stdout, _ = c.communicate(timeout=900)
                if c.returncode != 0:
                    raise SystemExit(f"loadgen failed in the cluster case: {stdout}")
                per_node.append(json.loads(stdout))
            elapsed = time.monotonic() - started
            time.sleep(1.0)  # let the origin log the last responses
            requests, body = origin.since(mark)
            received = sum(r["bytes"] for r in per_node)
            out.append((name, {
                "gb_per_s": received / elapsed / 1e9,
                "req_per_s": sum(r["requests"] for r in per_node) / elapsed,
                "upstream_requests": requests,
                "upstream_bytes": body,
                "dataset_bytes": dataset,
                "upstream_over_dataset": body / dataset,
                "nodes": [{"gb_per_s": r["gb_per_s"], "ttfb": r["ttfb"], "latency": r["latency"],
                           "errors": r.get("errors", 0)} for r in per_node],
                "errors": sum(r.get("errors", 0) for r in per_node),
            }))
        finally:
            for _, n in nodes:
                for p in n.procs:
                    p.stop()
    return out

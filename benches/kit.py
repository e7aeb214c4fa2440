"""The benchmark kit's machinery, shared by its cases (benches/run.py and the case modules
beside it): paths, processes stopped by PID, the test data, the origin (nginx), the contenders
(shardcache, nginx proxy_cache, cachey) and the load client.
"""
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
DATA = WORK / "data"
LOADGEN = ROOT / "target" / "release" / "examples" / "loadgen"
CEILING = ROOT / "target" / "release" / "examples" / "ceiling"
SHARDCACHE = ROOT / "target" / "release" / "shardcache"
CACHEY = ROOT / "target" / "bench-tools" / "bin" / "server"  # cachey installs its binary as `server`
PEERS = ROOT / "benches" / "peers"
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
USER = os.environ.get("USER") or "root"
MEMORY_TIER = 2 * GiB  # each cache's RAM tier: holds any one hit set (the biggest is 1 GiB)
# The RAM tier of the hit cases' caches (shardcache and cachey, one process each for every
# case): every hit set (about 1.6 GiB) must fit in the part shardcache keeps for cached chunks,
# three quarters of it (a quarter is room for chunks being fetched). At 2 GiB they did not, and
# mid-size "hits" came from its disk tier.
HIT_TIER = 5 * GiB // 2
CLUSTER_SHARDS = 32  # the cluster case's dataset: 2 GiB of shards, read by each of three nodes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log, timeout=30, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{log} exited:\n{Path(log).read_text()[-2000:]}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened; see {log}")


# --- processes -------------------------------------------------------------------------------

class Proc:
    """A process we started (and, for nginx, its workers), stopped by PID."""

    def __init__(self, name, argv, log, env=None):
        self.name, self.log = name, log
        self.proc = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def pids(self):
        pids = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(c) for c in children]
        except OSError:
            pass
        return pids

    def cpu_seconds(self):
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except OSError:
                pass
        return total / CLK_TCK

    def reset_peak_rss(self):
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def peak_rss(self):
        total = 0
        for pid in self.pids():
            try:
                m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
                total += int(m.group(1)) * KiB
            except (OSError, AttributeError):
                pass
        return total

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- data ------------------------------------------------------------------------------------

def write_random(path, size):
    if path.exists() and path.stat().st_size == size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def write_shard(path, size, member=MiB):
    """A WebDataset-style tar: samples of (.bin, .cls) members."""
    if path.exists() and path.stat().st_size >= size - 4 * member:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(size // (member + 2 * 512 + 512)):
            for ext, data in (("bin", os.urandom(member)), ("cls", str(i % 1000).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


class Dataset:
    def __init__(self, quick):
        self.sets = {
            "64KiB": [(f"small/obj-{i:04d}", 64 * KiB) for i in range(256)],
            "1MiB": [(f"mid/obj-{i:03d}", MiB) for i in range(64)],
            "16MiB": [(f"big/obj-{i:02d}", 16 * MiB) for i in range(16 if quick else 32)],
            "1GiB": [("huge/obj-0", (256 * MiB) if quick else GiB)],
        }
        self.shards = [f"shards/shard-{i:03d}.tar" for i in range(16 if quick else 64)]
        self.shard_size = 64 * MiB

    def build(self):
        bucket = DATA / "bench"
        for objects in self.sets.values():
            for key, size in objects:
                write_random(bucket / key, size)
        for key in self.shards:
            write_shard(bucket / key, self.shard_size)
        self.shard_sizes = {k: (bucket / k).stat().st_size for k in self.shards}

    def cold_copies(self, label, objects):
        """Fresh names (hard links) for objects, so every cache sees them cold."""
        out = []
        for key, size in objects:
            name = f"cold/{label}/{key.replace('/', '-')}"
            target = DATA / "bench" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(DATA / "bench" / key, target)
            out.append((name, size))
        return out


# --- contenders ------------------------------------------------------------------------------

class Contender:
    def __init__(self, name, port, procs, prefix="", headers=(), whole_range=False):
        self.name, self.port, self.procs = name, port, procs
        self.prefix, self.headers, self.whole_range = prefix, list(headers), whole_range

    def paths_file(self, objects, bucket="bench"):
        path = WORK / f"paths-{self.name}.txt"
        path.write_text("".join(f"{self.prefix}/{bucket}/{key} {size}\n" for key, size in objects))
        return path

    def loadgen_target(self, objects, bucket="bench"):
        args = ["--addr", f"127.0.0.1:{self.port}", "--paths", str(self.paths_file(objects, bucket))]
        for h in self.headers:
            args += ["--header", h]
        if self.whole_range:
            args.append("--whole-range")
        return args


# The remote origin: what one connection to a distant object store gets.
REMOTE_RATE = "80m"  # nginx limit_rate per connection: 80 MiB/s
REMOTE_DELAY = 0.03  # seconds before each answer's first byte


def echo_module():
    """Where this nginx keeps its dynamic modules' echo module (Debian's libnginx-mod-http-echo)."""
    out = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
    m = re.search(r"--modules-path=(\S+)", out)
    module = Path(m.group(1) if m else "modules") / "ngx_http_echo_module.so"
    if not module.exists():
        sys.exit(f"{module} missing: benches/run.sh installs libnginx-mod-http-echo")
    return module


class Origin:
    """nginx serving DATA as /bucket/key, and the same files as a remote store on a second port
    (`remote_port`: REMOTE_DELAY to the first byte, REMOTE_RATE per connection)."""

    def __init__(self):
        self.port, self.remote_port = free_port(), free_port()
        self.log = WORK / "origin-access.log"
        self.log.write_text("")
        conf = render_conf("nginx-origin.conf", ORIGIN_PORT=self.port, REMOTE_PORT=self.remote_port,
                           REMOTE_RATE=REMOTE_RATE, REMOTE_DELAY=REMOTE_DELAY, ECHO_MODULE=echo_module(),
                           DATA=DATA, ACCESS_LOG=self.log, USER=USER)
        self.proc = start_nginx("origin", conf)
        wait_port(self.port, self.proc.proc, self.proc.log)

    def mark(self):
        return self.log.stat().st_size

    def since(self, mark):
        """(requests, body bytes) the origin served since `mark`. A mark can fall inside a line:
        the kernel extends a file page by page, so a line written across a page boundary can be
        seen half-written. That line was logged before the mark, and its tail is skipped."""
        with open(self.log, "rb") as f:
            f.seek(max(mark - 1, 0))
            text = f.read().decode()
        if mark > 0:
            text = text[1:] if text.startswith("\n") else text.partition("\n")[2]
        lines = [l for l in text.splitlines() if l.strip()]
        return len(lines), sum(int(l.split()[1]) for l in lines)


def render_conf(template, **values):
    text = (PEERS / template).read_text()
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", str(v))
    if "{{" in text:
        sys.exit(f"{template}: unfilled placeholder")
    out = WORK / template
    out.write_text(text)
    return out


def start_nginx(name, conf):
    prefix = WORK / f"nginx-{name}"
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)
    return Proc(f"nginx-{name}", ["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                WORK / f"nginx-{name}.log")


def start_shardcache(name, upstream_port, memory, disk_dir, write_queue=None, extra="", disk_extra="",
                     host="127.0.0.1", capacity=24 * GiB, chunk_size=None, cache_extra=""):
    """shardcache on `host` with its default disk settings (O_DIRECT, encrypted) and `capacity`,
    or memory only if `disk_dir` is None; `write_queue` overrides cache.disk.write_queue_bytes;
    `extra` is appended to the config, `disk_extra` to its cache.disk section, `cache_extra` (keys
    of one line each) to its cache section; `chunk_size` overrides cache.chunk_size."""
    s3_port, admin_port = free_port(), free_port()
    disk = "\n  disk: null"
    if disk_dir is not None:
        if disk_dir.exists():
            shutil.rmtree(disk_dir)
        disk = f"""
  disk:
    path: {disk_dir}
    capacity_bytes: {capacity}"""
        if write_queue is not None:
            disk += f"\n    write_queue_bytes: {write_queue}"
        if disk_extra:
            disk += f"\n    {disk_extra}"
    conf = WORK / f"{name}.yaml"
    conf.write_text(f"""listen: {host}:{s3_port}
admin_listen: {host}:{admin_port}
threads: 2
grace_period_seconds: 0
cache:
  memory_bytes: {memory}{f"{chr(10)}  chunk_size: {chunk_size}" if chunk_size else ""}{"".join(f"{chr(10)}  {k}" for k in cache_extra.splitlines())}{disk}
upstreams:
  origin:
    kind: s3
    endpoint: http://127.0.0.1:{upstream_port}
    credentials: {{source: anonymous}}
buckets:
  - {{name: bench, upstream: origin, immutable: true}}
{extra}""")
    proc = Proc(name, [str(SHARDCACHE), "serve", "--config", str(conf)], WORK / f"{name}.log",
                env={"SHARDCACHE_LOG": "warn", **os.environ})
    wait_port(admin_port, proc.proc, proc.log, host=host)
    return Contender("shardcache", s3_port, [proc])


# The trust case: the same 64 KiB hits with client authentication (every request a presigned URL,
# verified, then checked against the policy), and with the audit log (every request) and lineage
# on top. Presigned URLs keep the signing off the load client: each path is signed once, ahead.
BENCH_KEY, BENCH_SECRET = "AKIDBENCH", "bench-secret"
AUTH_YAML = f"""auth:
  keys:
    - {{access_key_id: {BENCH_KEY}, secret_access_key: {BENCH_SECRET}, principal: bench}}
  policy:
    - {{effect: allow, principals: [bench], actions: [GetObject], resources: ['bench/*']}}
"""


class PresignedContender(Contender):
    """A shardcache whose request paths are presigned URLs (valid for two hours), optionally
    tagged with a lineage job."""

    def __init__(self, name, base, job=None):
        super().__init__(name, base.port, base.procs)
        self.job = job

    def paths_file(self, objects, bucket="bench"):
        from botocore.auth import S3SigV4QueryAuth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        signer = S3SigV4QueryAuth(Credentials(BENCH_KEY, BENCH_SECRET), "s3", "us-east-1", expires=7200)
        lines = []
        for key, size in objects:
            query = f"?x-shardcache-job={self.job}" if self.job else ""
            req = AWSRequest(method="GET", url=f"http://127.0.0.1:{self.port}/{bucket}/{key}{query}")
            signer.add_auth(req)
            url = req.url.split(f"127.0.0.1:{self.port}", 1)[1]
            lines.append(f"{url} {size}\n")
        path = WORK / f"paths-{self.name}.txt"
        path.write_text("".join(lines))
        return path


def start_trust_contenders(upstream_port):
    """shardcache with auth, and with auth, the audit log and lineage (memory tier only, like
    the hit cases' working set)."""
    auth = start_shardcache("shardcache-auth", upstream_port, MEMORY_TIER, None, extra=AUTH_YAML)
    for old in WORK.glob("bench-audit.log*"):
        old.unlink()
    (WORK / "bench-lineage.redb").unlink(missing_ok=True)
    records = AUTH_YAML + f"""audit:
  requests: all
  file: {WORK / "bench-audit.log"}
  max_file_bytes: {256 * MiB}
  max_files: 1
lineage:
  path: {WORK / "bench-lineage.redb"}
"""
    full = start_shardcache("shardcache-audit", upstream_port, MEMORY_TIER, None, extra=records)
    return [PresignedContender("shardcache+auth", auth), PresignedContender("shardcache+auth+audit+lineage", full, "bench-job")]


def start_nginx_cache(upstream_port, max_size="24g", name="cache"):
    """nginx proxy_cache in front of the origin, empty, its cache at most `max_size`."""
    port = free_port()
    cache = WORK / f"nginx-{name}-data"
    if cache.exists():
        shutil.rmtree(cache)
    conf = render_conf("nginx-cache.conf", PORT=port, ORIGIN_PORT=upstream_port, CACHE=cache, USER=USER,
                       MAX_SIZE=max_size)
    proc = start_nginx(name, conf)
    wait_port(port, proc.proc, proc.log)
    return Contender("nginx", port, [proc])


def start_cachey(upstream_port, memory):
    """cachey (listens on all interfaces; only 127.0.0.1 gets traffic). Its S3 client takes the
    endpoint from AWS_ENDPOINT_URL; `C0-Config: fps=true` asks for path-style requests."""
    port = free_port()
    disk = WORK / "cachey-data"
    if disk.exists():
        shutil.rmtree(disk)
    disk.mkdir(parents=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{upstream_port}", "RUST_LOG": "warn"}
    argv = [str(CACHEY), "--port", str(port), "--memory", f"{memory // MiB}MiB",
            "--disk-path", str(disk), "--disk-capacity", f"{24 * GiB // MiB}MiB"]
    proc = Proc("cachey", argv, WORK / "cachey.log", env=env)
    wait_port(port, proc.proc, proc.log)
    return Contender("cachey", port, [proc], prefix="/fetch",
                     headers=["C0-Config: fps=true"], whole_range=True)


def start_caches(upstream_port):
    return [
        start_shardcache("shardcache", upstream_port, HIT_TIER, WORK / "shardcache-cache"),
        start_nginx_cache(upstream_port),
        start_cachey(upstream_port, HIT_TIER),
    ]


# --- measurement -----------------------------------------------------------------------------

def loadgen(args, timeout=900):
    """Runs the load client; its result, with the client's own CPU seconds (`client_cpu_seconds`:
    the rusage of the one child waited for meanwhile; every other child runs until stopped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([str(LOADGEN), *args], capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"loadgen {' '.join(args)} failed:\n{out.stderr}")
    result = json.loads(out.stdout)
    result["client_cpu_seconds"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def measure(contender, origin, args):
    """Runs loadgen `args` against `contender`, with the contender's CPU, peak RSS and the
    origin's traffic over the run."""
    for p in contender.procs:
        p.reset_peak_rss()
    cpu0 = sum(p.cpu_seconds() for p in contender.procs)
    mark = origin.mark()
    result = loadgen(args)
    time.sleep(1.0)  # let the origin log the last responses before reading its access log
    requests, body = origin.since(mark)
    result.update(
        cpu_seconds=sum(p.cpu_seconds() for p in contender.procs) - cpu0,
        peak_rss_bytes=sum(p.peak_rss() for p in contender.procs),
        upstream_requests=requests,
        upstream_bytes=body,
    )
    return result


def iperf3(streams, seconds, length=None):
    port = free_port()
    server = Proc("iperf3", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port), "-1"], WORK / "iperf3.log")
    # Not wait_port: a one-off iperf3 server would take the probe for its client.
    deadline = time.time() + 10
    while "listening" not in Path(server.log).read_text() and time.time() < deadline:
        time.sleep(0.05)
    write_size = ["-l", length] if length else []
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-P", str(streams),
                          *write_size, "-J"], capture_output=True, text=True, timeout=seconds + 30)
    server.stop()
    report = json.loads(out.stdout)
    return {"gb_per_s": report["end"]["sum_received"]["bits_per_second"] / 8 / 1e9}


def loopback(streams, seconds):
    """benches/ceiling: tokio sender/receiver pairs on loopback, 1 MiB writes, 2 threads."""
    out = subprocess.run([str(CEILING), "--streams", str(streams), "--seconds", str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 30)
    return json.loads(out.stdout)


def fio_read(directory, size):
    target = directory / "fio.dat"
    out = subprocess.run(["fio", "--name=read", f"--filename={target}", f"--size={size}", "--rw=read", "--bs=8m",
                          "--ioengine=io_uring", "--direct=1", "--iodepth=4", "--numjobs=1", "--output-format=json"],
                         capture_output=True, text=True, timeout=300)
    target.unlink(missing_ok=True)
    job = json.loads(out.stdout)["jobs"][0]["read"]
    return {"gb_per_s": job["bw_bytes"] / 1e9}


# --- cases -----------------------------------------------------------------------------------

def get_args(contender, objects, connections, seconds=None, requests=None, range_size=None, bucket="bench"):
    args = ["get", *contender.loadgen_target(objects, bucket), "--connections", str(connections)]
    if requests is not None:
        args += ["--requests", str(requests)]
    else:
        args += ["--duration", str(seconds)]
    if range_size:
        args += ["--range-size", str(range_size)]
    return args


def warm(contender, objects, bucket="bench"):
    """One unmeasured pass so that the objects are cached."""
    loadgen(get_args(contender, objects, min(8, len(objects)), requests=len(objects), bucket=bucket))

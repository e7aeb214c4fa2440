//! Test clusters: shardcache processes on 127.0.0.1, 127.0.0.2, ... in cluster mode, in front of
//! the test S3 server, and a dataset to read through them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{data, free_port, S3Server};

pub const CHUNK: u64 = 64 << 10;
/// The test clusters' secret.
pub const SECRET: &[u8] = b"a cluster secret of at least thirty-two bytes";

/// One shardcache process of a test cluster.
pub struct Node {
    pub s3: SocketAddr,
    pub admin: SocketAddr,
    pub peer: SocketAddr,
    child: Child,
    /// Its log, whose warnings a failing test prints.
    log: std::path::PathBuf,
}

impl Node {
    pub fn client(&self) -> aws_sdk_s3::Client {
        super::client(self.s3)
    }

    #[must_use]
    pub async fn metric(&self, prefix: &str) -> f64 {
        super::metric(self.admin, prefix).await
    }

    /// Waits until the node listens, on all three listeners.
    pub fn wait(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = |addr| std::net::TcpStream::connect(addr).is_ok();
        while !(listening(self.s3) && listening(self.admin) && listening(self.peer)) {
            assert!(Instant::now() < deadline, "a node did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the node places chunks over `n` members.
    pub async fn wait_members(&self, n: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric("shardcache_cluster_members").await != n {
            assert!(Instant::now() < deadline, "the node never saw {n} members");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` to the node's process.
    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    pub fn kill(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
        // A failing test shows what its nodes warned of (a peer timing out, a body cut): the
        // log is gone with the test's directory afterwards.
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let warned: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            eprintln!(
                "--- {} warned ({} lines, the last 40):",
                self.log.display(),
                warned.len()
            );
            for line in &warned[warned.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// The sum over `nodes` of a metric's samples whose line starts with `prefix`.
#[must_use]
pub async fn metric_sum(nodes: &[Node], prefix: &str) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        sum += node.metric(prefix).await;
    }
    sum
}

/// Starts `n` nodes on 127.0.0.1.. 127.0.0.n, each listing all of them and the `extra` members,
/// in front of `upstream`. Each logs to `node-<i>.log` in `dir`.
pub fn cluster(dir: &Path, upstream: SocketAddr, n: usize, extra: &[(&str, SocketAddr)]) -> Vec<Node> {
    let listed = |_: usize, peers: &[SocketAddr]| -> String {
        let members: String = peers
            .iter()
            .enumerate()
            .map(|(i, peer)| (format!("node-{i}"), *peer))
            .chain(extra.iter().map(|(id, addr)| (id.to_string(), *addr)))
            .map(|(id, peer)| format!("    - {{ id: {id}, address: \"{peer}\" }}\n"))
            .collect();
        format!("  peers:\n{members}")
    };
    cluster_with(dir, upstream, n, &listed)
}

/// Starts `n` nodes as [`cluster`] does, node `i`'s members being `members(i, peer listeners)`
/// (YAML lines of the `cluster` section).
pub fn cluster_with(
    dir: &Path,
    upstream: SocketAddr,
    n: usize,
    members: &dyn Fn(usize, &[SocketAddr]) -> String,
) -> Vec<Node> {
    let nodes: Vec<Node> = configure(dir, upstream, n, members)
        .into_iter()
        .map(Configured::spawn)
        .collect();
    nodes.iter().for_each(Node::wait);
    nodes
}

/// A node's config, written, and its addresses.
pub struct Configured {
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    pub s3: SocketAddr,
    pub admin: SocketAddr,
    pub peer: SocketAddr,
}

impl Configured {
    pub fn spawn(self) -> Node {
        self.spawn_with(&[])
    }

    /// Starts the node with `env` added to its environment.
    pub fn spawn_with(self, env: &[(&str, &str)]) -> Node {
        let log_file = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shardcache"))
            .envs(env.iter().copied())
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let (s3, admin, peer, log) = (self.s3, self.admin, self.peer, self.log);
        Node {
            s3,
            admin,
            peer,
            child,
            log,
        }
    }
}

/// Writes the configs of `n` nodes on 127.0.0.1.. 127.0.0.n, node `i`'s members being
/// `members(i, peer listeners)`; each will log to `node-<i>.log` in `dir`.
pub fn configure(
    dir: &Path,
    upstream: SocketAddr,
    n: usize,
    members: &dyn Fn(usize, &[SocketAddr]) -> String,
) -> Vec<Configured> {
    let memory =
        |_: usize| format!("  chunk_size: {CHUNK}\n  memory_bytes: 33554432\n  read_ahead_chunks: 2\n  disk: null\n");
    configure_cached(dir, upstream, n, members, &memory)
}

/// [`configure`], node `i`'s `cache` section being `cache(i)` (YAML lines under `cache:`).
pub fn configure_cached(
    dir: &Path,
    upstream: SocketAddr,
    n: usize,
    members: &dyn Fn(usize, &[SocketAddr]) -> String,
    cache: &dyn Fn(usize) -> String,
) -> Vec<Configured> {
    std::fs::write(dir.join("secret"), [SECRET, b"\n"].concat()).unwrap();
    let addr = |i: usize| -> SocketAddr { format!("127.0.0.{}:{}", i + 1, free_port()).parse().unwrap() };
    let spots: Vec<(SocketAddr, SocketAddr, SocketAddr)> = (0..n).map(|i| (addr(i), addr(i), addr(i))).collect();
    let peer_listeners: Vec<SocketAddr> = spots.iter().map(|s| s.2).collect();
    spots
        .iter()
        .enumerate()
        .map(|(i, &(s3, admin, peer))| {
            let yaml = format!(
                "listen: \"{s3}\"\nadmin_listen: \"{admin}\"\nthreads: 2\ngrace_period_seconds: 0\n\
                 graceful_shutdown_timeout_seconds: 1\n\
                 cache:\n{}\
                 upstreams:\n  up:\n    kind: s3\n    endpoint: http://{upstream}\n    credentials:\n      \
                 source: static\n      access_key_id: {}\n      secret_access_key: {}\n\
                 default_upstream: up\n\
                 cluster:\n  node: node-{i}\n  listen: \"{peer}\"\n  secret_file: {}\n  \
                 connect_timeout_ms: 200\n  read_timeout_ms: 2000\n{}",
                cache(i),
                super::ACCESS_KEY,
                super::SECRET_KEY,
                dir.join("secret").display(),
                members(i, &peer_listeners),
            );
            let config = dir.join(format!("node-{i}.yaml"));
            std::fs::write(&config, yaml).unwrap();
            let log = dir.join(format!("node-{i}.log"));
            Configured {
                config,
                log,
                s3,
                admin,
                peer,
            }
        })
        .collect()
}

/// The bytes of a framed peer answer `body` of `len` bytes under the header's `tag`, each
/// segment checked; `None` if any fails or the body is not whole.
pub fn unframe(tag: &str, body: &[u8], len: u64) -> Option<Vec<u8>> {
    let mut unframer = shardcache::cluster::auth::ClusterKey::new(SECRET).unframer(tag, len);
    unframer.push(body);
    let mut out = Vec::new();
    while unframer.check().ok()?.is_some() {
        out.extend_from_slice(unframer.segment());
    }
    unframer.whole().then_some(out)
}

/// The whole of `bucket/key` through `client`.
pub async fn read(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = client.get_object().bucket(bucket).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The ranges of the chunks of an object of `size` bytes, as its GETs name them.
pub fn chunk_ranges(size: u64) -> Vec<String> {
    (0..size.div_ceil(CHUNK))
        .map(|i| format!("bytes={}-{}", i * CHUNK, ((i + 1) * CHUNK).min(size) - 1))
        .collect()
}

/// Objects `shard-<i>.tar` (`count` of them, `size` bytes and a little more each) stored in
/// bucket `data` of `s3`, whose request log then starts empty.
pub async fn dataset(s3: &S3Server, count: u8, size: usize) -> Vec<(String, Vec<u8>)> {
    s3.bucket("data");
    let objects: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| (format!("shard-{i}.tar"), data(size + usize::from(i) * 7_000, i)))
        .collect();
    for (key, bytes) in &objects {
        s3.put("data", key, bytes.clone()).await;
    }
    s3.clear();
    objects
}

/// Checks that every chunk of `objects` was fetched from `s3` exactly once.
pub fn assert_fetched_once(s3: &S3Server, objects: &[(String, Vec<u8>)]) {
    for (key, bytes) in objects {
        let mut ranges: Vec<String> = s3
            .requests("GET", "data", key)
            .into_iter()
            .map(|r| r.range.unwrap_or_else(|| "whole".into()))
            .collect();
        ranges.sort();
        let mut want = chunk_ranges(bytes.len() as u64);
        want.sort();
        assert_eq!(ranges, want, "{key}: each chunk fetched from the upstream exactly once");
    }
}

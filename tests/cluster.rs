//! Cluster mode on one machine: shardcache processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 with
//! a static peer list, in front of a signature-checking S3 server that logs every ranged GET.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{data, free_port, S3Server};
use futures_util::future::join_all;

const CHUNK: u64 = 64 << 10;

/// One shardcache process of a test cluster.
struct Node {
    s3: SocketAddr,
    admin: SocketAddr,
    peer: SocketAddr,
    child: Child,
}

impl Node {
    fn client(&self) -> aws_sdk_s3::Client {
        common::client(self.s3)
    }

    async fn metric(&self, prefix: &str) -> f64 {
        common::metric(self.admin, prefix).await
    }

    fn kill(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

/// Starts `n` nodes on 127.0.0.1.. 127.0.0.n, each listing all of them and the `extra` members,
/// in front of `upstream`. Each logs to `node-<i>.log` in `dir`.
fn cluster(dir: &Path, upstream: SocketAddr, n: usize, extra: &[(&str, SocketAddr)]) -> Vec<Node> {
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
fn cluster_with(
    dir: &Path,
    upstream: SocketAddr,
    n: usize,
    members: &dyn Fn(usize, &[SocketAddr]) -> String,
) -> Vec<Node> {
    std::fs::write(dir.join("secret"), b"a cluster secret of at least thirty-two bytes\n").unwrap();
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
                 cache:\n  chunk_size: {CHUNK}\n  memory_bytes: 33554432\n  read_ahead_chunks: 2\n  disk: null\n\
                 upstreams:\n  up:\n    kind: s3\n    endpoint: http://{upstream}\n    credentials:\n      \
                 source: static\n      access_key_id: {}\n      secret_access_key: {}\n\
                 default_upstream: up\n\
                 cluster:\n  node: node-{i}\n  listen: \"{peer}\"\n  secret_file: {}\n  \
                 connect_timeout_ms: 200\n  read_timeout_ms: 2000\n{}",
                common::ACCESS_KEY,
                common::SECRET_KEY,
                dir.join("secret").display(),
                members(i, &peer_listeners),
            );
            let config = dir.join(format!("node-{i}.yaml"));
            std::fs::write(&config, yaml).unwrap();
            let log = std::fs::File::create(dir.join(format!("node-{i}.log"))).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_shardcache"))
                .args(["serve", "--config"])
                .arg(&config)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            Node { s3, admin, peer, child }
        })
        .collect::<Vec<_>>()
        .into_iter()
        .inspect(|node| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(node.s3).is_err() || std::net::TcpStream::connect(node.peer).is_err() {
                assert!(Instant::now() < deadline, "a node did not start listening");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .collect()
}

/// The whole of `bucket/key` through `client`.
async fn read(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = client.get_object().bucket(bucket).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The ranges of the chunks of an object of `size` bytes, as its GETs name them.
fn chunk_ranges(size: u64) -> Vec<String> {
    (0..size.div_ceil(CHUNK))
        .map(|i| format!("bytes={}-{}", i * CHUNK, ((i + 1) * CHUNK).min(size) - 1))
        .collect()
}

/// Objects `shard-<i>.tar` (`count` of them, `size` bytes and a little more each) stored in
/// bucket `data` of `s3`, whose request log then starts empty.
async fn dataset(s3: &S3Server, count: u8, size: usize) -> Vec<(String, Vec<u8>)> {
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
fn assert_fetched_once(s3: &S3Server, objects: &[(String, Vec<u8>)]) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dataset_read_through_every_node_leaves_the_upstream_once() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 8, 300_000).await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), s3.addr, 3, &[]);

    // Every node reads the whole dataset, all three at once; then each reads it again.
    for _ in 0..2 {
        let reads = nodes.iter().map(|node| async {
            let client = node.client();
            for (key, bytes) in &objects {
                assert!(read(&client, "data", key).await == *bytes, "{key} read wrong");
            }
        });
        join_all(reads).await;
    }

    assert_fetched_once(&s3, &objects);
    let mut asked = 0.0;
    for node in &nodes {
        asked += node.metric("shardcache_peer_reads_total{outcome=\"owner_").await;
        assert_eq!(
            node.metric("shardcache_peer_reads_total{outcome=\"failed\"}").await,
            0.0
        );
        assert_eq!(node.metric("shardcache_cluster_members").await, 3.0);
    }
    assert!(asked > 0.0, "chunks were read from their owners");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_read_costs_the_others_nothing_but_time() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 24, 1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), s3.addr, 3, &[]);
    let victim = nodes.pop().unwrap();

    // Two readers go through the dataset on the two survivors; the third node dies early on.
    let killer = tokio::spawn(async move {
        let mut victim = victim;
        tokio::time::sleep(Duration::from_millis(150)).await;
        victim.kill();
    });
    let reads = nodes.iter().enumerate().map(|(n, node)| {
        let objects = &objects;
        async move {
            let client = node.client();
            for (i, (key, bytes)) in objects.iter().enumerate() {
                // The survivors read the dataset in opposite orders, so most reads are cold.
                let (key, bytes) = if n == 0 {
                    (key, bytes)
                } else {
                    (&objects[23 - i].0, &objects[23 - i].1)
                };
                assert!(
                    read(&client, "data", key).await == *bytes,
                    "{key} read wrong through node {n}"
                );
            }
        }
    });
    join_all(reads).await;
    killer.await.unwrap();

    let mut failed = 0.0;
    for node in &nodes {
        failed += node.metric("shardcache_peer_reads_total{outcome=\"failed\"}").await;
    }
    assert!(failed > 0.0, "reads did meet the dead owner, and went to the upstream");
    // Once ejected, the dead owner's chunks go to the second choice: later reads do not wait
    // on it.
    let mut ejected = 0.0;
    for node in &nodes {
        ejected += node.metric("shardcache_peer_breaker_state{peer=\"node-2\"}").await;
    }
    assert!(ejected > 0.0, "the dead node was ejected by at least one survivor");
    let mut counted = 0.0;
    for node in &nodes {
        counted += node.metric("shardcache_cluster_ejected_members").await;
    }
    assert!(
        counted >= 1.0,
        "the ejection shows in shardcache_cluster_ejected_members"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_serves_only_cluster_members() {
    let s3 = S3Server::start().await;
    s3.bucket("data");
    s3.put("data", "secret.bin", data(100_000, 3)).await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), s3.addr, 1, &[]);
    let node = &nodes[0];
    let target = "/peer/v1/chunk?upstream=up&bucket=data&key=secret.bin&start=0&end=65536";

    let anonymous = common::get(node.peer, target, &[]).await;
    assert_eq!(anonymous.status, 403, "no proof: refused");

    let now = std::time::SystemTime::now();
    let wrong = shardcache::cluster::auth::ClusterKey::new(b"another secret of thirty-two bytes or more");
    let forged = wrong.sign("GET", target, "node-0", now);
    let refused = common::get(node.peer, target, &[("x-shardcache-peer", &forged)]).await;
    assert_eq!(refused.status, 403, "another secret: refused");

    let key = shardcache::cluster::auth::ClusterKey::new(b"a cluster secret of at least thirty-two bytes");
    let proof = key.sign("GET", target, "node-0", now);
    let other = target.replace("start=0&end=65536", "start=65536&end=100000");
    let replayed = common::get(node.peer, &other, &[("x-shardcache-peer", &proof)]).await;
    assert_eq!(replayed.status, 403, "a proof for another request: refused");

    let served = common::get(node.peer, target, &[("x-shardcache-peer", &proof)]).await;
    assert_eq!(served.status, 206);
    assert_eq!(served.body, data(100_000, 3)[..65536]);
    assert!(served.header("etag").is_some() && served.header("content-range") == Some("bytes 0-65535/100000"));

    let s3_port = common::get(node.s3, target, &[("x-shardcache-peer", &proof)]).await;
    assert_ne!(s3_port.status, 206, "the S3 listener knows no peer calls");
}

/// A cluster member that dies in the middle of every chunk it sends: the header and half the
/// bytes, then the connection closes. It answers an open (no ETag) with 502.
async fn dying_owner(objects: Vec<(String, Vec<u8>)>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.9", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let objects = objects.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split(' ').nth(1).unwrap_or("");
                let param = |name: &str| {
                    let query = target.split_once('?')?.1;
                    query
                        .split('&')
                        .find_map(|p| p.strip_prefix(&format!("{name}=")).map(str::to_owned))
                };
                let key = param("key").unwrap_or_default().replace("%2D", "-").replace("%2E", ".");
                let (Some(etag), Some(start), Some(end)) = (param("etag"), param("start"), param("end")) else {
                    let _ = stream
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let etag = etag.replace("%22", "\"");
                let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
                let Some((_, bytes)) = objects.iter().find(|(k, _)| *k == key) else {
                    return;
                };
                let header = format!(
                    "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\netag: {etag}\r\n\
                     x-shardcache-peer-outcome: hit\r\n\r\n",
                    end - start
                );
                let _ = stream.write_all(header.as_bytes()).await;
                let _ = stream.write_all(&bytes[start..start + (end - start) / 2]).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_dying_mid_chunk_is_continued_from_the_upstream() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 4, 400_000).await;
    let owner = dying_owner(objects.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), s3.addr, 1, &[("dying", owner)]);
    let client = nodes[0].client();
    for (key, bytes) in &objects {
        assert!(read(&client, "data", key).await == *bytes, "{key} read wrong");
    }
    // Chunks the dying member owns were begun by it and finished from the upstream, from the
    // byte where it stopped.
    let resumed = objects
        .iter()
        .flat_map(|(key, _)| s3.requests("GET", "data", key))
        .filter_map(|r| r.range)
        .filter(|r| {
            let start: u64 = r
                .trim_start_matches("bytes=")
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            !start.is_multiple_of(CHUNK)
        })
        .count();
    assert!(resumed > 0, "some chunks were continued from the middle");
    assert!(nodes[0].metric("shardcache_peer_reads_total{outcome=\"failed\"}").await >= resumed as f64);
    let state = nodes[0].metric("shardcache_peer_breaker_state{peer=\"dying\"}").await;
    assert!(
        state >= 1.0,
        "the member that breaks off is ejected (breaker state {state})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_a_node_is_seen_by_its_next_read() {
    let s3 = S3Server::start().await;
    s3.bucket("data");
    let (v1, v2) = (data(200_000, 1), data(150_000, 2));
    s3.put("data", "model.bin", v1.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), s3.addr, 3, &[]);
    for node in &nodes {
        assert!(read(&node.client(), "data", "model.bin").await == v1);
    }
    for (i, node) in nodes.iter().enumerate() {
        let client = node.client();
        let body = aws_sdk_s3::primitives::ByteStream::from(v2.clone());
        client
            .put_object()
            .bucket("data")
            .key("model.bin")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            read(&client, "data", "model.bin").await == v2,
            "node {i} reads its own write"
        );
        client
            .delete_object()
            .bucket("data")
            .key("model.bin")
            .send()
            .await
            .unwrap();
        let gone = client.get_object().bucket("data").key("model.bin").send().await;
        assert!(gone.is_err(), "node {i} reads its own delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_found_by_dns_share_the_dataset() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 4, 250_000).await;
    // Each node's DNS name is the other's address (an IP literal resolves to itself): it finds
    // the other by lookup and learns its node id by asking it.
    let dns = |i: usize, peers: &[SocketAddr]| {
        let other = peers[1 - i];
        format!(
            "  dns:\n    name: \"{}\"\n    port: {}\n    refresh_seconds: 1\n",
            other.ip(),
            other.port()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster_with(dir.path(), s3.addr, 2, &dns);
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.metric("shardcache_cluster_members").await < 2.0 {
            assert!(Instant::now() < deadline, "the other node was not found");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for node in &nodes {
        let client = node.client();
        for (key, bytes) in &objects {
            assert!(read(&client, "data", key).await == *bytes, "{key} read wrong");
        }
    }
    assert_fetched_once(&s3, &objects);
}

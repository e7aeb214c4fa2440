//! Cluster mode on one machine: shardcache processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 with
//! a static peer list (or DNS), in front of a signature-checking S3 server that logs every ranged
//! GET. The harness is `common/cluster.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::{
    assert_fetched_once, cluster, cluster_with, configure, dataset, metric_sum, read, unframe, Configured, Node, CHUNK,
    SECRET,
};
use common::{data, S3Server};
use futures_util::future::join_all;
use shardcache::cluster::auth::ClusterKey;

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

    let failed = metric_sum(&nodes, "shardcache_peer_reads_total{outcome=\"failed\"}").await;
    assert!(failed > 0.0, "reads did meet the dead owner, and went to the upstream");
    // Once ejected, the dead owner's chunks go to the second choice: later reads do not wait
    // on it.
    let ejected = metric_sum(&nodes, "shardcache_peer_breaker_state{peer=\"node-2\"}").await;
    assert!(ejected > 0.0, "the dead node was ejected by at least one survivor");
    let counted = metric_sum(&nodes, "shardcache_cluster_ejected_members").await;
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

    let key = ClusterKey::new(SECRET);
    let proof = key.sign("GET", target, "node-0", now);
    let other = target.replace("start=0&end=65536", "start=65536&end=100000");
    let replayed = common::get(node.peer, &other, &[("x-shardcache-peer", &proof)]).await;
    assert_eq!(replayed.status, 403, "a proof for another request: refused");

    let served = common::get(node.peer, target, &[("x-shardcache-peer", &proof)]).await;
    assert_eq!(served.status, 206);
    let tag = served.header("x-shardcache-peer-answer").unwrap();
    let headers: Vec<(&str, &[u8])> = served.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    assert!(
        key.check_header(tag, &proof, 206, headers.into_iter()),
        "the answer is proven"
    );
    assert_eq!(unframe(tag, &served.body, 65536).unwrap(), data(100_000, 3)[..65536]);
    assert!(served.header("etag").is_some() && served.header("content-range") == Some("bytes 0-65535/100000"));

    let unaligned = target.replace("start=0", "start=100");
    let proof = key.sign("GET", &unaligned, "node-0", now);
    let refused = common::get(node.peer, &unaligned, &[("x-shardcache-peer", &proof)]).await;
    assert_eq!(refused.status, 400, "a span that is not a chunk: refused");

    let proof = key.sign("GET", target, "node-0", now);
    let s3_port = common::get(node.s3, target, &[("x-shardcache-peer", &proof)]).await;
    assert_ne!(s3_port.status, 206, "the S3 listener knows no peer calls");
}

/// A member that answers every chunk request as `answer` says.
#[derive(Clone, Copy)]
enum FakeOwner {
    /// A listener without the cluster secret: `206` with the right framing and wrong bytes,
    /// and no proof.
    Stranger,
    /// A member whose upstream fails: `503 UpstreamFailing`, proven.
    UpstreamFailing,
}

/// Starts a fake member on 127.0.0.9 answering as `fake` says.
async fn fake_owner(fake: FakeOwner) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.9", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
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
                let answer = match fake {
                    FakeOwner::Stranger => {
                        let param = |name: &str| -> u64 {
                            let at = head.find(&format!("&{name}=")).unwrap() + name.len() + 2;
                            head[at..].split(['&', ' ']).next().unwrap().parse().unwrap()
                        };
                        let len = param("end") - param("start");
                        let mut answer = format!(
                            "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\netag: \"e\"\r\n\r\n",
                            shardcache::cluster::auth::framed_len(len)
                        )
                        .into_bytes();
                        answer.resize(answer.len() + shardcache::cluster::auth::framed_len(len) as usize, 0);
                        answer
                    }
                    FakeOwner::UpstreamFailing => {
                        let proof = head
                            .lines()
                            .find_map(|l| l.strip_prefix("x-shardcache-peer: "))
                            .unwrap_or("");
                        let key = ClusterKey::new(SECRET);
                        let headers: [(&str, &[u8]); 2] =
                            [("x-amz-error-code", b"UpstreamFailing"), ("content-length", b"0")];
                        let tag = key.seal_header(proof, 503, headers.into_iter());
                        format!(
                            "HTTP/1.1 503 Service Unavailable\r\nx-amz-error-code: UpstreamFailing\r\n\
                             content-length: 0\r\nx-shardcache-peer-answer: {tag}\r\n\r\n"
                        )
                        .into_bytes()
                    }
                };
                let _ = stream.write_all(&answer).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_without_the_secret_is_never_believed() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 4, 300_000).await;
    let owner = fake_owner(FakeOwner::Stranger).await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), s3.addr, 1, &[("stranger", owner)]);
    for (key, bytes) in &objects {
        assert!(
            read(&nodes[0].client(), "data", key).await == *bytes,
            "{key} read wrong"
        );
    }
    // Its well-framed zeros were never taken: each chunk it was asked for came from the upstream.
    assert_fetched_once(&s3, &objects);
    let failed = nodes[0].metric("shardcache_peer_reads_total{outcome=\"failed\"}").await;
    assert!(failed >= 5.0, "only {failed} chunks were asked of the stranger");
    assert!(
        nodes[0]
            .metric("shardcache_peer_breaker_state{peer=\"stranger\"}")
            .await
            >= 1.0
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
        node.wait_members(2.0).await;
    }
    for node in &nodes {
        let client = node.client();
        for (key, bytes) in &objects {
            assert!(read(&client, "data", key).await == *bytes, "{key} read wrong");
        }
    }
    assert_fetched_once(&s3, &objects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_about_a_third_of_three() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 16, 500_000).await;
    let chunks: usize = objects
        .iter()
        .map(|(_, b)| (b.len() as u64).div_ceil(CHUNK) as usize)
        .sum();
    // Nodes 0 and 1 list each other, and find node 2 by DNS (its address) once it answers.
    let members = |i: usize, peers: &[SocketAddr]| {
        let listed = format!(
            "  peers:\n    - {{ id: node-0, address: \"{}\" }}\n    - {{ id: node-1, address: \"{}\" }}\n",
            peers[0], peers[1]
        );
        let dns = format!(
            "  dns:\n    name: \"{}\"\n    port: {}\n    refresh_seconds: 1\n",
            peers[2].ip(),
            peers[2].port()
        );
        if i < 2 {
            listed + &dns
        } else {
            listed
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut configured = configure(dir.path(), s3.addr, 3, &members);
    let joiner = configured.pop().unwrap();
    let nodes: Vec<Node> = configured.into_iter().map(Configured::spawn).collect();
    nodes.iter().for_each(Node::wait);
    for node in &nodes {
        node.wait_members(2.0).await;
        for (key, bytes) in &objects {
            assert!(read(&node.client(), "data", key).await == *bytes, "{key} read wrong");
        }
    }
    assert_fetched_once(&s3, &objects);

    let joined = joiner.spawn();
    joined.wait();
    for node in nodes.iter().chain([&joined]) {
        node.wait_members(3.0).await;
    }
    s3.clear();
    // Through the new node: what its old owners hold comes from them; what it now owns (what
    // the join moved) is fetched by it from the upstream, once.
    for (key, bytes) in &objects {
        assert!(read(&joined.client(), "data", key).await == *bytes, "{key} read wrong");
    }
    let moved: usize = objects
        .iter()
        .map(|(key, _)| s3.requests("GET", "data", key).len())
        .sum();
    let share = moved as f64 / chunks as f64;
    eprintln!(
        "a third node joining moved {moved} of {chunks} chunks ({:.1}%)",
        share * 100.0
    );
    assert!(
        (0.2..0.47).contains(&share),
        "the join moved {:.1}% of the chunks, not about a third",
        share * 100.0
    );
    for (key, _) in &objects {
        let ranges: Vec<_> = s3
            .requests("GET", "data", key)
            .into_iter()
            .filter_map(|r| r.range)
            .collect();
        let unique: std::collections::HashSet<_> = ranges.iter().collect();
        assert_eq!(unique.len(), ranges.len(), "{key}: a moved chunk fetched twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_stops_answering_is_waited_for_within_bounds_then_ejected() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 6, 300_000).await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), s3.addr, 3, &[]);
    // Node 2 hangs: its listener still accepts, it never answers.
    let hung = nodes.pop().unwrap();
    hung.signal(libc::SIGSTOP);
    let started = std::time::Instant::now();
    for (key, bytes) in &objects {
        assert!(
            read(&nodes[0].client(), "data", key).await == *bytes,
            "{key} read wrong"
        );
    }
    let took = started.elapsed();
    // The harness gives members 2 s to answer; the breaker ejects one after 5 failures in a row.
    assert!(took < Duration::from_secs(40), "reads waited {took:?} on a hung owner");
    assert_eq!(nodes[0].metric("shardcache_cluster_ejected_members").await, 1.0);
    let failed = nodes[0].metric("shardcache_peer_reads_total{outcome=\"failed\"}").await;
    // Five failures in a row eject it; a chunk and its read-ahead may have been asked meanwhile.
    assert!(
        (5.0..=8.0).contains(&failed),
        "{failed} reads waited on the hung owner before it was ejected"
    );
    hung.signal(libc::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_upstream_fails_is_not_ejected() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 4, 300_000).await;
    let owner = fake_owner(FakeOwner::UpstreamFailing).await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), s3.addr, 1, &[("failing", owner)]);
    for (key, bytes) in &objects {
        assert!(
            read(&nodes[0].client(), "data", key).await == *bytes,
            "{key} read wrong"
        );
    }
    // Its chunks came from this node's upstream, and it stays a member: the failing upstream is
    // not its fault (over 5 such answers in a row would have ejected a failing member).
    let failed = nodes[0].metric("shardcache_peer_reads_total{outcome=\"failed\"}").await;
    assert!(failed > 5.0, "only {failed} chunks were asked of the member");
    assert_eq!(
        nodes[0].metric("shardcache_peer_breaker_state{peer=\"failing\"}").await,
        0.0
    );
}

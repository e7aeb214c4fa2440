//! A peer that answers wrong, as seen by the node that asked: two nodes, node 0 reaching node 1
//! only through a fake peer (`common/fake_peer.rs`) that flips a bit, changes a header, cuts or
//! drips node 1's answers. Whatever it does, node 0 serves and keeps only the right bytes,
//! taking what it could not get proven from the upstream.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{configure, dataset, read, Configured, Node, CHUNK};
use common::fake_peer::{FakePeer, Harm};
use common::S3Server;

/// Two nodes in front of `s3`; node 0 reaches node 1 through `fake`. `extra` is added to each
/// node's `cluster` section.
fn behind(dir: &std::path::Path, s3: &S3Server, fake: &FakePeer, extra: &str) -> Vec<Node> {
    let members = |i: usize, peers: &[SocketAddr]| {
        let one = if i == 0 { fake.addr } else { peers[1] };
        format!(
            "  peers:\n    - {{ id: node-0, address: \"{}\" }}\n    - {{ id: node-1, address: \"{one}\" }}\n{extra}",
            peers[0]
        )
    };
    let configured = configure(dir, s3.addr, 2, &members);
    fake.relay_to(configured[1].peer);
    let nodes: Vec<Node> = configured.into_iter().map(Configured::spawn).collect();
    nodes.iter().for_each(Node::wait);
    nodes
}

/// Where the upstream GETs of `s3` started within their chunk.
fn offsets_within_chunks(s3: &S3Server, objects: &[(String, Vec<u8>)]) -> Vec<u64> {
    objects
        .iter()
        .flat_map(|(key, _)| s3.requests("GET", "data", key))
        .filter_map(|r| r.range)
        .map(|r| {
            let start: u64 = r
                .trim_start_matches("bytes=")
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            start % CHUNK
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_harmed_on_the_path_are_never_served_or_kept() {
    // A segment is 32 KiB and its tag 32 bytes: byte 40,000 of the framed body is in the second
    // segment, byte 5 in the first.
    let cases = [
        (Harm::FlipBit { at: 40_000 }, Some(32_768)),
        (Harm::FlipBit { at: 5 }, Some(0)),
        (Harm::ChangeEtag, None),
        (Harm::Cut { at: 50_000 }, Some(32_768)),
    ];
    for (harm, resumed_at) in cases {
        let s3 = S3Server::start().await;
        let objects = dataset(&s3, 4, 200_000).await;
        let fake = FakePeer::start(harm).await;
        let dir = tempfile::tempdir().unwrap();
        let nodes = behind(dir.path(), &s3, &fake, "");
        for pass in 0..2 {
            for (key, bytes) in &objects {
                let got = read(&nodes[0].client(), "data", key).await;
                assert!(got == *bytes, "{harm:?}, pass {pass}: {key} read wrong");
            }
        }
        assert!(fake.answers() > 0, "{harm:?}: node 1 was asked through the fake peer");
        let metric = |outcome: &str| format!("shardcache_peer_reads_total{{outcome=\"{outcome}\"}}");
        let failed = nodes[0].metric(&metric("failed")).await;
        assert!(failed > 0.0, "{harm:?}: the harmed answers counted as failed");
        if !matches!(harm, Harm::Cut { .. }) {
            let rejected = nodes[0].metric(&metric("rejected")).await;
            assert!(rejected > 0.0, "{harm:?}: the harmed answers counted as rejected");
        }
        // The read went on from the upstream at the last proven byte.
        if let Some(at) = resumed_at {
            assert!(
                offsets_within_chunks(&s3, &objects).contains(&at),
                "{harm:?}: some chunk continued from byte {at} of the chunk"
            );
        }
        // And node 1, which the harm never touched, serves its own right bytes.
        for (key, bytes) in &objects {
            assert!(
                read(&nodes[1].client(), "data", key).await == *bytes,
                "{harm:?}: node 1: {key}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_dripping_a_byte_a_second_is_left_for_the_upstream_at_the_floor() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 4, 200_000).await;
    let fake = FakePeer::start(Harm::Drip {
        every: Duration::from_secs(1),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Each byte comes within the read timeout (2 s here): only the floor cuts the drip.
    let nodes = behind(dir.path(), &s3, &fake, "  floor_window_seconds: 1\n");
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for (key, bytes) in &objects {
        let began = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(30), read(&nodes[0].client(), "data", key)).await;
        assert!(
            got.expect("a read waited 30 s on the drip") == *bytes,
            "{key} read wrong"
        );
        slowest = slowest.max(began.elapsed());
    }
    eprintln!("slowest read {slowest:?}, all {:?}", started.elapsed());
    assert!(fake.answers() > 0, "node 1 was asked through the fake peer");
    // A chunk waits for the floor's window and the next byte after it: about 2 s.
    assert!(slowest < Duration::from_secs(6), "a read took {slowest:?}");
    let failed = nodes[0].metric("shardcache_peer_reads_total{outcome=\"failed\"}").await;
    assert!(failed > 0.0);
}

//! A dataset larger than one node's disk tier, read through a cluster whose disk tiers together
//! hold it. A test binary of its own: its three nodes should not share the two cores with the
//! other dataset tests (under that load a read was once cut short, see #25's cut reads).

mod common;

use common::S3Server;

const CHUNK: usize = 1 << 20;

/// Three nodes whose disk tiers together hold the dataset (each holds a third of it and a bit
/// more): after the first epoch nothing comes from the upstream, whichever node each shard is
/// read through, because a node keeps on disk only the chunks it owns (`cluster.peer_chunks`
/// defaults to `memory`) and its owner decides their admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_whose_disks_hold_the_dataset_fetches_it_once() {
    use common::cluster::{configure_cached, Configured, Node};
    const SHARDS: usize = 105;
    let s3 = S3Server::start().await;
    common::put_shards(&s3, SHARDS, CHUNK).await;
    let dir = tempfile::tempdir().unwrap();
    let members = |_: usize, peers: &[std::net::SocketAddr]| -> String {
        let listed: String = peers
            .iter()
            .enumerate()
            .map(|(i, peer)| format!("    - {{ id: node-{i}, address: \"{peer}\" }}\n"))
            .collect();
        format!("  peers:\n{listed}")
    };
    let root = dir.path().to_owned();
    let cache = move |i: usize| {
        format!(
            "  chunk_size: {CHUNK}\n  memory_bytes: {}\n  read_ahead_chunks: 0\n  disk:\n    path: {dir}/disk-{i}\n    \
             capacity_bytes: {}\n    write_queue_bytes: 16777216\n    key_file: {dir}/disk-{i}.key\n",
            4 * CHUNK,
            64 * CHUNK,
            dir = root.display(),
        )
    };
    let nodes: Vec<Node> = configure_cached(dir.path(), s3.addr, 3, &members, &cache)
        .into_iter()
        .map(Configured::spawn)
        .collect();
    nodes.iter().for_each(Node::wait);
    for node in &nodes {
        node.wait_members(3.0).await;
    }
    let clients: Vec<_> = nodes.iter().map(Node::client).collect();
    let mut shares = Vec::new();
    for epoch in 0..4 {
        s3.clear();
        for i in common::shuffled(SHARDS, epoch as u64 + 11) {
            let key = common::shard_key(i);
            let got = common::cluster::read(&clients[(i + epoch) % 3], "train", &key).await;
            assert!(got == common::data(CHUNK, i as u8), "{key}: wrong bytes");
        }
        shares.push(common::shards_fetched(&s3, SHARDS));
    }
    eprintln!("cluster: upstream share per epoch {shares:.2?}");
    assert!(shares[1..].iter().all(|s| *s <= 0.02), "{shares:?}");
}

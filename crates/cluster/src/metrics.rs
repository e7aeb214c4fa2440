//! Cluster mode's metrics on the asking side (METRICS.md lists them; the owner's side, the
//! peer listener, exports its own from the server).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use shardcache_metrics::Registry;

/// What the asking side of cluster mode exports.
pub struct ClusterMetrics {
    /// `shardcache_peer_reads_total{outcome}`: chunk fetches this node sent to the chunk's
    /// owner, by outcome: `owner_hit` (from the owner's cache), `owner_fill` (the owner fetched
    /// it, or was fetching it), `failed` (the owner failed; the chunk, or its rest, came from the
    /// upstream), `rejected` (an answer's header or a segment failed its proof; also `failed`).
    pub peer_reads: IntCounterVec,
    /// `shardcache_peer_received_bytes_total`: chunk bytes received from owners.
    pub peer_received_bytes: IntCounter,
    /// `shardcache_cluster_members`: members this node places chunks over (those of its zone,
    /// itself included).
    pub cluster_members: IntGauge,
    /// `shardcache_cluster_ejected_members`: members whose breaker is open on this node (their
    /// chunks go to the second choice).
    pub cluster_ejected: IntGauge,
    /// `shardcache_cluster_placements_total{owner}`: chunk fetches by the node asked: `self`
    /// (this node owns the chunk, or is the choice after an ejected owner), `peer`.
    pub cluster_placements: IntCounterVec,
    /// `shardcache_peer_breaker_state{peer}`: 0 closed, 1 probing, 2 open (the peer ejected).
    pub peer_breaker: IntGaugeVec,
    /// `shardcache_peer_breaker_rejections_total{peer}`: chunk fetches that skipped an ejected
    /// peer.
    pub peer_breaker_rejections: IntCounterVec,
}

impl ClusterMetrics {
    /// Declares them in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            peer_reads: registry.counter_of(
                "shardcache_peer_reads_total",
                "Chunk fetches sent to the chunk's owner, by outcome",
                "outcome",
                &["owner_hit", "owner_fill", "failed", "rejected"],
            ),
            peer_received_bytes: registry.single(
                "shardcache_peer_received_bytes_total",
                "Chunk bytes received from owners",
            ),
            cluster_members: registry.single_gauge("shardcache_cluster_members", "Members chunks are placed over"),
            cluster_ejected: registry
                .single_gauge("shardcache_cluster_ejected_members", "Members whose breaker is open"),
            cluster_placements: registry.counter_of(
                "shardcache_cluster_placements_total",
                "Chunk fetches by the node asked",
                "owner",
                &["self", "peer"],
            ),
            peer_breaker: registry.gauge(
                "shardcache_peer_breaker_state",
                "Peer circuit breaker: 0 closed, 1 probing, 2 open (ejected)",
                &["peer"],
            ),
            peer_breaker_rejections: registry.counter(
                "shardcache_peer_breaker_rejections_total",
                "Chunk fetches that skipped an ejected peer",
                &["peer"],
            ),
        }
    }
}

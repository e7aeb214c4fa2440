//! The cache's metrics (METRICS.md lists them).

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use shardcache_metrics::Registry;
use shardcache_store::StoreMetrics;

/// What the chunk cache and its read-through facade export.
pub struct CacheMetrics {
    /// `shardcache_cache_usage_bytes{tier}`: memory tier bytes; disk tier in whole blocks.
    pub cache_usage: IntGaugeVec,
    /// `shardcache_cache_capacity_bytes{tier}`
    pub cache_capacity: IntGaugeVec,
    /// `shardcache_chunk_fills_total{result}`: upstream chunk fetches by result
    /// (`complete`, `failed`).
    pub fills: IntCounterVec,
    /// `shardcache_readahead_chunks_total`: chunk fetches started by read-ahead.
    pub readahead: IntCounter,
    /// `shardcache_disk_write_waits_total`: fills that waited for disk write-queue room before
    /// fetching (the disk is slower than the upstream).
    pub disk_write_waits: IntCounter,
    /// `shardcache_working_set_bytes`: the bytes one pass over the data reads lately (the
    /// distinct chunks read over two reuse distances, times the chunk size); 0 until known.
    pub working_set_bytes: IntGauge,
    /// `shardcache_disk_reads_resumed_total`: chunk reads from the disk tier that failed midway
    /// (the entry was dropped) and were finished from a fresh fill.
    pub disk_reads_resumed: IntCounter,
    /// `shardcache_copied_bytes_total`: bytes sent as copies to clients not known to keep up,
    /// whose sockets had no room for a view of the chunk.
    pub copied_bytes: IntCounter,
    /// `shardcache_stale_responses_total{upstream}`: answers whose metadata was past its TTL
    /// and could not be revalidated, served under stale-if-error.
    pub stale_served: IntCounterVec,
    /// The disk tier's, which the cache hands to the store it opens.
    pub store: Arc<StoreMetrics>,
}

impl CacheMetrics {
    /// Declares them (the disk tier's too) in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            cache_usage: registry.gauge("shardcache_cache_usage_bytes", "Bytes held per cache tier", &["tier"]),
            cache_capacity: registry.gauge("shardcache_cache_capacity_bytes", "Capacity per cache tier", &["tier"]),
            fills: registry.counter(
                "shardcache_chunk_fills_total",
                "Upstream chunk fetches by result",
                &["result"],
            ),
            readahead: registry.single(
                "shardcache_readahead_chunks_total",
                "Chunk fetches started by read-ahead",
            ),
            disk_write_waits: registry.single(
                "shardcache_disk_write_waits_total",
                "Fills that waited for disk write-queue room",
            ),
            working_set_bytes: registry.single_gauge(
                "shardcache_working_set_bytes",
                "Bytes one pass over the data reads (distinct chunks read over two reuse distances)",
            ),
            disk_reads_resumed: registry.single(
                "shardcache_disk_reads_resumed_total",
                "Disk tier reads that failed midway and were finished from a fresh fill",
            ),
            copied_bytes: registry.single(
                "shardcache_copied_bytes_total",
                "Bytes sent as copies to clients not known to keep up, whose sockets had no room for a view",
            ),
            stale_served: registry.counter(
                "shardcache_stale_responses_total",
                "Answers served with stale metadata because revalidation failed",
                &["upstream"],
            ),
            store: Arc::new(StoreMetrics::new(registry)),
        }
    }
}

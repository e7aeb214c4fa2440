//! The disk tier's metrics (METRICS.md lists them).

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use shardcache_metrics::Registry;

/// What the disk tier exports.
pub struct StoreMetrics {
    /// `shardcache_disk_io_engine_info{engine}`: 1 for the disk tier's active I/O engine
    /// (`io_uring`, or `psync` where io_uring is unavailable or not wanted).
    pub io_engine: IntGaugeVec,
    /// `shardcache_disk_evictions_total`: entries the disk tier evicted to make room.
    pub disk_evictions: IntCounter,
    /// `shardcache_disk_write_drops_total`: entries not written to disk because every slot of
    /// their size was busy being written.
    pub disk_write_drops: IntCounter,
    /// `shardcache_disk_admissions_declined_total`: chunks not written to a full disk tier
    /// because the chunk they would have displaced was read more often, or more recently.
    pub disk_admissions_declined: IntCounter,
    /// `shardcache_disk_io_errors_total{op}`: disk tier I/O errors by operation (`read`,
    /// `write`, `clear`).
    pub disk_io_errors: IntCounterVec,
    /// `shardcache_disk_io_bytes_total{op}`: bytes the disk tier read and wrote (`read`,
    /// `write`).
    pub disk_io_bytes: IntCounterVec,
    /// `shardcache_disk_degraded`: 1 while the disk tier is not used because its disk fails (or
    /// its file was removed); it is checked every two seconds and resumes on its own.
    pub disk_degraded: IntGauge,
    /// `shardcache_disk_recovery_seconds`: how long opening the disk tier took (the header scan).
    pub disk_recovery_seconds: Gauge,
    /// `shardcache_cache_read_errors_total`: cache entries that failed to load (I/O error,
    /// checksum mismatch); each is treated as a miss.
    pub cache_read_errors: IntCounter,
}

impl StoreMetrics {
    /// Declares them in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            io_engine: registry.gauge("shardcache_disk_io_engine_info", "Active disk I/O engine", &["engine"]),
            disk_evictions: registry.single("shardcache_disk_evictions_total", "Entries the disk tier evicted"),
            disk_write_drops: registry.single(
                "shardcache_disk_write_drops_total",
                "Entries not written to disk because every slot of their size was busy",
            ),
            disk_admissions_declined: registry.single(
                "shardcache_disk_admissions_declined_total",
                "Chunks a full disk tier did not take in place of a chunk read more often or more recently",
            ),
            disk_io_errors: registry.counter_of(
                "shardcache_disk_io_errors_total",
                "Disk tier I/O errors by operation",
                "op",
                &["read", "write", "clear"],
            ),
            disk_io_bytes: registry.counter_of(
                "shardcache_disk_io_bytes_total",
                "Bytes the disk tier read and wrote",
                "op",
                &["read", "write"],
            ),
            disk_degraded: registry.single_gauge("shardcache_disk_degraded", "1 while the disk tier is degraded"),
            disk_recovery_seconds: registry
                .float_gauge("shardcache_disk_recovery_seconds", "Time the disk tier took to open"),
            cache_read_errors: registry.single(
                "shardcache_cache_read_errors_total",
                "Cache entries that failed to load",
            ),
        }
    }
}

//! The upstreams' metrics (METRICS.md lists them). Their `call` label is the S3 operation as
//! AWS names it (`HeadObject`, `GetObject`, or a forwarded request's own operation).

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
use shardcache_metrics::Registry;

/// What the upstreams export, per upstream (its name in the config).
pub struct UpstreamMetrics {
    /// `shardcache_upstream_requests_total{upstream,call}`
    pub requests: IntCounterVec,
    /// `shardcache_upstream_errors_total{upstream,call}`: failed or truncated upstream calls.
    pub errors: IntCounterVec,
    /// `shardcache_upstream_request_duration_seconds{upstream,call}`: to response headers.
    pub duration: HistogramVec,
    /// `shardcache_upstream_received_bytes_total{upstream}`: chunk bytes fetched (egress).
    pub received_bytes: IntCounterVec,
    /// `shardcache_upstream_retries_total{upstream,reason}`: calls tried again, and broken
    /// bodies resumed, by why (`timeout`, `network`, `throttled`, `server_error`, `invalid`).
    pub retries: IntCounterVec,
    /// `shardcache_upstream_hedges_total{upstream,outcome}`: hedged chunk reads `sent`, and
    /// those the hedge `won`.
    pub hedges: IntCounterVec,
    /// `shardcache_upstream_breaker_state{upstream}`: 0 closed, 1 probing, 2 open.
    pub breaker: IntGaugeVec,
    /// `shardcache_upstream_breaker_rejections_total{upstream}`: calls failed fast while the
    /// breaker was open.
    pub breaker_rejections: IntCounterVec,
    /// `shardcache_fallback_reads_total{upstream}`: cached-read calls (HEADs, chunk GETs)
    /// answered by a bucket's fallback upstream because its own was failing.
    pub fallback_reads: IntCounterVec,
}

impl UpstreamMetrics {
    /// Declares them in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            requests: registry.counter(
                "shardcache_upstream_requests_total",
                "Requests to upstreams",
                &["upstream", "call"],
            ),
            errors: registry.counter(
                "shardcache_upstream_errors_total",
                "Failed upstream requests",
                &["upstream", "call"],
            ),
            duration: registry.histogram(
                "shardcache_upstream_request_duration_seconds",
                "Upstream time to response headers",
                &["upstream", "call"],
            ),
            received_bytes: registry.counter(
                "shardcache_upstream_received_bytes_total",
                "Chunk bytes fetched from upstreams",
                &["upstream"],
            ),
            retries: registry.counter(
                "shardcache_upstream_retries_total",
                "Upstream calls retried and bodies resumed, by reason",
                &["upstream", "reason"],
            ),
            hedges: registry.counter(
                "shardcache_upstream_hedges_total",
                "Hedged chunk reads sent and won",
                &["upstream", "outcome"],
            ),
            breaker: registry.gauge(
                "shardcache_upstream_breaker_state",
                "Upstream circuit breaker: 0 closed, 1 probing, 2 open",
                &["upstream"],
            ),
            breaker_rejections: registry.counter(
                "shardcache_upstream_breaker_rejections_total",
                "Upstream calls failed fast by an open circuit breaker",
                &["upstream"],
            ),
            fallback_reads: registry.counter(
                "shardcache_fallback_reads_total",
                "Cached-read calls answered by a bucket's fallback upstream",
                &["upstream"],
            ),
        }
    }
}

//! The server's metrics: requests and their bytes, the listeners' connections, authentication,
//! what is recorded, the peer listener, reloads; and every subsystem's own, declared in its
//! crate ([`UpstreamMetrics`], [`CacheMetrics`] with the disk tier's, [`ClusterMetrics`]), all
//! in one [`Registry`]. METRICS.md lists every one; a unit test holds them together both ways.

use std::sync::Arc;

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};
pub use shardcache_metrics::{Described, Outcome, Registry, Source};

use crate::cache::CacheMetrics;
use crate::cluster::ClusterMetrics;
use crate::upstream::UpstreamMetrics;

/// Every metric shardcache exports.
pub struct Metrics {
    registry: Registry,
    /// The upstreams'.
    pub upstream: Arc<UpstreamMetrics>,
    /// The cache's and its disk tier's.
    pub cache: Arc<CacheMetrics>,
    /// Cluster mode's asking side.
    pub cluster: Arc<ClusterMetrics>,
    /// `shardcache_requests_total{operation,status,outcome}`
    pub requests: IntCounterVec,
    /// `shardcache_served_bytes_total{source}`: body bytes sent to clients for GetObject, one
    /// counter per [`Source`], resolved once (the hot path counts every body piece).
    served_bytes: [IntCounter; 3],
    /// `shardcache_request_duration_seconds{outcome}`
    pub request_duration: HistogramVec,
    /// `shardcache_time_to_first_byte_seconds{outcome}`: request start to first body byte sent.
    pub ttfb: HistogramVec,
    /// `shardcache_client_connections`: open connections on the S3 listener.
    pub client_connections: IntGauge,
    /// `shardcache_connections_shed_total{reason}`: client connections refused or cut:
    /// `over_limit` (answered 503 past `clients.max_connections`), `header_timeout`.
    pub connections_shed: IntCounterVec,
    /// `shardcache_warmed_bytes_total{source}`: bytes of objects warmed on request, by where they
    /// were (`cache`: already cached, `upstream`: fetched).
    pub warmed_bytes: IntCounterVec,
    /// `shardcache_auth_failures_total{code}`: requests whose credentials were refused, by the S3
    /// error code answered (`SignatureDoesNotMatch`, `InvalidAccessKeyId`, ...).
    pub auth_failures: IntCounterVec,
    /// `shardcache_access_denied_total{action}`: verified requests the policy denied, by action.
    pub access_denied: IntCounterVec,
    /// `shardcache_audit_dropped_total`: audit records dropped because the writer fell behind.
    pub audit_dropped: IntCounter,
    /// `shardcache_lineage_dropped_total`: lineage reads dropped because the writer fell behind.
    pub lineage_dropped: IntCounter,
    /// `shardcache_peer_served_total{outcome}`: peer requests this node answered as an owner:
    /// `hit`, `fill`, `refused` (no valid cluster proof, or a bad request), `failed`.
    pub peer_served: IntCounterVec,
    /// `shardcache_peer_served_bytes_total`: chunk bytes sent to peers.
    pub peer_served_bytes: IntCounter,
    /// `shardcache_reloads_total{what, result}`: reloads of `auth` (keys, policy) and `tls`
    /// (the certificate), `ok` or `error`.
    pub reloads: IntCounterVec,
}

impl Metrics {
    /// Declares every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        Self {
            upstream: Arc::new(UpstreamMetrics::new(r)),
            cache: Arc::new(CacheMetrics::new(r)),
            cluster: Arc::new(ClusterMetrics::new(r)),
            requests: r.counter(
                "shardcache_requests_total",
                "S3 requests answered",
                &["operation", "status", "outcome"],
            ),
            served_bytes: {
                let vec = r.counter(
                    "shardcache_served_bytes_total",
                    "Object bytes sent to clients",
                    &["source"],
                );
                [Source::Memory, Source::Disk, Source::Upstream].map(|s| vec.with_label_values(&[s.as_str()]))
            },
            request_duration: r.histogram("shardcache_request_duration_seconds", "Request duration", &["outcome"]),
            ttfb: r.histogram(
                "shardcache_time_to_first_byte_seconds",
                "Time to first body byte",
                &["outcome"],
            ),
            client_connections: r.single_gauge("shardcache_client_connections", "Open connections on the S3 listener"),
            connections_shed: r.counter(
                "shardcache_connections_shed_total",
                "Client connections refused past the cap or cut for a slow header",
                &["reason"],
            ),
            warmed_bytes: r.counter(
                "shardcache_warmed_bytes_total",
                "Bytes of objects warmed on request, by where they were",
                &["source"],
            ),
            auth_failures: r.counter(
                "shardcache_auth_failures_total",
                "Requests whose credentials were refused, by S3 error code",
                &["code"],
            ),
            access_denied: r.counter(
                "shardcache_access_denied_total",
                "Requests the policy denied, by action",
                &["action"],
            ),
            audit_dropped: r.single(
                "shardcache_audit_dropped_total",
                "Audit records dropped because the audit writer fell behind",
            ),
            lineage_dropped: r.single(
                "shardcache_lineage_dropped_total",
                "Lineage reads dropped because the lineage writer fell behind",
            ),
            peer_served: r.counter_of(
                "shardcache_peer_served_total",
                "Peer requests answered as the owner, by outcome",
                "outcome",
                &["hit", "fill", "refused", "failed"],
            ),
            peer_served_bytes: r.single("shardcache_peer_served_bytes_total", "Chunk bytes sent to peers"),
            reloads: r.counter(
                "shardcache_reloads_total",
                "Reloads of the auth keys and policy and of the TLS certificate, by result",
                &["what", "result"],
            ),
            registry,
        }
    }

    /// `shardcache_served_bytes_total{source}`.
    pub fn served_bytes(&self, source: Source) -> &IntCounter {
        let i = match source {
            Source::Memory => 0,
            Source::Disk => 1,
            Source::Upstream => 2,
        };
        &self.served_bytes[i]
    }

    /// The registry every metric is in (foyer registers its own there too).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        self.registry.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// METRICS.md lists exactly the metrics every subsystem declares, each with its type and
    /// labels.
    #[test]
    fn metrics_md_matches_the_registry() {
        let doc = include_str!("../METRICS.md");
        let listed: Vec<Described> = doc
            .lines()
            .filter(|l| l.starts_with("| `shardcache_"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                Described {
                    name: cells[1].trim_matches('`').to_owned(),
                    kind: match cells[2] {
                        "counter" => "counter",
                        "gauge" => "gauge",
                        "histogram" => "histogram",
                        other => panic!("{}: type {other:?}", cells[1]),
                    },
                    labels: cells[3]
                        .split(',')
                        .map(|c| c.trim().trim_matches('`').to_owned())
                        .filter(|c| !c.is_empty())
                        .collect(),
                }
            })
            .collect();
        let registered = Metrics::new().registry().described();
        for d in &registered {
            assert!(listed.contains(d), "METRICS.md does not list {d:?} as such");
        }
        for d in &listed {
            assert!(
                registered.contains(d),
                "METRICS.md lists {d:?}, which no subsystem declares"
            );
        }
    }
}

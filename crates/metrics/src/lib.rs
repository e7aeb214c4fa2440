//! The metric catalogue: every metric shardcache exports, in one place. METRICS.md mirrors it.
//!
//! Names carry the `shardcache_` prefix and a unit suffix; label values come from the small
//! enums below or from config-defined upstream names, so every label set is bounded (no object
//! keys, no bucket names). foyer registers its own metrics (prefix `foyer_`) in the same registry.
//! It uses no other module.

use std::cell::RefCell;

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// One metric of the catalogue: what METRICS.md must list for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    /// Full name.
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Label names, in order.
    pub labels: Vec<String>,
}

/// Where the bytes of a response came from, and the request's cache outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Every chunk came from the memory tier.
    MemoryHit,
    /// At least one chunk came from the disk tier, none from the upstream.
    DiskHit,
    /// At least one chunk was being fetched by another request; this one shared it.
    Coalesced,
    /// This request fetched at least one chunk from the upstream.
    Miss,
    /// Forwarded to the upstream as is.
    Passthrough,
    /// Answered by shardcache alone (errors, 304/412, local-directory listings, HEAD from cache).
    Local,
}

impl Outcome {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MemoryHit => "memory_hit",
            Self::DiskHit => "disk_hit",
            Self::Coalesced => "coalesced",
            Self::Miss => "miss",
            Self::Passthrough => "passthrough",
            Self::Local => "local",
        }
    }
}

/// Where served bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Memory tier.
    Memory,
    /// Disk tier.
    Disk,
    /// Streamed from an upstream fetch (a miss, or a shared in-flight fill).
    Upstream,
}

impl Source {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Upstream => "upstream",
        }
    }
}

/// Every metric shardcache exports.
pub struct Metrics {
    registry: Registry,
    described: Vec<Described>,
    /// `shardcache_requests_total{operation,status,outcome}`
    pub requests: IntCounterVec,
    /// `shardcache_served_bytes_total{source}`: body bytes sent to clients for GetObject, one
    /// counter per [`Source`], resolved once (the hot path counts every body piece).
    served_bytes: [IntCounter; 3],
    /// `shardcache_request_duration_seconds{outcome}`
    pub request_duration: HistogramVec,
    /// `shardcache_time_to_first_byte_seconds{outcome}`: request start to first body byte sent.
    pub ttfb: HistogramVec,
    /// `shardcache_upstream_requests_total{upstream,call}`
    pub upstream_requests: IntCounterVec,
    /// `shardcache_upstream_errors_total{upstream,call}`: failed or truncated upstream calls.
    pub upstream_errors: IntCounterVec,
    /// `shardcache_client_connections`: open connections on the S3 listener.
    pub client_connections: IntGauge,
    /// `shardcache_connections_shed_total{reason}`: client connections refused or cut:
    /// `over_limit` (answered 503 past `clients.max_connections`), `header_timeout`.
    pub connections_shed: IntCounterVec,
    /// `shardcache_fallback_reads_total{upstream}`: cached-read calls (HEADs, chunk GETs)
    /// answered by a bucket's fallback upstream because its own was failing.
    pub fallback_reads: IntCounterVec,
    /// `shardcache_stale_responses_total{upstream}`: answers whose metadata was past its TTL
    /// and could not be revalidated, served under stale-if-error.
    pub stale_served: IntCounterVec,
    /// `shardcache_upstream_retries_total{upstream,reason}`: calls tried again, and broken
    /// bodies resumed, by why (`timeout`, `network`, `throttled`, `server_error`, `invalid`).
    pub upstream_retries: IntCounterVec,
    /// `shardcache_upstream_hedges_total{upstream,outcome}`: hedged chunk reads `sent`, and
    /// those the hedge `won`.
    pub upstream_hedges: IntCounterVec,
    /// `shardcache_upstream_breaker_state{upstream}`: 0 closed, 1 probing, 2 open.
    pub upstream_breaker: IntGaugeVec,
    /// `shardcache_upstream_breaker_rejections_total{upstream}`: calls failed fast while the
    /// breaker was open.
    pub upstream_breaker_rejections: IntCounterVec,
    /// `shardcache_upstream_received_bytes_total{upstream}`: chunk bytes fetched (egress).
    pub upstream_bytes: IntCounterVec,
    /// `shardcache_upstream_request_duration_seconds{upstream,call}`: to response headers.
    pub upstream_duration: HistogramVec,
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
    /// `shardcache_cache_read_errors_total`: cache entries that failed to load (I/O error,
    /// checksum mismatch); each is treated as a miss.
    pub cache_read_errors: IntCounter,
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
    /// `shardcache_working_set_bytes`: the bytes one pass over the data reads lately (the
    /// distinct chunks read over two reuse distances, times the chunk size); 0 until known.
    pub working_set_bytes: IntGauge,
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
    /// `shardcache_peer_reads_total{outcome}`: chunk fetches this node sent to the chunk's
    /// owner, by outcome: `owner_hit` (from the owner's cache), `owner_fill` (the owner fetched
    /// it, or was fetching it), `failed` (the owner failed; the chunk came from the upstream).
    pub peer_reads: IntCounterVec,
    /// `shardcache_peer_received_bytes_total`: chunk bytes received from owners.
    pub peer_received_bytes: IntCounter,
    /// `shardcache_peer_served_total{outcome}`: peer requests this node answered as an owner:
    /// `hit`, `fill`, `refused` (no valid cluster proof, or a bad request), `failed`.
    pub peer_served: IntCounterVec,
    /// `shardcache_peer_served_bytes_total`: chunk bytes sent to peers.
    pub peer_served_bytes: IntCounter,
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
    /// `shardcache_reloads_total{what, result}`: reloads of `auth` (keys, policy) and `tls`
    /// (the certificate), `ok` or `error`.
    pub reloads: IntCounterVec,
}

const SECONDS_BUCKETS: (f64, f64, usize) = (0.0001, 2.0, 18); // 100 us .. ~13 s

impl Metrics {
    /// Creates and registers the catalogue in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let described = RefCell::new(Vec::new());
        // Registers `metric` and notes it in the catalogue METRICS.md is checked against.
        let register = |metric: Box<dyn Collector>, kind: &'static str| {
            for desc in metric.desc() {
                described.borrow_mut().push(Described {
                    name: desc.fq_name.clone(),
                    kind,
                    labels: desc.variable_labels.clone(),
                });
            }
            registry.register(metric).expect("metric registered once");
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
            register(Box::new(c.clone()), "counter");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let (start, factor, count) = SECONDS_BUCKETS;
            let buckets = exponential_buckets(start, factor, count).expect("static buckets");
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("static metric definition");
            register(Box::new(h.clone()), "histogram");
            h
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            register(Box::new(g.clone()), "gauge");
            g
        };
        let single_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            register(Box::new(g.clone()), "gauge");
            g
        };
        let single = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            register(Box::new(c.clone()), "counter");
            c
        };
        Self {
            requests: counter(
                "shardcache_requests_total",
                "S3 requests answered",
                &["operation", "status", "outcome"],
            ),
            served_bytes: {
                let vec = counter(
                    "shardcache_served_bytes_total",
                    "Object bytes sent to clients",
                    &["source"],
                );
                [Source::Memory, Source::Disk, Source::Upstream].map(|s| vec.with_label_values(&[s.as_str()]))
            },
            request_duration: histogram("shardcache_request_duration_seconds", "Request duration", &["outcome"]),
            ttfb: histogram(
                "shardcache_time_to_first_byte_seconds",
                "Time to first body byte",
                &["outcome"],
            ),
            upstream_requests: counter(
                "shardcache_upstream_requests_total",
                "Requests to upstreams",
                &["upstream", "call"],
            ),
            upstream_errors: counter(
                "shardcache_upstream_errors_total",
                "Failed upstream requests",
                &["upstream", "call"],
            ),
            client_connections: single_gauge("shardcache_client_connections", "Open connections on the S3 listener"),
            connections_shed: counter(
                "shardcache_connections_shed_total",
                "Client connections refused past the cap or cut for a slow header",
                &["reason"],
            ),
            fallback_reads: counter(
                "shardcache_fallback_reads_total",
                "Cached-read calls answered by a bucket's fallback upstream",
                &["upstream"],
            ),
            stale_served: counter(
                "shardcache_stale_responses_total",
                "Answers served with stale metadata because revalidation failed",
                &["upstream"],
            ),
            upstream_retries: counter(
                "shardcache_upstream_retries_total",
                "Upstream calls retried and bodies resumed, by reason",
                &["upstream", "reason"],
            ),
            upstream_hedges: counter(
                "shardcache_upstream_hedges_total",
                "Hedged chunk reads sent and won",
                &["upstream", "outcome"],
            ),
            upstream_breaker: gauge(
                "shardcache_upstream_breaker_state",
                "Upstream circuit breaker: 0 closed, 1 probing, 2 open",
                &["upstream"],
            ),
            upstream_breaker_rejections: counter(
                "shardcache_upstream_breaker_rejections_total",
                "Upstream calls failed fast by an open circuit breaker",
                &["upstream"],
            ),
            upstream_bytes: counter(
                "shardcache_upstream_received_bytes_total",
                "Chunk bytes fetched from upstreams",
                &["upstream"],
            ),
            upstream_duration: histogram(
                "shardcache_upstream_request_duration_seconds",
                "Upstream time to response headers",
                &["upstream", "call"],
            ),
            cache_usage: gauge("shardcache_cache_usage_bytes", "Bytes held per cache tier", &["tier"]),
            cache_capacity: gauge("shardcache_cache_capacity_bytes", "Capacity per cache tier", &["tier"]),
            fills: counter(
                "shardcache_chunk_fills_total",
                "Upstream chunk fetches by result",
                &["result"],
            ),
            auth_failures: counter(
                "shardcache_auth_failures_total",
                "Requests whose credentials were refused, by S3 error code",
                &["code"],
            ),
            access_denied: counter(
                "shardcache_access_denied_total",
                "Requests the policy denied, by action",
                &["action"],
            ),
            audit_dropped: single(
                "shardcache_audit_dropped_total",
                "Audit records dropped because the audit writer fell behind",
            ),
            lineage_dropped: single(
                "shardcache_lineage_dropped_total",
                "Lineage reads dropped because the lineage writer fell behind",
            ),
            reloads: counter(
                "shardcache_reloads_total",
                "Reloads of the auth keys and policy and of the TLS certificate, by result",
                &["what", "result"],
            ),
            readahead: single(
                "shardcache_readahead_chunks_total",
                "Chunk fetches started by read-ahead",
            ),
            disk_write_waits: single(
                "shardcache_disk_write_waits_total",
                "Fills that waited for disk write-queue room",
            ),
            cache_read_errors: single(
                "shardcache_cache_read_errors_total",
                "Cache entries that failed to load",
            ),
            io_engine: gauge("shardcache_disk_io_engine_info", "Active disk I/O engine", &["engine"]),
            disk_evictions: single("shardcache_disk_evictions_total", "Entries the disk tier evicted"),
            disk_write_drops: single(
                "shardcache_disk_write_drops_total",
                "Entries not written to disk because every slot of their size was busy",
            ),
            disk_admissions_declined: single(
                "shardcache_disk_admissions_declined_total",
                "Chunks a full disk tier did not take in place of a chunk read more often or more recently",
            ),
            working_set_bytes: single_gauge(
                "shardcache_working_set_bytes",
                "Bytes one pass over the data reads (distinct chunks read over two reuse distances)",
            ),
            disk_io_errors: with_values(
                counter(
                    "shardcache_disk_io_errors_total",
                    "Disk tier I/O errors by operation",
                    &["op"],
                ),
                &["read", "write", "clear"],
            ),
            disk_io_bytes: with_values(
                counter(
                    "shardcache_disk_io_bytes_total",
                    "Bytes the disk tier read and wrote",
                    &["op"],
                ),
                &["read", "write"],
            ),
            disk_degraded: single_gauge("shardcache_disk_degraded", "1 while the disk tier is degraded"),
            disk_recovery_seconds: {
                let g = Gauge::new("shardcache_disk_recovery_seconds", "Time the disk tier took to open")
                    .expect("static metric definition");
                register(Box::new(g.clone()), "gauge");
                g
            },
            warmed_bytes: counter(
                "shardcache_warmed_bytes_total",
                "Bytes of objects warmed on request, by where they were",
                &["source"],
            ),
            peer_reads: with_values(
                counter(
                    "shardcache_peer_reads_total",
                    "Chunk fetches sent to the chunk's owner, by outcome",
                    &["outcome"],
                ),
                &["owner_hit", "owner_fill", "failed"],
            ),
            peer_received_bytes: single(
                "shardcache_peer_received_bytes_total",
                "Chunk bytes received from owners",
            ),
            peer_served: with_values(
                counter(
                    "shardcache_peer_served_total",
                    "Peer requests answered as the owner, by outcome",
                    &["outcome"],
                ),
                &["hit", "fill", "refused", "failed"],
            ),
            peer_served_bytes: single("shardcache_peer_served_bytes_total", "Chunk bytes sent to peers"),
            cluster_members: single_gauge("shardcache_cluster_members", "Members chunks are placed over"),
            cluster_ejected: single_gauge("shardcache_cluster_ejected_members", "Members whose breaker is open"),
            cluster_placements: with_values(
                counter(
                    "shardcache_cluster_placements_total",
                    "Chunk fetches by the node asked",
                    &["owner"],
                ),
                &["self", "peer"],
            ),
            peer_breaker: gauge(
                "shardcache_peer_breaker_state",
                "Peer circuit breaker: 0 closed, 1 probing, 2 open (ejected)",
                &["peer"],
            ),
            peer_breaker_rejections: counter(
                "shardcache_peer_breaker_rejections_total",
                "Chunk fetches that skipped an ejected peer",
                &["peer"],
            ),
            described: described.into_inner(),
            registry,
        }
    }

    /// Every metric of the catalogue: name, type and labels, as METRICS.md lists them.
    pub fn described(&self) -> &[Described] {
        &self.described
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

    /// The registry, for foyer to register its own metrics in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding to a Vec only fails on invalid metric names, which the catalogue rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// `counter` with each of `values` of its one label exported from the start (at 0), so that
/// dashboards and alerts see the series before the first event.
fn with_values(counter: IntCounterVec, values: &[&str]) -> IntCounterVec {
    for value in values {
        counter.with_label_values(&[value]);
    }
    counter
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// METRICS.md lists exactly the catalogue's metrics, each with its type and labels.
    #[test]
    fn metrics_md_matches_the_catalogue() {
        let doc = include_str!("../../../METRICS.md");
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
        let metrics = Metrics::new();
        let catalogue = metrics.described();
        for d in catalogue {
            assert!(listed.contains(d), "METRICS.md does not list {d:?} as such");
        }
        for d in &listed {
            assert!(
                catalogue.contains(d),
                "METRICS.md lists {d:?}, which is not in the catalogue"
            );
        }
    }
}

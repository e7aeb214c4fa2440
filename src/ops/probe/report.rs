//! What `shardcache probe` found: a table for people, JSON for machines, and the egress a warm
//! shardcache would save in one epoch over the whole prefix.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::ops::human_bytes;

/// A whole probe.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `s3://bucket/prefix`.
    pub target: String,
    /// Objects listed under the prefix.
    pub listed_objects: u64,
    /// Their bytes.
    pub listed_bytes: u64,
    /// The listing stopped at `--list-max`: the prefix holds more.
    pub listing_truncated: bool,
    /// ListObjectsV2 requests the listing took (sent to the upstream directly).
    pub listing_requests: u64,
    /// Objects read in each pass.
    pub sampled_objects: u64,
    /// Their bytes.
    pub sampled_bytes: u64,
    /// Concurrent readers in each pass.
    pub readers: usize,
    /// The seed of the sample (`--seed` draws the same objects again).
    pub seed: u64,
    /// The passes, in the order run: `direct`, `cold`, `warm`.
    pub passes: Vec<Pass>,
    /// shardcache's cache capacity (the larger of its tiers), when its `/metrics` was read.
    pub cache_capacity_bytes: Option<u64>,
    /// Projected egress per epoch; absent without upstream counts of the warm pass.
    pub egress: Option<Egress>,
    /// Dollars per GB (10^9 bytes) of egress.
    pub price_per_gb: f64,
}

/// One pass over the sample.
#[derive(Debug, Serialize)]
pub struct Pass {
    /// `direct` (from the upstream), `cold` or `warm` (through shardcache).
    pub name: &'static str,
    /// Objects read whole and right.
    pub objects: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Wall time of the pass.
    pub seconds: f64,
    /// `bytes / seconds`.
    pub bytes_per_second: f64,
    /// Median time to the answer's header.
    pub ttfb_p50_ms: f64,
    /// 99th percentile of the same.
    pub ttfb_p99_ms: f64,
    /// Requests sent to the upstream during the pass: the probe's own GETs for `direct`, and
    /// for the passes through shardcache the growth of `shardcache_upstream_requests_total`
    /// (absent when its `/metrics` could not be read).
    pub upstream_requests: Option<u64>,
    /// Bytes received from the upstream: the bodies for `direct`; the growth of
    /// `shardcache_upstream_received_bytes_total` through shardcache.
    pub upstream_bytes: Option<u64>,
    /// Objects that failed or came back wrong, with why.
    pub errors: Vec<String>,
}

/// Egress in one epoch over the whole prefix.
#[derive(Debug, PartialEq, Serialize)]
pub struct Egress {
    /// Without a cache: every byte, every epoch.
    pub direct_bytes: u64,
    /// Through a warm shardcache.
    pub cached_bytes: u64,
    /// The difference.
    pub saved_bytes: u64,
    /// The difference at `price_per_gb`.
    pub saved_dollars: f64,
}

/// The `p`th percentile (nearest rank) of `values`; 0 when empty.
pub fn percentile(values: &mut [Duration], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1].as_secs_f64() * 1e3
}

/// The egress of one epoch over `listed` bytes, when a warm pass over a sample of `sampled` bytes
/// still fetched `warm_fetched` from the upstream. A cache holds at most `capacity` of a prefix
/// larger than itself, so only that much of an epoch can come from it.
pub fn project(listed: u64, sampled: u64, warm_fetched: u64, capacity: Option<u64>, price_per_gb: f64) -> Egress {
    let missed = (warm_fetched as f64 / sampled.max(1) as f64).min(1.0);
    let held = capacity.map_or(listed, |c| c.min(listed));
    let saved = ((held as f64 * (1.0 - missed)) as u64).min(listed);
    Egress {
        direct_bytes: listed,
        cached_bytes: listed - saved,
        saved_bytes: saved,
        saved_dollars: saved as f64 / 1e9 * price_per_gb,
    }
}

fn rate(bytes_per_second: f64) -> String {
    format!("{}/s", human_bytes(bytes_per_second as u64))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let more = if self.listing_truncated { "at least " } else { "" };
        let _ = writeln!(
            out,
            "{}: {more}{} objects, {more}{} ({} listing request{})\nsample: {} objects, {}; {} readers; seed {}\n",
            self.target,
            self.listed_objects,
            human_bytes(self.listed_bytes),
            self.listing_requests,
            if self.listing_requests == 1 { "" } else { "s" },
            self.sampled_objects,
            human_bytes(self.sampled_bytes),
            self.readers,
            self.seed,
        );
        let _ = writeln!(
            out,
            "{:<8}{:>9}{:>14}{:>11}{:>11}{:>19}{:>16}",
            "pass", "objects", "throughput", "TTFB p50", "TTFB p99", "upstream requests", "upstream bytes"
        );
        for p in &self.passes {
            let requests = p.upstream_requests.map_or("n/a".to_owned(), |n| n.to_string());
            let bytes = p.upstream_bytes.map_or("n/a".to_owned(), human_bytes);
            let _ = writeln!(
                out,
                "{:<8}{:>9}{:>14}{:>8.0} ms{:>8.0} ms{:>19}{:>16}",
                p.name,
                p.objects,
                rate(p.bytes_per_second),
                p.ttfb_p50_ms,
                p.ttfb_p99_ms,
                requests,
                bytes
            );
        }
        let cold = self.passes.iter().find(|p| p.name == "cold");
        if let Some(fetched) = cold.and_then(|p| p.upstream_bytes).filter(|&b| b < self.sampled_bytes) {
            let _ = writeln!(
                out,
                "the cold pass fetched {} of the sample's {}: the rest was cached already (another --seed draws other objects)",
                human_bytes(fetched),
                human_bytes(self.sampled_bytes)
            );
        }
        for p in &self.passes {
            for e in p.errors.iter().take(5) {
                let _ = writeln!(out, "{} failed: {e}", p.name);
            }
            if p.errors.len() > 5 {
                let _ = writeln!(out, "{}: {} more failed", p.name, p.errors.len() - 5);
            }
        }
        match &self.egress {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "\negress per epoch over the {} listed objects: {} read directly, {} through a warm shardcache",
                    self.listed_objects,
                    human_bytes(e.direct_bytes),
                    human_bytes(e.cached_bytes),
                );
                let _ = writeln!(
                    out,
                    "saved per epoch: {} (${:.2} at ${}/GB)",
                    human_bytes(e.saved_bytes),
                    e.saved_dollars,
                    self.price_per_gb
                );
                if let Some(c) = self.cache_capacity_bytes.filter(|&c| c < self.listed_bytes) {
                    let _ = writeln!(
                        out,
                        "the prefix is larger than shardcache's cache ({}): at most that much of an epoch comes from it",
                        human_bytes(c)
                    );
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "\nno egress projection: shardcache's /metrics could not be read (--admin)"
                );
            }
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(percentile(&mut [Duration::from_millis(7)], 99.0), 7.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }

    #[test]
    fn a_warm_cache_saves_what_it_can_hold() {
        // All of a sample from the cache, the whole prefix held: everything saved.
        let all = project(10_000_000_000, 1000, 0, Some(20_000_000_000), 0.09);
        assert_eq!((all.cached_bytes, all.saved_bytes), (0, 10_000_000_000));
        assert!((all.saved_dollars - 0.9).abs() < 1e-9);
        // A prefix four times the cache: a quarter of it at most.
        let big = project(40_000_000_000, 1000, 0, Some(10_000_000_000), 0.09);
        assert_eq!(big.saved_bytes, 10_000_000_000);
        // A warm pass that still fetched a tenth of the sample.
        let leaky = project(1000, 1000, 100, None, 0.0);
        assert_eq!((leaky.saved_bytes, leaky.cached_bytes), (900, 100));
    }
}

//! How shardcache declares its metrics. Each subsystem declares its own, next to the code that
//! moves them (`StoreMetrics` in shardcache-store, `UpstreamMetrics`, `ClusterMetrics`,
//! `CacheMetrics`, and the server's request metrics), through one [`Registry`], which notes every
//! metric it registers so that METRICS.md can be checked against what is exported.
//!
//! Names carry the `shardcache_` prefix and a unit suffix; label values come from the small
//! enums below, from S3 operation names as AWS spells them, or from config-defined upstream
//! names, so every label set is bounded (no object keys, no bucket names). foyer registers its
//! own metrics (prefix `foyer_`) in the same registry. It uses no other crate of ours.

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, TextEncoder,
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

/// Histogram buckets for durations: 100 us to about 13 s.
const SECONDS_BUCKETS: (f64, f64, usize) = (0.0001, 2.0, 18);

/// The registry every metric is registered in, and the notes of what was registered.
#[derive(Default)]
pub struct Registry {
    registry: prometheus::Registry,
    described: Mutex<Vec<Described>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `metric` and notes it in the catalogue METRICS.md is checked against.
    fn register<M: Collector + Clone + 'static>(&self, metric: M, kind: &'static str) -> M {
        let mut described = self.described.lock();
        for desc in metric.desc() {
            described.push(Described {
                name: desc.fq_name.clone(),
                kind,
                labels: desc.variable_labels.clone(),
            });
        }
        self.registry
            .register(Box::new(metric.clone()))
            .expect("metric registered once");
        metric
    }

    /// A counter with labels.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
        self.register(c, "counter")
    }

    /// A counter with one label, each of whose `values` is exported from the start (at 0), so
    /// that dashboards and alerts see the series before the first event.
    pub fn counter_of(&self, name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
        let c = self.counter(name, help, &[label]);
        for value in values {
            c.with_label_values(&[value]);
        }
        c
    }

    /// A counter without labels.
    pub fn single(&self, name: &str, help: &str) -> IntCounter {
        let c = IntCounter::new(name, help).expect("static metric definition");
        self.register(c, "counter")
    }

    /// A gauge with labels.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
        self.register(g, "gauge")
    }

    /// A gauge without labels.
    pub fn single_gauge(&self, name: &str, help: &str) -> IntGauge {
        let g = IntGauge::new(name, help).expect("static metric definition");
        self.register(g, "gauge")
    }

    /// A floating-point gauge without labels.
    pub fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        let g = Gauge::new(name, help).expect("static metric definition");
        self.register(g, "gauge")
    }

    /// A histogram of durations in seconds.
    pub fn histogram(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let (start, factor, count) = SECONDS_BUCKETS;
        let buckets = exponential_buckets(start, factor, count).expect("static buckets");
        let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("static metric definition");
        self.register(h, "histogram")
    }

    /// Every metric registered: name, type and labels, as METRICS.md lists them.
    pub fn described(&self) -> Vec<Described> {
        self.described.lock().clone()
    }

    /// The Prometheus registry, for foyer to register its own metrics in.
    pub fn prometheus(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding to a Vec only fails on invalid metric names, which the definitions rule out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

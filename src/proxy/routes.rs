//! Which upstream serves a client's bucket, under which name, and how long its metadata is
//! trusted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use crate::cache::read::BucketSource;
use crate::cluster::Peers;
use crate::config::Residency;
use crate::upstream::{Failover, Floor, FsOrigin, Origin, S3Origin};

/// A configured upstream.
pub struct Upstream {
    /// Name from the config (a metric label).
    pub name: Arc<str>,
    /// The origin, for cached reads.
    pub origin: Arc<dyn Origin>,
    /// What else this upstream can do.
    pub kind: UpstreamKind,
    /// The least a passed-through object's bytes must deliver (cached reads get theirs from
    /// `origin`); `None`: no floor.
    pub floor: Option<Floor>,
}

/// How requests other than cached reads reach an upstream.
#[derive(Clone)]
pub enum UpstreamKind {
    /// Forwarded through Pingora, re-signed.
    S3(Arc<S3Origin>),
    /// Answered locally (listings); writes are not implemented.
    Fs(Arc<FsOrigin>),
}

impl Upstream {
    /// An S3 upstream; cached reads go through `cached` (`origin` behind retries and a breaker),
    /// passed-through objects' bytes are held to `floor`.
    pub fn s3(name: &str, origin: Arc<S3Origin>, cached: Arc<dyn Origin>, floor: Option<Floor>) -> Self {
        Self {
            name: name.into(),
            origin: cached,
            kind: UpstreamKind::S3(origin),
            floor,
        }
    }

    /// A local-directory upstream.
    pub fn fs(name: &str, origin: FsOrigin) -> Self {
        let origin = Arc::new(origin);
        Self {
            name: name.into(),
            origin: origin.clone(),
            kind: UpstreamKind::Fs(origin),
            floor: None,
        }
    }
}

/// Where one client bucket goes.
#[derive(Clone)]
pub struct Route {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// What cached reads of the bucket read from: the upstream's origin (with the bucket's
    /// fallback replica, if any), the bucket's name there, its metadata's freshness, the cluster.
    pub source: BucketSource,
    /// Where the bucket's objects may be cached.
    pub residency: Residency,
}

impl Route {
    /// A route to `bucket` at `upstream`.
    pub fn new(
        upstream: Arc<Upstream>,
        bucket: &str,
        fresh: Freshness,
        residency: Residency,
        peers: Option<Arc<Peers>>,
    ) -> Self {
        let source = BucketSource {
            upstream: upstream.name.clone(),
            origin: upstream.origin.clone(),
            bucket: bucket.into(),
            meta_ttl: fresh.ttl,
            stale_if_error: fresh.stale_if_error,
            peers,
        };
        Self {
            upstream,
            source,
            residency,
        }
    }
}

/// A bucket route as the composition root builds it.
pub struct BucketRoute {
    /// Client bucket name.
    pub name: String,
    /// Upstream name.
    pub upstream: String,
    /// Upstream bucket name.
    pub upstream_bucket: String,
    /// How long its metadata is trusted.
    pub fresh: Freshness,
    /// Where the bucket's objects may be cached.
    pub residency: Residency,
    /// A replica on another upstream for cached reads while this one fails.
    pub fallback: Option<FallbackRoute>,
}

/// A bucket's replica on another upstream.
pub struct FallbackRoute {
    /// The upstream holding it.
    pub upstream: String,
    /// Its bucket name there.
    pub bucket: String,
    /// Counts the calls it answered.
    pub served: IntCounter,
}

/// How long a bucket's metadata is trusted, and may be served stale on upstream errors.
#[derive(Clone, Copy, Debug)]
pub struct Freshness {
    /// Metadata TTL; `None` for immutable buckets.
    pub ttl: Option<Duration>,
    /// Staleness allowed when revalidation fails.
    pub stale_if_error: Duration,
}

/// Bucket name to route.
pub struct Router {
    buckets: HashMap<String, Route>,
    default: Option<(Arc<Upstream>, Freshness)>,
    upstreams: HashMap<String, Arc<Upstream>>,
    peers: Option<Arc<Peers>>,
}

impl Router {
    /// Builds the table. Names were validated with the config, so unknown upstreams are skipped.
    /// With `peers` (cluster mode), client routes fetch chunks through the cluster.
    pub fn new(
        upstreams: Vec<Upstream>,
        routes: Vec<BucketRoute>,
        default: Option<(&str, Freshness)>,
        peers: Option<Arc<Peers>>,
    ) -> Self {
        let upstreams: HashMap<String, Arc<Upstream>> = upstreams
            .into_iter()
            .map(|u| (u.name.to_string(), Arc::new(u)))
            .collect();
        let buckets = routes
            .into_iter()
            .filter_map(|r| {
                let mut upstream = upstreams.get(&r.upstream)?.clone();
                if let Some(f) = r.fallback {
                    let replica = upstreams.get(&f.upstream)?;
                    let origin = Failover::new(upstream.origin.clone(), replica.origin.clone(), &f.bucket, f.served);
                    upstream = Arc::new(Upstream {
                        name: upstream.name.clone(),
                        origin: Arc::new(origin),
                        kind: upstream.kind.clone(),
                        floor: upstream.floor,
                    });
                }
                let route = Route::new(upstream, &r.upstream_bucket, r.fresh, r.residency, peers.clone());
                Some((r.name, route))
            })
            .collect();
        let default = default.and_then(|(name, fresh)| Some((upstreams.get(name)?.clone(), fresh)));
        Self {
            buckets,
            default,
            upstreams,
            peers,
        }
    }

    /// The route of a client bucket, if any.
    pub fn route(&self, bucket: &str) -> Option<Route> {
        self.buckets.get(bucket).cloned().or_else(|| {
            let (upstream, fresh) = self.default.as_ref()?;
            // In a host name, `DATA` is `data`: a name the policy reads as another bucket.
            let virtual_hosted = matches!(&upstream.kind, UpstreamKind::S3(o) if o.virtual_hosted());
            if virtual_hosted && bucket.bytes().any(|b| b.is_ascii_uppercase()) {
                return None;
            }
            Some(Route::new(
                upstream.clone(),
                bucket,
                *fresh,
                Residency::Disk,
                self.peers.clone(),
            ))
        })
    }

    /// The cluster, in cluster mode.
    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.as_ref()
    }

    /// An upstream by name (without a bucket's fallback replica).
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// The upstream that answers service-level calls (ListBuckets).
    pub fn default_upstream(&self) -> Option<&Arc<Upstream>> {
        self.default.as_ref().map(|(u, _)| u)
    }

    /// Client bucket names listed in the config.
    pub fn configured_buckets(&self) -> impl Iterator<Item = &str> {
        self.buckets.keys().map(String::as_str)
    }
}

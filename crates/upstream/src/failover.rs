//! A bucket with a replica: reads go to the primary upstream, and to the fallback (another
//! endpoint or provider holding a copy of the bucket) when the primary is failing.
//!
//! Only failures move a read: a 5xx, 429, a timeout, an unreachable upstream, or an open
//! breaker. A 404 or a 403 from the primary is its answer. The two upstreams name versions with
//! their own ETags, and every chunk read is pinned to an ETag (`If-Match`) that only the
//! upstream which named it honours, so bytes of the two never mix: chunks are cached by ETag,
//! and a read pinned to a version the primary does not know (412) is tried on the fallback.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use prometheus::IntCounter;

use super::{Body, Opened, Origin, OriginError};
use shardcache_types::{ETag, ObjectMeta};

/// The primary upstream, with a fallback bucket on another.
pub struct Failover {
    primary: Arc<dyn Origin>,
    fallback: Arc<dyn Origin>,
    /// The bucket's name at the fallback.
    fallback_bucket: String,
    /// Calls the fallback answered.
    served: IntCounter,
}

impl Failover {
    /// Reads of `primary`, falling back to `fallback_bucket` at `fallback`; `served` counts the
    /// calls the fallback answered.
    pub fn new(primary: Arc<dyn Origin>, fallback: Arc<dyn Origin>, fallback_bucket: &str, served: IntCounter) -> Self {
        Self {
            primary,
            fallback,
            fallback_bucket: fallback_bucket.to_owned(),
            served,
        }
    }

    fn served<T>(&self, answer: Result<T, OriginError>) -> Result<T, OriginError> {
        if answer.is_ok() {
            self.served.inc();
        }
        answer
    }
}

#[async_trait]
impl Origin for Failover {
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, OriginError> {
        match self.primary.head(bucket, key).await {
            Err(e) if e.upstream_failing() => self.served(self.fallback.head(&self.fallback_bucket, key).await),
            answer => answer,
        }
    }

    async fn open(&self, bucket: &str, key: &str, span: Range<u64>) -> Result<Opened, OriginError> {
        match self.primary.open(bucket, key, span.clone()).await {
            Err(e) if e.upstream_failing() => self.served(self.fallback.open(&self.fallback_bucket, key, span).await),
            answer => answer,
        }
    }

    async fn read(&self, bucket: &str, key: &str, span: Range<u64>, etag: &ETag) -> Result<Body, OriginError> {
        match self.primary.read(bucket, key, span.clone(), etag).await {
            // A version the primary does not have may be the fallback's.
            Err(e) if e.upstream_failing() || matches!(e, OriginError::Changed) => {
                match self.fallback.read(&self.fallback_bucket, key, span, etag).await {
                    Ok(body) => self.served(Ok(body)),
                    // Neither has the version: it changed.
                    Err(OriginError::Changed) => Err(OriginError::Changed),
                    // Otherwise the primary's answer stands.
                    Err(_) => Err(e),
                }
            }
            answer => answer,
        }
    }
}

//! Prefetching an object into the cache without sending it anywhere (`POST /warm` on the admin
//! listener, driven by `shardcache warm`): the bucket's route checked, then
//! [`ObjectReader::warm`](crate::cache::read::ObjectReader::warm), which takes each chunk through
//! the same path as a GetObject. The report says how much was already cached.

use super::ProxyState;
use crate::config::Residency;
use crate::upstream::OriginError;

/// What warming one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmReport {
    /// Object size in bytes.
    pub size: u64,
    /// ETag of the version now cached.
    pub etag: String,
    /// Chunks the object has.
    pub chunks: u64,
    /// Bytes that were already in a cache tier.
    pub cached_bytes: u64,
}

/// Why an object could not be warmed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WarmError {
    /// HTTP status for the admin answer: 404 (a bucket with no route), 409 (a bucket that is
    /// not cached), or the status a GetObject of the key would get for the upstream's failure
    /// ([`OriginError::answer`]: 404 for no such key, 502, 503, 504 for a failing upstream).
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl WarmError {
    fn upstream(e: &OriginError) -> Self {
        Self {
            status: e.answer().status(),
            message: e.to_string(),
        }
    }
}

impl ProxyState {
    /// Brings every chunk of `bucket/key` into the cache.
    pub async fn warm(&self, bucket: &str, key: &str) -> Result<WarmReport, WarmError> {
        let route = self.router.route(bucket).ok_or_else(|| WarmError {
            status: 404,
            message: format!("bucket {bucket:?} has no route in the config"),
        })?;
        // `memory` residency is kept by the store itself (its chunks never reach the disk);
        // `none` means nothing of the bucket is kept, warmed or not.
        if route.residency == Residency::None {
            return Err(WarmError {
                status: 409,
                message: format!("bucket {bucket:?} is not cached (`cache: none`): there is nothing to warm"),
            });
        }
        let warmed = self
            .reader
            .warm(&route.source, key)
            .await
            .map_err(|e| WarmError::upstream(&e))?;
        let counter = |source: &str| self.metrics.warmed_bytes.with_label_values(&[source]);
        counter("cache").inc_by(warmed.cached_bytes);
        counter("upstream").inc_by(warmed.size - warmed.cached_bytes);
        Ok(WarmReport {
            size: warmed.size,
            etag: warmed.etag.as_str().to_owned(),
            chunks: warmed.chunks,
            cached_bytes: warmed.cached_bytes,
        })
    }
}

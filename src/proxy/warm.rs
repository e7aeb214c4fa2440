//! Prefetching an object into the cache without sending it anywhere (`POST /warm` on the admin
//! listener, driven by `shardcache warm`).
//!
//! Each chunk goes through the same path as a GetObject: a cached chunk is left alone, a chunk in
//! flight is joined, a missing one is fetched (ETag-pinned) and stored. The bytes are counted and
//! dropped; the report says how much was already cached.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use super::object::fetcher;
use super::ProxyState;
use crate::cache::plan::{chunk_count, chunk_span};
use crate::cache::{CacheKey, ChunkRead, ObjectRef};
use crate::config::Residency;
use crate::upstream::OriginError;

/// Chunks of one object fetched at once.
const CHUNKS_IN_FLIGHT: usize = 4;

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
        let object = ObjectRef {
            upstream: route.upstream.name.clone(),
            bucket: route.bucket.clone(),
            key: key.into(),
        };
        // With the checksums too: the SDKs ask for them on every GetObject, and metadata without
        // them would cost each warmed object a HEAD at its first read. Chunk 0 is not opened
        // with the lookup (a HEAD, where a GET of chunk 0 would go beside it): each chunk is
        // favoured before its fill starts, so that a full disk tier admits it.
        let looked = self
            .meta
            .get(&self.cache, &self.metrics, &route, &object, None, true)
            .await
            .map_err(|e| WarmError::upstream(&e))?;
        let meta = looked.meta;
        let chunk_size = self.cache.chunk_size();
        let etag: Arc<str> = meta.etag.as_str().into();
        let chunks = chunk_count(chunk_size, meta.size);
        let cached: Vec<Result<u64, WarmError>> = stream::iter(0..chunks)
            .map(|index| {
                let span = chunk_span(index, chunk_size, meta.size);
                let len = span.end - span.start;
                let key = CacheKey::Chunk(object.clone(), etag.clone(), index);
                self.cache.favour(&key);
                let fetch = fetcher(self, &route, &object, &meta.etag, span);
                async move {
                    let mut reader = match self.cache.chunk(key, len, 0..len, fetch).await {
                        ChunkRead::Hit(..) | ChunkRead::Disk(_) => return Ok(len),
                        ChunkRead::Leader(r) | ChunkRead::Follower(r) => r,
                    };
                    // A fill ends cleanly only with exactly `len` bytes (it checks), so draining
                    // to the end is enough.
                    loop {
                        match reader.next().await {
                            Ok(Some(_)) => {}
                            Ok(None) => return Ok(0),
                            Err(e) => return Err(WarmError::upstream(&e)),
                        }
                    }
                }
            })
            .buffer_unordered(CHUNKS_IN_FLIGHT)
            .collect()
            .await;
        let cached_bytes = cached.into_iter().sum::<Result<u64, WarmError>>()?;
        let counter = |source: &str| self.metrics.warmed_bytes.with_label_values(&[source]);
        counter("cache").inc_by(cached_bytes);
        counter("upstream").inc_by(meta.size - cached_bytes);
        Ok(WarmReport {
            size: meta.size,
            etag: meta.etag.as_str().to_owned(),
            chunks,
            cached_bytes,
        })
    }
}

//! Chunk fetches: from the chunk's cluster owner, or a ranged read of the upstream pinned to
//! the object's ETag, each counted and timed under the upstream's metrics.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus::IntCounter;

use super::{BucketSource, Parts};
use crate::{ChunkFetch, Fetched};
use shardcache_cluster::{ChunkPlace, Served, UpstreamFetch};
use shardcache_s3::Operation;
use shardcache_types::{ETag, ObjectRef};
use shardcache_upstream::UpstreamMetrics;
use shardcache_upstream::{OriginBody, OriginError};

/// The fetch of bytes `span` (one chunk) of version `etag` of `object`: from the chunk's cluster
/// owner when another member owns it, else (and should the owner fail) a ranged read of the
/// upstream pinned to the ETag.
pub(super) fn fetcher(
    parts: &Parts,
    source: &BucketSource,
    object: &ObjectRef,
    etag: &ETag,
    span: Range<u64>,
) -> impl FnOnce() -> ChunkFetch {
    let (parts, source, object, etag) = (parts.clone(), source.clone(), object.clone(), etag.clone());
    let index = span.start / parts.cache.chunk_size();
    // Built only when the chunk is fetched: most reads are hits.
    move || {
        let upstream = upstream_fetch(&parts.metrics, &source, &object, &etag);
        match &source.peers {
            Some(peers) => {
                let fetch = peers.fetch(ChunkPlace::new(&object, index), span, etag, upstream);
                Box::pin(async move {
                    Ok(match fetch.await? {
                        (body, Served::Owner) => parts.owner_sent(body),
                        (body, Served::Upstream) => Fetched::kept(body),
                    })
                })
            }
            None => Box::pin(async move { Ok(Fetched::kept(upstream(span).await?)) }),
        }
    }
}

/// Ranged reads of version `etag` of `object` from the upstream, metered.
pub(super) fn upstream_fetch(
    metrics: &Arc<UpstreamMetrics>,
    source: &BucketSource,
    object: &ObjectRef,
    etag: &ETag,
) -> UpstreamFetch {
    let origin = source.origin.clone();
    let name = source.upstream.clone();
    let bucket = source.bucket.clone();
    let key = object.key.clone();
    let etag = etag.clone();
    let metrics = metrics.clone();
    Box::new(move |span| {
        Box::pin(async move {
            let request = origin.read(&bucket, &key, span, &etag);
            let body = timed(&metrics, &name, Operation::GetObject, request)
                .await
                .inspect_err(|_| {
                    let labels = [&*name, Operation::GetObject.as_str()];
                    metrics.errors.with_label_values(&labels).inc();
                })?;
            Ok(MeteredBody::boxed(body, &metrics, &name))
        })
    })
}

/// Counts an upstream call to `upstream` and times it until it answers (its body, if any, is
/// metered by [`MeteredBody`]). Failures are the caller's to count: what is one depends on why
/// it asked.
pub(super) async fn timed<T>(
    metrics: &UpstreamMetrics,
    upstream: &str,
    call: Operation,
    request: impl Future<Output = Result<T, OriginError>>,
) -> Result<T, OriginError> {
    let labels = [upstream, call.as_str()];
    metrics.requests.with_label_values(&labels).inc();
    let started = Instant::now();
    let result = request.await;
    metrics
        .duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    result
}

/// An upstream GET's body that counts its bytes and errors.
pub(super) struct MeteredBody {
    body: Box<dyn OriginBody>,
    bytes: IntCounter,
    errors: IntCounter,
}

impl MeteredBody {
    /// `body`, from a GET to upstream `name`, metered.
    pub(super) fn boxed(body: Box<dyn OriginBody>, metrics: &UpstreamMetrics, name: &str) -> Box<dyn OriginBody> {
        Box::new(Self {
            body,
            bytes: metrics.received_bytes.with_label_values(&[name]),
            errors: metrics.errors.with_label_values(&[name, Operation::GetObject.as_str()]),
        })
    }
}

#[async_trait]
impl OriginBody for MeteredBody {
    async fn next(&mut self) -> Result<Option<&[u8]>, OriginError> {
        match self.body.next().await {
            Ok(piece) => {
                self.bytes.inc_by(piece.map_or(0, |p| p.len() as u64));
                Ok(piece)
            }
            Err(e) => {
                self.errors.inc();
                Err(e)
            }
        }
    }

    async fn resume(&mut self, error: &OriginError) -> Result<bool, OriginError> {
        self.body.resume(error).await
    }
}

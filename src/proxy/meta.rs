//! Object metadata through the cache: fresh entries come from the cache, the rest from the
//! upstream, with concurrent lookups of one object sharing one upstream request.
//!
//! An object the cache has never seen is opened with a ranged GET of the chunk the request
//! starts in, not a HEAD: its answer carries the metadata (size from `Content-Range`, ETag,
//! headers), and its body becomes that chunk's fill. A cold read thus costs one round trip before
//! its first byte, not two. Stale metadata is revalidated with a HEAD, which moves no object
//! bytes: the chunks of an unchanged object are most likely still cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::object::{timed, MeteredBody};
use super::routes::Route;
use crate::cache::plan::chunk_span;
use crate::cache::{CacheKey, ChunkCache, ChunkFetch, MetaEntry, ObjectRef, StartedFill};
use crate::metrics::{Metrics, UpstreamCall};
use crate::types::ObjectMeta;
use crate::upstream::OriginError;

/// What a shared lookup found: the metadata, and the chunk whose fill it started, if any.
type Found = (Arc<ObjectMeta>, Option<(u64, StartedFill)>);
type Lookup = Shared<BoxFuture<'static, Result<Found, Arc<OriginError>>>>;

/// Metadata for one request.
pub struct Looked {
    /// The object's metadata.
    pub meta: Arc<ObjectMeta>,
    /// The chunk this request's own lookup started fetching along with the metadata, and its
    /// fill: the request reads that chunk from it (its miss, whether or not the fill has ended).
    pub opened: Option<(u64, StartedFill)>,
}

/// Metadata lookups in flight, by object.
#[derive(Default)]
pub struct MetaLookups {
    inflight: Arc<Mutex<HashMap<ObjectRef, Lookup>>>,
}

/// The cache's answer for an object's metadata.
enum Cached {
    Fresh(Arc<ObjectMeta>),
    Stale,
    Absent,
}

impl MetaLookups {
    /// The object's metadata: cached if fresh, else from the upstream. `first_chunk` is the
    /// chunk the request will read first (`None` for a HEAD or a read that needs the size to
    /// know where it starts). To force an upstream lookup (the upstream reported the object
    /// changed), drop the cached entry first.
    pub async fn get(
        &self,
        cache: &ChunkCache,
        metrics: &Arc<Metrics>,
        route: &Route,
        object: &ObjectRef,
        first_chunk: Option<u64>,
    ) -> Result<Looked, Arc<OriginError>> {
        let open = match cached(cache, route, object).await {
            Cached::Fresh(meta) => return Ok(Looked { meta, opened: None }),
            Cached::Stale => None,
            Cached::Absent => first_chunk,
        };
        let (lookup, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(object) {
                Some(lookup) => (lookup.clone(), false),
                None => {
                    let lookup = self.start(cache.clone(), metrics.clone(), route.clone(), object.clone(), open);
                    inflight.insert(object.clone(), lookup.clone());
                    (lookup, true)
                }
            }
        };
        let (meta, opened) = lookup.await?;
        Ok(Looked {
            meta,
            opened: opened.filter(|_| leader),
        })
    }

    fn start(
        &self,
        cache: ChunkCache,
        metrics: Arc<Metrics>,
        route: Route,
        object: ObjectRef,
        open: Option<u64>,
    ) -> Lookup {
        let inflight = self.inflight.clone();
        async move {
            // A lookup that finished between our cache check and our taking the in-flight table
            // has stored its answer: use it rather than asking the upstream again.
            if let Cached::Fresh(meta) = cached(&cache, &route, &object).await {
                inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&object);
                return Ok((meta, None));
            }
            let result = match open {
                Some(index) => open_chunk(&cache, &metrics, &route, &object, index).await,
                None => head(&metrics, &route, &object).await.map(|meta| (meta, None)),
            };
            let result = match result {
                Ok((meta, opened)) => {
                    cache.put_meta(
                        object.clone(),
                        MetaEntry {
                            meta: meta.clone(),
                            fetched_at: SystemTime::now(),
                        },
                    );
                    Ok((Arc::new(meta), opened))
                }
                Err(e) => Err(Arc::new(e)),
            };
            inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&object);
            result
        }
        .boxed()
        .shared()
    }
}

/// An upstream call of a metadata lookup, timed and counted; a missing object is an answer, not
/// an upstream error.
async fn metered<T>(
    metrics: &Metrics,
    route: &Route,
    call: UpstreamCall,
    request: impl std::future::Future<Output = Result<T, OriginError>>,
) -> Result<T, OriginError> {
    let result = timed(metrics, &route.upstream.name, call, request).await;
    if let Err(e) = &result {
        if !matches!(e, OriginError::NoSuchKey | OriginError::NoSuchBucket) {
            let labels = [&*route.upstream.name, call.as_str()];
            metrics.upstream_errors.with_label_values(&labels).inc();
        }
    }
    result
}

async fn head(metrics: &Metrics, route: &Route, object: &ObjectRef) -> Result<ObjectMeta, OriginError> {
    let request = route.upstream.origin.head(&route.bucket, &object.key);
    metered(metrics, route, UpstreamCall::Head, request).await
}

/// Opens the object with a GET of chunk `index` and makes that answer's body the chunk's fill.
async fn open_chunk(
    cache: &ChunkCache,
    metrics: &Arc<Metrics>,
    route: &Route,
    object: &ObjectRef,
    index: u64,
) -> Result<(ObjectMeta, Option<(u64, StartedFill)>), OriginError> {
    let chunk_size = cache.chunk_size();
    let span = chunk_span(index, chunk_size, u64::MAX);
    let request = route.upstream.origin.open(&route.bucket, &object.key, span);
    let opened = metered(metrics, route, UpstreamCall::Get, request).await?;
    let meta = opened.meta;
    let Some(body) = opened.body else {
        return Ok((meta, None));
    };
    let span = chunk_span(index, chunk_size, meta.size);
    let key = CacheKey::Chunk(object.clone(), meta.etag.as_str().into(), index);
    let body = MeteredBody::boxed(body, metrics, &route.upstream.name);
    let fetch = move || -> ChunkFetch { Box::pin(async move { Ok(body) }) };
    // Not started if the chunk is cached or in flight already; dropping the body then hangs up.
    let started = cache.start(key, span.end - span.start, fetch);
    Ok((meta, started.map(|fill| (index, fill))))
}

/// The cached metadata of `object`, and whether it is within its route's TTL.
async fn cached(cache: &ChunkCache, route: &Route, object: &ObjectRef) -> Cached {
    let Some(entry) = cache.meta(object).await else {
        return Cached::Absent;
    };
    let fresh = match route.meta_ttl {
        None => true,
        Some(ttl) => SystemTime::now()
            .duration_since(entry.fetched_at)
            .is_ok_and(|age| age < ttl),
    };
    match fresh {
        true => Cached::Fresh(Arc::new(entry.meta.clone())),
        false => Cached::Stale,
    }
}

//! Object metadata through the cache: fresh entries come from the cache, the rest from the
//! upstream, with concurrent lookups of one object sharing one upstream request.
//!
//! An object the cache has never seen is opened with a ranged GET of the chunk the request
//! starts in, not a HEAD: its answer carries the metadata (size from `Content-Range`, ETag,
//! headers), and its body becomes that chunk's fill. A cold read thus costs one round trip before
//! its first byte, not two. Stale metadata is revalidated with a HEAD, which moves no object
//! bytes: the chunks of an unchanged object are most likely still cached.
//!
//! A write through shardcache [`invalidates`](MetaLookups::invalidate) an object: its cached
//! entry and any lookup in flight are forgotten, and an answer that lookup stores later is
//! ignored (the cache compares stamps), so every request after the write asks the upstream anew.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

use super::fetch::{timed, upstream_fetch, MeteredBody};
use super::{BucketSource, Parts};
use crate::plan::chunk_span;
use crate::{CacheKey, ChunkCache, ChunkFetch, Fetched, MetaEntry, Standing, StartedFill};
use shardcache_cluster::ChunkPlace;
use shardcache_s3::Operation;
use shardcache_types::{ObjectMeta, ObjectRef};
use shardcache_upstream::OriginError;
use shardcache_upstream::UpstreamMetrics;

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
    /// The metadata is past its TTL and could not be revalidated: served under stale-if-error.
    pub stale: bool,
}

/// Metadata lookups in flight, by object, each with its stamp.
#[derive(Default)]
pub struct MetaLookups {
    inflight: Arc<Mutex<HashMap<ObjectRef, (u64, Lookup)>>>,
}

/// What one upstream lookup asks for.
#[derive(Clone, Copy)]
struct Plan {
    /// Open the object with a GET of this chunk (else a HEAD).
    open: Option<u64>,
    /// The object's checksums are wanted.
    checksums: bool,
    /// The cache stamp taken before asking (see [`MetaEntry::stamp`]).
    stamp: u64,
}

/// The cache's answer for an object's metadata.
enum Cached {
    Fresh(Arc<ObjectMeta>),
    /// Past its TTL (or not knowing what is wanted); with the metadata if it may still be served
    /// should revalidation fail.
    Stale(Option<Arc<ObjectMeta>>),
    Absent,
}

impl MetaLookups {
    /// The object's metadata: cached if fresh, else from the upstream. `first_chunk` is the
    /// chunk the request will read first (`None` for a HEAD or a read that needs the size to
    /// know where it starts). With `checksums`, cached metadata that does not know the object's
    /// checksums is looked up again (a HEAD).
    pub async fn get(
        &self,
        parts: &Parts,
        source: &BucketSource,
        object: &ObjectRef,
        first_chunk: Option<u64>,
        checksums: bool,
    ) -> Result<Looked, Arc<OriginError>> {
        let Parts { cache, metrics, .. } = parts;
        let (open, stale_meta) = match cached(cache, source, object, checksums).await {
            Cached::Fresh(meta) => {
                return Ok(Looked {
                    meta,
                    opened: None,
                    stale: false,
                })
            }
            Cached::Stale(stale_meta) => (None, stale_meta),
            Cached::Absent => (first_chunk, None),
        };
        let (lookup, leader) = {
            let mut inflight = self.inflight.lock();
            match inflight.get(object) {
                Some((_, lookup)) => (lookup.clone(), false),
                None => {
                    let plan = Plan {
                        open,
                        checksums,
                        stamp: cache.meta_stamp(),
                    };
                    let lookup = self.start(parts.clone(), source.clone(), object.clone(), plan);
                    inflight.insert(object.clone(), (plan.stamp, lookup.clone()));
                    (lookup, true)
                }
            }
        };
        let (meta, opened) = match lookup.await {
            Ok(found) => found,
            Err(e) => match stale_meta.filter(|_| e.upstream_failing()) {
                Some(meta) => {
                    cache
                        .metrics()
                        .stale_served
                        .with_label_values(&[&source.upstream])
                        .inc();
                    tracing::warn!(?object, error = %e, "revalidation failed; serving stale metadata");
                    return Ok(Looked {
                        meta,
                        opened: None,
                        stale: true,
                    });
                }
                None => return Err(e),
            },
        };
        if checksums && meta.checksums.is_none() {
            // Joined a lookup that did not ask for the checksums (a ranged GET): ask with a HEAD.
            let stamp = cache.meta_stamp();
            let meta = head(metrics, source, object).await.map_err(Arc::new)?;
            return Ok(Looked {
                meta: remember(cache, object, meta, stamp),
                opened: None,
                stale: false,
            });
        }
        Ok(Looked {
            meta,
            opened: opened.filter(|_| leader),
            stale: false,
        })
    }

    /// Forgets what is known of `object` after a write through shardcache: its cached metadata,
    /// and the lookup in flight, whose answer may predate the write.
    pub fn invalidate(&self, cache: &ChunkCache, object: ObjectRef) {
        // The cache first: the lookup dropped here may still store its answer, and the cache
        // must already know to ignore it.
        cache.forget_meta(object.clone());
        self.inflight.lock().remove(&object);
    }

    fn start(&self, parts: Parts, source: BucketSource, object: ObjectRef, plan: Plan) -> Lookup {
        let Plan { open, checksums, stamp } = plan;
        let inflight = self.inflight.clone();
        // Leaves the in-flight table, unless an invalidation replaced this lookup already.
        let done = move |object: &ObjectRef| {
            let mut table = inflight.lock();
            if table.get(object).is_some_and(|(s, _)| *s == stamp) {
                table.remove(object);
            }
        };
        async move {
            // A lookup that finished between our cache check and our taking the in-flight table
            // has stored its answer: use it rather than asking the upstream again.
            let Parts { cache, metrics, .. } = &parts;
            if let Cached::Fresh(meta) = cached(cache, &source, &object, checksums).await {
                done(&object);
                return Ok((meta, None));
            }
            let result = match open {
                // A ranged GET carries no checksums: a HEAD beside it brings them in the same
                // round trip.
                Some(index) if checksums => {
                    let opened = open_chunk(&parts, &source, &object, index);
                    let (opened, headed) = tokio::join!(opened, head(metrics, &source, &object));
                    opened.map(|(meta, fill)| (with_checksums_of(meta, headed.ok()), fill))
                }
                Some(index) => open_chunk(&parts, &source, &object, index).await,
                None => head(metrics, &source, &object).await.map(|meta| (meta, None)),
            };
            let result = match result {
                Ok((meta, opened)) => Ok((remember(cache, &object, meta, stamp), opened)),
                Err(e) => Err(Arc::new(e)),
            };
            done(&object);
            result
        }
        .boxed()
        .shared()
    }
}

/// An upstream call of a metadata lookup, timed and counted; a missing object is an answer, not
/// an upstream error.
async fn metered<T>(
    metrics: &UpstreamMetrics,
    source: &BucketSource,
    call: Operation,
    request: impl std::future::Future<Output = Result<T, OriginError>>,
) -> Result<T, OriginError> {
    let result = timed(metrics, &source.upstream, call, request).await;
    if let Err(e) = &result {
        if !matches!(e, OriginError::NoSuchKey | OriginError::NoSuchBucket) {
            let labels = [&*source.upstream, call.as_str()];
            metrics.errors.with_label_values(&labels).inc();
        }
    }
    result
}

async fn head(metrics: &UpstreamMetrics, source: &BucketSource, object: &ObjectRef) -> Result<ObjectMeta, OriginError> {
    let request = source.origin.head(&source.bucket, &object.key);
    metered(metrics, source, Operation::HeadObject, request).await
}

/// Stores what a lookup stamped `stamp` found (unless a write superseded it meanwhile).
fn remember(cache: &ChunkCache, object: &ObjectRef, meta: ObjectMeta, stamp: u64) -> Arc<ObjectMeta> {
    let entry = MetaEntry {
        meta: meta.clone(),
        fetched_at: SystemTime::now(),
        stamp,
    };
    cache.put_meta(object.clone(), entry);
    Arc::new(meta)
}

/// `meta` with the checksums of `headed`, if that is the same version.
fn with_checksums_of(mut meta: ObjectMeta, headed: Option<ObjectMeta>) -> ObjectMeta {
    if let Some(headed) = headed.filter(|h| h.etag == meta.etag && meta.checksums.is_none()) {
        meta.checksums = headed.checksums;
    }
    meta
}

/// Opens the object with a GET of chunk `index` and makes that answer's body the chunk's fill.
/// In cluster mode the GET goes to the chunk's owner, which opens the object at the upstream
/// (or revalidates it) and answers with its metadata and the chunk.
async fn open_chunk(
    parts: &Parts,
    source: &BucketSource,
    object: &ObjectRef,
    index: u64,
) -> Result<(ObjectMeta, Option<(u64, StartedFill)>), OriginError> {
    let Parts { cache, metrics, .. } = parts;
    let chunk_size = cache.chunk_size();
    let span = chunk_span(index, chunk_size, u64::MAX);
    // An object written through this node is opened here: the owner could answer from a lookup
    // it began before the write.
    let at_owner = match &source.peers {
        Some(peers) if !cache.forgot_meta(object) => {
            let resume = |etag: &_| upstream_fetch(metrics, source, object, etag);
            peers.open(&ChunkPlace::new(object, index), span.clone(), resume).await
        }
        _ => None,
    };
    let (meta, body) = match at_owner {
        Some(opened) => {
            let (meta, body) = opened?;
            (meta, body.map(|body| parts.owner_sent(body)))
        }
        None => {
            let request = source.origin.open(&source.bucket, &object.key, span);
            let opened = metered(metrics, source, Operation::GetObject, request).await?;
            if opened.headed {
                let labels = [&*source.upstream, Operation::HeadObject.as_str()];
                metrics.requests.with_label_values(&labels).inc();
            }
            let body = opened
                .body
                .map(|b| Fetched::kept(MeteredBody::boxed(b, metrics, &source.upstream)));
            (opened.meta, body)
        }
    };
    let Some(body) = body else {
        return Ok((meta, None));
    };
    let span = chunk_span(index, chunk_size, meta.size);
    let key = CacheKey::Chunk(object.clone(), meta.etag.as_str().into(), index);
    let fetch = move || -> ChunkFetch { Box::pin(async move { Ok(body) }) };
    // Not started if the chunk is cached or in flight already; dropping the body then hangs up.
    let started = cache.start(key, span.end - span.start, fetch);
    Ok((meta, started.map(|fill| (index, fill))))
}

/// The cached metadata of `object`, and whether it can be served: within its source's TTL, not
/// possibly older than a forgotten write, and knowing the object's checksums if `checksums`.
async fn cached(cache: &ChunkCache, source: &BucketSource, object: &ObjectRef, checksums: bool) -> Cached {
    let Some((entry, standing)) = cache.meta(object).await else {
        return Cached::Absent;
    };
    let age = SystemTime::now().duration_since(entry.fetched_at).ok();
    let within = |limit: Duration| age.is_some_and(|age| age < limit);
    let within_ttl = source.meta_ttl.is_none_or(within);
    // Never past a write through shardcache, and only with what the request needs.
    let usable = standing == Standing::Current && !(checksums && entry.meta.checksums.is_none());
    if within_ttl && usable {
        return Cached::Fresh(Arc::new(entry.meta.clone()));
    }
    let stale_ok = usable
        && !source.stale_if_error.is_zero()
        && source
            .meta_ttl
            .is_some_and(|ttl| within(ttl.saturating_add(source.stale_if_error)));
    Cached::Stale(stale_ok.then(|| Arc::new(entry.meta.clone())))
}

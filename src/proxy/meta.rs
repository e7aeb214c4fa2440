//! Object metadata through the cache: fresh entries come from the cache, the rest from the
//! upstream, with concurrent lookups of one object sharing one upstream request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::routes::Route;
use crate::cache::{ChunkCache, MetaEntry, ObjectRef};
use crate::metrics::{Metrics, UpstreamCall};
use crate::types::ObjectMeta;
use crate::upstream::OriginError;

type Lookup = Shared<BoxFuture<'static, Result<Arc<ObjectMeta>, Arc<OriginError>>>>;

/// Metadata lookups in flight, by object.
#[derive(Default)]
pub struct MetaLookups {
    inflight: Arc<Mutex<HashMap<ObjectRef, Lookup>>>,
}

impl MetaLookups {
    /// The object's metadata: cached if fresh, else from the upstream. To force an upstream
    /// lookup (the upstream reported the object changed), drop the cached entry first.
    pub async fn get(
        &self,
        cache: &ChunkCache,
        metrics: &Arc<Metrics>,
        route: &Route,
        object: &ObjectRef,
    ) -> Result<Arc<ObjectMeta>, Arc<OriginError>> {
        if let Some(meta) = fresh(cache, route, object).await {
            return Ok(meta);
        }
        let lookup = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight
                .entry(object.clone())
                .or_insert_with(|| self.start(cache.clone(), metrics.clone(), route.clone(), object.clone()))
                .clone()
        };
        lookup.await
    }

    fn start(&self, cache: ChunkCache, metrics: Arc<Metrics>, route: Route, object: ObjectRef) -> Lookup {
        let inflight = self.inflight.clone();
        async move {
            // A lookup that finished between our cache check and our taking the in-flight table
            // has stored its answer: use it rather than asking the upstream again.
            if let Some(meta) = fresh(&cache, &route, &object).await {
                inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&object);
                return Ok(meta);
            }
            let name = route.upstream.name.clone();
            let labels = [&*name, UpstreamCall::Head.as_str()];
            metrics.upstream_requests.with_label_values(&labels).inc();
            let started = Instant::now();
            let result = route.upstream.origin.head(&route.bucket, &object.key).await;
            metrics
                .upstream_duration
                .with_label_values(&labels)
                .observe(started.elapsed().as_secs_f64());
            let result = match result {
                Ok(meta) => {
                    cache.put_meta(
                        object.clone(),
                        MetaEntry {
                            meta: meta.clone(),
                            fetched_at: SystemTime::now(),
                        },
                    );
                    Ok(Arc::new(meta))
                }
                Err(e) => {
                    if !matches!(e, OriginError::NoSuchKey | OriginError::NoSuchBucket) {
                        metrics.upstream_errors.with_label_values(&labels).inc();
                    }
                    Err(Arc::new(e))
                }
            };
            inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&object);
            result
        }
        .boxed()
        .shared()
    }
}

/// The cached metadata of `object`, if within its route's TTL.
async fn fresh(cache: &ChunkCache, route: &Route, object: &ObjectRef) -> Option<Arc<ObjectMeta>> {
    let entry = cache.meta(object).await?;
    let fresh = match route.meta_ttl {
        None => true,
        Some(ttl) => SystemTime::now()
            .duration_since(entry.fetched_at)
            .is_ok_and(|age| age < ttl),
    };
    fresh.then(|| Arc::new(entry.meta.clone()))
}

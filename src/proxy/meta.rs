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
    /// The object's metadata: cached if fresh (or `refresh` is false and it is immutable), else
    /// from the upstream. `refresh` forces an upstream lookup (after the upstream reported the
    /// object changed).
    pub async fn get(
        &self,
        cache: &ChunkCache,
        metrics: &Arc<Metrics>,
        route: &Route,
        object: &ObjectRef,
        refresh: bool,
    ) -> Result<Arc<ObjectMeta>, Arc<OriginError>> {
        if !refresh {
            if let Some(entry) = cache.meta(object).await {
                if is_fresh(&entry, route) {
                    return Ok(Arc::new(entry.meta.clone()));
                }
            }
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

fn is_fresh(entry: &MetaEntry, route: &Route) -> bool {
    match route.meta_ttl {
        None => true,
        Some(ttl) => SystemTime::now()
            .duration_since(entry.fetched_at)
            .is_ok_and(|age| age < ttl),
    }
}

//! Object metadata entries: stored and read through the same tiers as chunks, and never served
//! once a write through shardcache superseded them (see [`super::generation`]).

use std::sync::Arc;

use super::{CacheKey, CacheValue, ChunkCache, MetaEntry, Standing};
use shardcache_types::ObjectRef;

impl ChunkCache {
    /// Cached metadata of an object and how far it can be trusted, unless absent or superseded
    /// by a write through shardcache (freshness within the TTL is the caller's call).
    pub async fn meta(&self, object: &ObjectRef) -> Option<(Arc<MetaEntry>, Standing)> {
        let (CacheValue::Meta(entry), _) = self.inner.load(&CacheKey::Meta(object.clone())).await? else {
            return None;
        };
        match self.inner.generations.standing(object, entry.stamp) {
            Standing::Superseded => None,
            standing => Some((entry, standing)),
        }
    }

    /// A stamp for a metadata lookup, taken before it asks the upstream: see [`MetaEntry::stamp`].
    pub fn meta_stamp(&self) -> u64 {
        self.inner.generations.stamp()
    }

    /// Stores an object's metadata, unless a write through shardcache superseded it while it was
    /// being looked up.
    pub fn put_meta(&self, object: ObjectRef, entry: MetaEntry) {
        if self.inner.generations.standing(&object, entry.stamp) == Standing::Superseded {
            return;
        }
        self.inner
            .insert(CacheKey::Meta(object), CacheValue::Meta(Arc::new(entry)));
    }

    /// Whether this node forgot `object`'s metadata since it started (a write through it, or a
    /// change it noticed), as far as it remembers.
    pub fn forgot_meta(&self, object: &ObjectRef) -> bool {
        self.inner.generations.invalidated(object)
    }

    /// Forgets an object's metadata (after a write or delete through the proxy, or when the
    /// upstream reports a change): no entry looked up before this call is served again, even one
    /// that a disk write still queued would bring back.
    pub fn forget_meta(&self, object: ObjectRef) {
        let key = CacheKey::Meta(object.clone());
        self.inner.generations.invalidate(object);
        self.inner.remove(&key);
    }
}

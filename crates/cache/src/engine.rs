//! foyer's storage engine, over our disk store ([`super::store`]). foyer keeps the memory tier,
//! and calls the engine to write what it inserts, to read back what memory misses, and to
//! delete. The engine turns cache keys and values into the store's opaque bytes and back.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use foyer::{
    Age, Device, DeviceBuilder, Engine, EngineBuildContext, EngineConfig, HybridCacheProperties, Load,
    NoopDeviceBuilder, PieceRef, StorageFilterResult,
};
use foyer_storage::Populated;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::entry::{meta_from_payload, meta_payload, KIND_CHUNK, KIND_META};
use super::{CacheKey, CacheValue, MemoryOnly};
use shardcache_store::Store;

type Props = HybridCacheProperties;

/// Builds the engine around an open store.
pub struct StoreEngineConfig {
    /// The store.
    pub store: Store,
    /// Buckets whose entries the engine never writes.
    pub memory_only: Arc<MemoryOnly>,
}

impl fmt::Debug for StoreEngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreEngineConfig").finish()
    }
}

impl EngineConfig<CacheKey, CacheValue, Props> for StoreEngineConfig {
    fn build(
        self: Box<Self>,
        _: EngineBuildContext,
    ) -> BoxFuture<'static, foyer::Result<Arc<dyn Engine<CacheKey, CacheValue, Props>>>> {
        async move {
            // foyer asks every engine for a device; ours does its own I/O, so foyer gets none.
            let device = NoopDeviceBuilder::default().build()?;
            let engine = StoreEngine {
                store: self.store,
                memory_only: self.memory_only,
                device,
            };
            Ok(Arc::new(engine) as Arc<dyn Engine<_, _, _>>)
        }
        .boxed()
    }
}

struct StoreEngine {
    store: Store,
    memory_only: Arc<MemoryOnly>,
    device: Arc<dyn Device>,
}

impl fmt::Debug for StoreEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreEngine")
            .field("engine", &self.store.engine())
            .finish()
    }
}

impl Engine<CacheKey, CacheValue, Props> for StoreEngine {
    fn device(&self) -> &Arc<dyn Device> {
        &self.device
    }

    fn filter(&self, _: u64, _: usize) -> StorageFilterResult {
        // `enqueue` checks the entry fits a slot; everything else is admitted.
        StorageFilterResult::Admit
    }

    fn enqueue(&self, piece: PieceRef<CacheKey, CacheValue, Props>, _: usize) {
        if self.memory_only.covers(piece.key()) {
            // Dropping the piece: the entry stays in the memory tier only.
            return;
        }
        let (kind, value) = match piece.value() {
            CacheValue::Meta(m) => (KIND_META, Bytes::from(meta_payload(m))),
            CacheValue::Chunk(data) => (KIND_CHUNK, data.clone()),
        };
        let key = piece.key().to_bytes();
        // The piece rides along: foyer serves the entry from it until the write is done.
        self.store.enqueue(piece.hash(), key, kind, value, Box::new(piece));
    }

    fn load(&self, hash: u64) -> BoxFuture<'static, foyer::Result<Load<CacheKey, CacheValue, Props>>> {
        let store = self.store.clone();
        async move {
            let Some(loaded) = store.load(hash).await else {
                return Ok(Load::Miss);
            };
            let key = CacheKey::from_bytes(&loaded.key)?;
            let value = match loaded.kind {
                KIND_META => CacheValue::Meta(Arc::new(meta_from_payload(&loaded.value)?)),
                KIND_CHUNK => CacheValue::Chunk(loaded.value),
                _ => return Ok(Load::Miss),
            };
            Ok(Load::Entry {
                key,
                value,
                populated: Populated { age: Age::Young },
            })
        }
        .boxed()
    }

    fn delete(&self, hash: u64) {
        self.store.delete(hash);
    }

    fn may_contains(&self, hash: u64) -> bool {
        self.store.contains(hash)
    }

    fn destroy(&self) -> BoxFuture<'static, foyer::Result<()>> {
        let store = self.store.clone();
        async move { store.destroy().await.map_err(foyer::Error::io_error) }.boxed()
    }

    fn wait(&self) -> BoxFuture<'static, ()> {
        let store = self.store.clone();
        async move { store.wait().await }.boxed()
    }

    fn close(&self) -> BoxFuture<'static, foyer::Result<()>> {
        let store = self.store.clone();
        async move {
            store.wait().await;
            Ok(())
        }
        .boxed()
    }
}

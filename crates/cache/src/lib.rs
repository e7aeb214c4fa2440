//! The chunked hybrid RAM/disk cache.
//!
//! Objects are cached as fixed-size chunks keyed by (upstream, bucket, key, ETag, index), plus
//! one metadata entry per object. A chunk that is not cached is fetched once: the first request
//! starts a [`Fill`] (fetching in a task of its own, so a client hanging up does not waste the
//! fetch) and every request that wants the chunk meanwhile reads the same fill. A fill that
//! fails or comes up short is never stored.
//!
//! The chunk cache never knows who fills it: callers hand it a fetch closure. foyer's types stay
//! in this crate. Its core uses `shardcache-types`, `-metrics`, `-store` (the disk tier) and the
//! upstream's body and error types (a fill reads a body and fails with an error of the
//! upstream's). [`read`], the read-through facade over it, is the one part that chooses sources:
//! it alone uses `shardcache-cluster` and the upstream's origins. The crate must not reach the
//! server (the config, HTTP): `app` turns the config into [`CacheOptions`].

mod disk_read;
mod engine;
mod entry;
mod fill;
mod generation;
mod inflight;
mod meta;
mod metrics;
mod options;
pub mod plan;
pub mod read;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use foyer::{HybridCache, HybridCacheBuilder, HybridCachePolicy, NoopIoEngineConfig, Source as FoyerSource, Spawner};
use mixtrics::registry::prometheus_0_14::PrometheusMetricsRegistry;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub use disk_read::DiskRead;
pub use entry::{CacheKey, CacheValue, MetaEntry};
pub use fill::{ChunkFetch, Fetched, FillError, FillReader};
pub use generation::Standing;
pub use metrics::CacheMetrics;
pub use options::{CacheError, CacheOptions, DiskOptions, MemoryOnly};
use shardcache_store::admission::Admission;
use shardcache_store::RangeReader;
pub use shardcache_store::{IoEngine, RangeError, STORE_FILE};

use engine::StoreEngineConfig;
use fill::Fill;
use generation::Generations;
use shardcache_store::{Keys, Store, StoreOptions};

/// Which tier served a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Memory tier.
    Memory,
    /// Disk tier.
    Disk,
}

/// A fill started by [`ChunkCache::start`]: its starter reads it from the first byte even if it
/// has finished (or failed) by then, so the chunk counts as the starter's miss, never as a hit
/// or a second fetch.
#[derive(Clone)]
pub struct StartedFill(Arc<Fill>);

impl StartedFill {
    /// A reader from the chunk's first byte.
    pub fn reader(&self) -> FillReader {
        self.0.reader()
    }
}

/// How a chunk will be read.
pub enum ChunkRead {
    /// The bytes asked for, from a cache tier.
    Hit(Bytes, Tier),
    /// This request started the upstream fetch; bytes stream as they arrive.
    Leader(FillReader),
    /// Another request's fetch of this chunk was under way; this one shares it.
    Follower(FillReader),
    /// The bytes asked for, from a chunk only the disk holds, streamed in checked pieces.
    Disk(DiskRead),
}

type Hybrid = HybridCache<CacheKey, CacheValue>;

/// The chunk cache. Cheap to clone.
#[derive(Clone)]
pub struct ChunkCache {
    inner: Arc<Inner>,
}

struct Inner {
    hybrid: Hybrid,
    chunk_size: u64,
    memory_bytes: u64,
    disk_bytes: u64,
    /// The disk tier (also reached through foyer, which writes and loads through it).
    store: Option<Store>,
    inflight: Mutex<HashMap<CacheKey, Arc<Fill>>>,
    /// Chunks being read whole from the disk tier into the memory tier ([`ChunkCache::promote`]).
    promoting: Mutex<HashSet<CacheKey>>,
    /// Where fills run (the cache's runtime).
    fills: tokio::runtime::Handle,
    /// Signalled when the in-flight table becomes empty.
    drained: Notify,
    /// Disk write budget in KiB; `None` for a memory-only cache.
    write_budget: Option<Arc<Semaphore>>,
    /// Room in KiB for chunks being fetched, taken from the memory tier ([`fill_room`]).
    fill_room: Arc<Semaphore>,
    /// All of that room.
    fill_room_kib: u32,
    /// Which metadata entries writes through shardcache made stale.
    generations: Generations,
    /// Buckets never written to disk: their fills take no disk write budget.
    memory_only: Arc<MemoryOnly>,
    metrics: Arc<CacheMetrics>,
}

/// How long closing the cache waits for fills in flight to finish and be stored.
const CLOSE_FILL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Chunks each memory shard should hold at least. foyer splits the memory tier into shards of
/// equal capacity, each evicting on its own; with its default of 8 shards a 32 MiB tier of 4 MiB
/// chunks gave each shard room for one chunk, evicting most of what was just inserted.
const CHUNKS_PER_MEMORY_SHARD: u64 = 32;

/// Memory shards for a tier of `memory_bytes`: up to 8 (foyer's default), fewer when that would
/// leave a shard with room for under [`CHUNKS_PER_MEMORY_SHARD`] chunks.
fn memory_shards(memory_bytes: u64, chunk_size: u64) -> usize {
    (memory_bytes / (chunk_size * CHUNKS_PER_MEMORY_SHARD)).clamp(1, 8) as usize
}

/// The part of a memory tier of `memory_bytes` that chunks being fetched may take (the rest
/// holds cached chunks): a quarter, and room for two chunks at least, half the tier at most.
/// A fill waits for room before it fetches (read-ahead is skipped instead), so chunk buffers
/// stay within `memory_bytes` however many readers miss at once: 50 readers of distinct 16 MiB
/// objects had 800 MiB of chunks in flight at once before.
fn fill_room(memory_bytes: u64, chunk_size: u64) -> u64 {
    (memory_bytes / 4).max(2 * chunk_size).min(memory_bytes / 2)
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl ChunkCache {
    /// Opens (and on a disk tier, recovers) the cache. foyer's metrics go to `foyer_registry`.
    pub async fn open(
        opts: CacheOptions,
        metrics: Arc<CacheMetrics>,
        foyer_registry: prometheus::Registry,
    ) -> Result<Self, CacheError> {
        // One runtime, owned by foyer (through its spawner) for as long as the cache lives, runs
        // foyer's background work (flushers, reclaimers, disk I/O) and our fills: a fill must
        // outlive the request and the listener that started it, or a chunk whose bytes were
        // already streamed could be lost at shutdown before it is stored.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shardcache-cache")
            .enable_all()
            .build()?;
        let fills = runtime.handle().clone();
        let registry = PrometheusMetricsRegistry::new(foyer_registry);
        let memory_only = Arc::new(opts.memory_only.clone());
        let room = fill_room(opts.memory_bytes, opts.chunk_size);
        let cached_bytes = opts.memory_bytes - room;
        let builder = HybridCacheBuilder::new()
            .with_name("shardcache")
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .with_metrics_registry(Box::new(registry))
            .memory(cached_bytes as usize)
            .with_shards(memory_shards(cached_bytes, opts.chunk_size))
            .with_weighter(|_: &CacheKey, v: &CacheValue| v.weight() + 128)
            .storage()
            .with_spawner(Spawner::from(runtime));
        let (hybrid, store, write_budget, disk_bytes) = match &opts.disk {
            None => {
                let hybrid = builder.build().await.map_err(|source| CacheError::Open {
                    path: "memory".into(),
                    source,
                })?;
                (hybrid, None, None, 0)
            }
            Some(disk) => {
                let store_opts = StoreOptions {
                    path: disk.path.clone(),
                    capacity_bytes: disk.capacity_bytes,
                    chunk_size: opts.chunk_size,
                    direct: disk.direct,
                    io_engine: disk.io_engine,
                    keys: match &disk.key_file {
                        Some(file) => Some(Arc::new(Keys::load_or_create(file)?)),
                        None => None,
                    },
                };
                let store = Store::open(&store_opts, metrics.store.clone(), fills.clone()).await?;
                let hybrid = builder
                    // The store does its own I/O: foyer starts no I/O threads of its own.
                    .with_io_engine_config(Box::new(NoopIoEngineConfig) as Box<dyn foyer::IoEngineConfig>)
                    .with_engine_config(Box::new(StoreEngineConfig {
                        store: store.clone(),
                        memory_only: memory_only.clone(),
                    }) as Box<dyn foyer::EngineConfig<_, _, _>>)
                    .build()
                    .await
                    .map_err(|source| CacheError::Open {
                        path: disk.path.display().to_string(),
                        source,
                    })?;
                let budget = Arc::new(Semaphore::new(kib(disk.write_queue_bytes as usize) as usize));
                metrics.store.io_engine.with_label_values(&[store.engine()]).set(1);
                (hybrid, Some(store), Some(budget), disk.capacity_bytes)
            }
        };
        let inner = Inner {
            hybrid,
            chunk_size: opts.chunk_size,
            memory_bytes: opts.memory_bytes,
            disk_bytes,
            store,
            inflight: Mutex::new(HashMap::new()),
            promoting: Mutex::new(HashSet::new()),
            fills,
            drained: Notify::new(),
            write_budget,
            fill_room: Arc::new(Semaphore::new(kib(room as usize) as usize)),
            fill_room_kib: kib(room as usize),
            generations: Generations::new(),
            memory_only,
            metrics,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Its metrics.
    pub(crate) fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// Bytes per chunk.
    pub fn chunk_size(&self) -> u64 {
        self.inner.chunk_size
    }

    /// Reads bytes `within` of chunk `key`, whose complete length is `len`: from a tier (a hit
    /// holds just those bytes), from a fill in flight, or by starting a fill with `fetch` (a
    /// fill's reader streams the chunk from its first byte).
    pub async fn chunk(
        &self,
        key: CacheKey,
        len: u64,
        within: Range<u64>,
        fetch: impl FnOnce() -> ChunkFetch,
    ) -> ChunkRead {
        self.inner.count(&key, Admission::touch);
        self.lookup(key, len, within, fetch).await
    }

    /// [`Self::chunk`], not counted for the disk tier's admission: a reader's later look at a
    /// chunk it has counted already.
    pub async fn lookup(
        &self,
        key: CacheKey,
        len: u64,
        within: Range<u64>,
        fetch: impl FnOnce() -> ChunkFetch,
    ) -> ChunkRead {
        if let Some(fill) = self.inner.in_flight(&key) {
            return ChunkRead::Follower(fill.reader());
        }
        if let Some(hit) = self.inner.hit(&key, len, &within).await {
            return hit;
        }
        // A fill may have completed (inserted, then left the in-flight table) since we looked:
        // `join_or_start` re-checks under its lock, and then we load what it inserted.
        // The re-check happens once: if the entry then fails to load (evicted meanwhile, or a
        // false positive of the disk index), the second pass starts a fill.
        let mut fetch = Some(fetch);
        let mut recheck = true;
        loop {
            match self
                .inner
                .clone()
                .join_or_start(key.clone(), len, &mut fetch, recheck, None)
            {
                Some((fill, true)) => return ChunkRead::Leader(fill.reader()),
                Some((fill, false)) => return ChunkRead::Follower(fill.reader()),
                None => {
                    if let Some(hit) = self.inner.hit(&key, len, &within).await {
                        return hit;
                    }
                }
            }
            recheck = false;
        }
    }

    /// Reads chunk `key` of `len` bytes whole from the disk tier into the memory tier; returns
    /// whether it did. For a reader that wants the whole chunk but takes it a piece at a time,
    /// each piece a disk read of its own that puts nothing back: it reads the chunk once, then
    /// takes its pieces from memory. Only while the memory tier has room for the chunk without
    /// evicting anything: what it would evict may be a chunk the disk tier did not take, which
    /// would then be fetched again (a dataset larger than the memory tier lost a quarter of its
    /// chunks per epoch that way). The room is the whole tier's: in a tier of several shards,
    /// the chunk's shard may still evict one of its own. Only where there is room among the
    /// fills now (never waiting for it) and no other reader is reading the chunk in; the read
    /// runs to its end even if the caller goes away.
    pub async fn promote(&self, key: CacheKey, len: u64) -> bool {
        let inner = &self.inner;
        let memory = inner.hybrid.memory();
        if inner.store.is_none() || memory.usage() + len as usize > memory.capacity() {
            return false;
        }
        let Ok(room) = inner.fill_room.clone().try_acquire_many_owned(inner.room_units(len)) else {
            return false;
        };
        if !inner.promoting.lock().insert(key.clone()) {
            return false;
        }
        let inner = self.inner.clone();
        let read = self.inner.fills.spawn(async move {
            let whole = async {
                let reader = inner.disk_part(&key, len, &(0..len)).await?;
                let mut read = DiskRead::new(reader, Some((inner.hybrid.clone(), key.clone())));
                // A failed read is the caller's to meet again (its own reads fail the same way).
                while read.next().await.ok()?.is_some() {}
                Some(())
            };
            let done = whole.await.is_some();
            inner.promoting.lock().remove(&key);
            drop(room);
            done
        });
        read.await.unwrap_or(false)
    }

    /// Starts a fill of chunk `key` with `fetch` for the reader that called, unless the chunk is
    /// cached or in flight. Returns the fill it started.
    pub fn start(&self, key: CacheKey, len: u64, fetch: impl FnOnce() -> ChunkFetch) -> Option<StartedFill> {
        self.begin(key, len, fetch, Admission::touch, None)
    }

    /// Whether chunk `key` is cached or being fetched.
    pub fn has(&self, key: &CacheKey) -> bool {
        self.inner.hybrid.contains(key) || self.inner.in_flight(key).is_some()
    }

    /// [`Self::start`] for a chunk read ahead of a sequential reader (counted as such).
    pub fn prefetch(&self, key: CacheKey, len: u64, fetch: impl FnOnce() -> ChunkFetch) {
        // Only where there is room for it: read-ahead never waits, nor makes a reader wait.
        let Ok(room) = self
            .inner
            .fill_room
            .clone()
            .try_acquire_many_owned(self.inner.room_units(len))
        else {
            return;
        };
        // Counted now, before the fill ends and asks for a slot, and not again when the reader
        // reaches the chunk.
        if self.begin(key, len, fetch, Admission::expect, Some(room)).is_some() {
            self.inner.metrics.readahead.inc();
        }
    }

    fn begin(
        &self,
        key: CacheKey,
        len: u64,
        fetch: impl FnOnce() -> ChunkFetch,
        count: fn(&Admission, u64),
        room: Option<OwnedSemaphorePermit>,
    ) -> Option<StartedFill> {
        if self.inner.hybrid.contains(&key) {
            return None;
        }
        match self
            .inner
            .clone()
            .join_or_start(key.clone(), len, &mut Some(fetch), false, room)
        {
            Some((fill, true)) => {
                self.inner.count(&key, count);
                Some(StartedFill(fill))
            }
            _ => None,
        }
    }

    /// Updates the tier usage gauges (called before each scrape).
    pub fn refresh_gauges(&self) {
        let m = &self.inner.metrics;
        let set = |gauge: &prometheus::IntGaugeVec, tier: &str, value: u64| {
            gauge
                .with_label_values(&[tier])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&m.cache_usage, "memory", self.inner.hybrid.memory().usage() as u64);
        set(&m.cache_capacity, "memory", self.inner.memory_bytes);
        set(&m.cache_capacity, "disk", self.inner.disk_bytes);
        if let Some(store) = &self.inner.store {
            set(&m.cache_usage, "disk", store.used_bytes());
            let chunks = store.admission().working_set().unwrap_or(0);
            let bytes = chunks.saturating_mul(self.inner.chunk_size);
            m.working_set_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Makes chunk `key` win its place in a full disk tier: an operator is warming it.
    pub fn favour(&self, key: &CacheKey) {
        if let Some(store) = &self.inner.store {
            store.admission().favour(self.inner.hybrid.memory().hash(key));
        }
    }

    /// Flushes pending disk writes and closes the cache.
    pub async fn close(&self) {
        let deadline = tokio::time::Instant::now() + CLOSE_FILL_WAIT;
        loop {
            let drained = self.inner.drained.notified();
            let pending = self.inner.inflight.lock().len();
            if pending == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                tracing::warn!(
                    pending,
                    "closing the cache with fills still in flight; they are not stored"
                );
                break;
            }
        }
        if let Err(e) = self.inner.hybrid.close().await {
            tracing::warn!(error = %e, "closing the cache");
        }
    }
}

impl Inner {
    /// Counts a read of chunk `key` for the disk tier's admission policy, with `how`.
    fn count(&self, key: &CacheKey, how: fn(&Admission, u64)) {
        if self.memory_only.covers(key) {
            // Never written to disk: not a contender for the disk tier's slots.
            return;
        }
        if let Some(store) = &self.store {
            how(store.admission(), self.hybrid.memory().hash(key));
        }
    }

    fn insert(&self, key: CacheKey, value: CacheValue) {
        self.hybrid.insert(key, value);
    }

    fn remove(&self, key: &CacheKey) {
        self.hybrid.remove(key);
    }

    fn in_flight(&self, key: &CacheKey) -> Option<Arc<Fill>> {
        self.inflight.lock().get(key).cloned()
    }

    async fn load(&self, key: &CacheKey) -> Option<(CacheValue, Tier)> {
        // The memory tier and the disk index answer without waiting: a memory hit, or a key the
        // disk cannot hold, never takes foyer's asynchronous path (a hop to its runtime and back).
        if let Some(entry) = self.hybrid.memory().get(key) {
            return Some((entry.value().clone(), Tier::Memory));
        }
        self.load_stored(key).await
    }

    /// `key` from below the memory tier: foyer's keeper (a write under way) or the disk store.
    async fn load_stored(&self, key: &CacheKey) -> Option<(CacheValue, Tier)> {
        if !self.hybrid.storage().may_contains(key) {
            return None;
        }
        match self.hybrid.get(key).await {
            Ok(Some(entry)) => {
                let tier = if entry.source() == FoyerSource::Disk {
                    Tier::Disk
                } else {
                    Tier::Memory
                };
                Some((entry.value().clone(), tier))
            }
            Ok(None) => None,
            Err(e) => {
                self.metrics.store.cache_read_errors.inc();
                tracing::warn!(?key, error = %e, "cache entry failed to load; treating it as a miss");
                None
            }
        }
    }

    /// Bytes `within` of the chunk from a tier, if cached with the right length. A chunk that
    /// only the disk holds is streamed from it, reading just the segments that cover `within`.
    async fn hit(&self, key: &CacheKey, len: u64, within: &Range<u64>) -> Option<ChunkRead> {
        // One look at the memory tier: a hit there is the common case.
        let found = match self.hybrid.memory().get(key) {
            Some(entry) => (entry.value().clone(), Tier::Memory),
            None => {
                if let Some(reader) = self.disk_part(key, len, within).await {
                    let whole = within.end - within.start == len;
                    let memory = whole.then(|| (self.hybrid.clone(), key.clone()));
                    return Some(ChunkRead::Disk(DiskRead::new(reader, memory)));
                }
                // Not on disk, or not written yet (foyer holds it until it is).
                self.load_stored(key).await?
            }
        };
        match found {
            (CacheValue::Chunk(data), tier) if data.len() as u64 == len => Some(ChunkRead::Hit(
                data.slice(within.start as usize..within.end as usize),
                tier,
            )),
            _ => {
                tracing::warn!(?key, len, "cached chunk has the wrong length or kind; refetching");
                self.remove(key);
                None
            }
        }
    }

    /// Bytes `within` of a chunk of `len` bytes in the disk store, read past foyer (which only
    /// loads whole entries).
    async fn disk_part(&self, key: &CacheKey, len: u64, within: &Range<u64>) -> Option<Box<RangeReader>> {
        let store = self.store.as_ref()?;
        let reader = store.read_range(self.hybrid.memory().hash(key), within.clone()).await?;
        // A hash collision is another key, and a chunk of another length is not the one
        // wanted: both are misses.
        (reader.key() == key.to_bytes() && reader.value_len() == len).then(|| Box::new(reader))
    }
}

#[cfg(test)]
mod tests {
    use super::memory_shards;

    #[test]
    fn memory_shards_hold_enough_chunks_each() {
        const MIB: u64 = 1 << 20;
        assert_eq!(memory_shards(32 * MIB, 4 * MIB), 1);
        assert_eq!(memory_shards(256 * MIB, 8 * MIB), 1);
        assert_eq!(memory_shards(1024 * MIB, 8 * MIB), 4);
        assert_eq!(memory_shards(4096 * MIB, 8 * MIB), 8);
    }
}

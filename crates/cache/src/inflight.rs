//! A fill in flight, from start to stored: joining the fill already under way for a chunk or
//! starting one, and running it within its budgets (room in the memory tier for the chunk
//! being fetched; room in the disk write budget for a complete chunk waiting for the disk),
//! then putting the chunk in the cache and leaving the in-flight table.

use std::sync::Arc;

use foyer::{HybridCacheProperties, Location};
use tokio::sync::OwnedSemaphorePermit;

use crate::fill::{pump, Fill, FillWriter};
use crate::{kib, CacheKey, CacheValue, ChunkFetch, Inner, Store};

impl Inner {
    /// Returns the fill for `key` and whether this call started it (taking `fetch`). With
    /// `recheck`, returns `None` instead of starting when the chunk is cached by now.
    pub(crate) fn join_or_start<F: FnOnce() -> ChunkFetch>(
        self: Arc<Self>,
        key: CacheKey,
        len: u64,
        fetch: &mut Option<F>,
        recheck: bool,
        room: Option<OwnedSemaphorePermit>,
    ) -> Option<(Arc<Fill>, bool)> {
        let (fill, fetch) = {
            let mut inflight = self.inflight.lock();
            if let Some(fill) = inflight.get(&key) {
                return Some((fill.clone(), false));
            }
            if recheck && self.hybrid.contains(&key) {
                return None;
            }
            let fetch = fetch.take()?;
            let (fill, writer) = Fill::new(len as usize);
            inflight.insert(key.clone(), fill.clone());
            (fill, (writer, fetch))
        };
        let (writer, fetch) = fetch;
        let fetch = fetch();
        self.fills.spawn(self.clone().run_fill(key, writer, len, fetch, room));
        Some((fill, true))
    }

    /// Room in the fill budget for a chunk of `len` bytes.
    pub(crate) fn room_units(&self, len: u64) -> u32 {
        kib(len as usize).min(self.fill_room_kib)
    }

    async fn run_fill(
        self: Arc<Self>,
        key: CacheKey,
        mut fill: FillWriter,
        len: u64,
        fetch: ChunkFetch,
        room: Option<OwnedSemaphorePermit>,
    ) {
        // Held until the chunk is in the memory tier (or dropped): the fetch waits for room.
        let _room = match room {
            Some(room) => Some(room),
            // The semaphore is never closed, so this always takes room.
            None => self
                .fill_room
                .clone()
                .acquire_many_owned(self.room_units(len))
                .await
                .ok(),
        };
        // A degraded disk tier takes no writes: the fill neither waits for its budget nor holds
        // any, and the chunk stays in memory.
        let degraded = self.store.as_ref().is_some_and(Store::degraded);
        let to_disk = self.write_budget.is_some() && !self.memory_only.covers(&key) && !degraded;
        if to_disk {
            // Back-pressure from the disk: while complete chunks already fill the write budget,
            // a new fill waits before it asks the upstream, so a reader that outruns the disk is
            // slowed to its speed rather than growing memory. Fills still streaming hold no
            // budget, so fills stalled on a slow upstream never hold back another miss.
            drop(self.disk_permit(len).await);
        }
        let (outcome, on_disk) = match pump(&mut fill, len, fetch).await {
            Ok(on_disk) => (Ok(()), on_disk),
            Err(e) => (Err(e), false),
        };
        let to_disk = to_disk && on_disk;
        let result = if outcome.is_ok() { "complete" } else { "failed" };
        self.metrics.fills.with_label_values(&[result]).inc();
        if let Err(e) = &outcome {
            tracing::warn!(?key, error = %e, "chunk fill failed; nothing cached");
        }
        let whole = fill.finish(outcome);
        // A complete chunk holds budget from here until it is on disk. Its readers already have
        // every byte; the fill stays in flight (and readable) until it is inserted.
        let permit = match whole.is_some() && to_disk {
            true => self.disk_permit(len).await,
            false => None,
        };
        let stored = whole.is_some();
        if let Some(data) = whole {
            match on_disk {
                true => self.insert(key.clone(), CacheValue::Chunk(data)),
                false => {
                    let memory = HybridCacheProperties::default().with_location(Location::InMem);
                    self.hybrid
                        .insert_with_properties(key.clone(), CacheValue::Chunk(data), memory);
                }
            }
        }
        // Removed only after the insert, so a newcomer finds the chunk in flight or cached (in
        // memory at least: from here on it is a memory hit, not a reader of this fill).
        {
            let mut inflight = self.inflight.lock();
            inflight.remove(&key);
            if inflight.is_empty() {
                self.drained.notify_waiters();
            }
        }
        if stored && permit.is_some() {
            // Resolves once foyer has flushed what was queued before it, our chunk included;
            // until then the chunk's bytes still count against the write budget.
            self.hybrid.storage().wait().await;
        }
        drop(permit);
    }

    /// Room for `len` bytes in the disk write budget; `None` for a memory-only cache.
    async fn disk_permit(&self, len: u64) -> Option<OwnedSemaphorePermit> {
        let budget = self.write_budget.as_ref()?;
        let units = kib(len as usize);
        match budget.clone().try_acquire_many_owned(units) {
            Ok(p) => Some(p),
            Err(_) => {
                self.metrics.disk_write_waits.inc();
                // The semaphore is never closed, so this only fails if it were.
                budget.clone().acquire_many_owned(units).await.ok()
            }
        }
    }
}

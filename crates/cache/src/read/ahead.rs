//! Read-ahead: telling sequential readers from random ones, how far ahead of each to fetch, and
//! how many read-ahead fetches each upstream has in flight.
//!
//! The chunks a request asks for are fetched up to [`ReadAhead::max_chunks`] ahead of its reader
//! from the first: the client wants them. Past the request's end, read-ahead is a guess, so a
//! sequential reader's window starts at [`ReadAhead::chunks`] and doubles, up to
//! [`ReadAhead::max_chunks`], each time the reader reaches a chunk that is still being fetched:
//! it is waiting on the upstream, so more of the upstream's parallelism is worth asking for. A
//! reader that finds its chunks cached keeps its window. Read-ahead never waits: a fetch past
//! the upstream's [`ReadAhead::per_upstream`] or past the cache's room for fills is skipped,
//! and the reader fetches that chunk itself when it gets there.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ChunkFetch;
use shardcache_types::ObjectRef;
use shardcache_upstream::{OriginBody, OriginError};

/// Objects tracked at once; past this the table starts over (a bounded, cheap forget).
const MAX_TRACKED: usize = 4096;

/// How far ahead of readers chunks are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAhead {
    /// Chunks fetched ahead of a reader at first; `0` turns read-ahead off.
    pub chunks: u32,
    /// The most chunks ahead of one reader.
    pub max_chunks: u32,
    /// Read-ahead fetches in flight at most per upstream, over all readers.
    pub per_upstream: u32,
}

/// Where each recently read object's last read ended, and its reader's window.
#[derive(Default)]
pub(super) struct Streams {
    streams: Mutex<HashMap<ObjectRef, Stream>>,
}

#[derive(Clone, Copy)]
struct Stream {
    end: u64,
    window: u32,
}

impl Streams {
    /// Records a read of `span` and, if it continues a sequential pass (it starts at the
    /// beginning of the object, or within `slack` bytes of where the previous read ended), the
    /// pass's window: `initial` for a new pass.
    pub(super) fn observe(&self, object: &ObjectRef, span: &Range<u64>, slack: u64, initial: u32) -> Option<u32> {
        let mut map = self.streams.lock();
        let last = map.get(object).copied();
        let continues = last.filter(|s| span.start.abs_diff(s.end) <= slack);
        let window = match continues {
            Some(s) => Some(s.window),
            None if span.start == 0 => Some(initial),
            None => None,
        };
        if map.len() >= MAX_TRACKED && last.is_none() {
            map.clear();
        }
        map.insert(
            object.clone(),
            Stream {
                end: span.end,
                window: window.unwrap_or(initial),
            },
        );
        window
    }

    /// Doubles the window of `object`'s pass from `window`, up to `max`; the new window.
    pub(super) fn widen(&self, object: &ObjectRef, window: u32, max: u32) -> u32 {
        let wider = window.saturating_mul(2).min(max);
        if let Some(s) = self.streams.lock().get_mut(object) {
            s.window = s.window.max(wider);
        }
        wider
    }
}

/// Each upstream's room for read-ahead fetches.
pub(super) struct Slots {
    per_upstream: usize,
    upstreams: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

impl Slots {
    pub(super) fn new(per_upstream: u32) -> Self {
        Self {
            per_upstream: per_upstream as usize,
            upstreams: Mutex::default(),
        }
    }

    /// A slot for one more read-ahead fetch from `upstream`, if it has one free.
    pub(super) fn take(&self, upstream: &Arc<str>) -> Option<OwnedSemaphorePermit> {
        let room = self
            .upstreams
            .lock()
            .entry(upstream.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_upstream)))
            .clone();
        room.try_acquire_owned().ok()
    }
}

/// `fetch`, whose body holds `slot` until the fill is done with it.
pub(super) fn holding(fetch: impl FnOnce() -> ChunkFetch, slot: OwnedSemaphorePermit) -> impl FnOnce() -> ChunkFetch {
    move || {
        let fetch = fetch();
        Box::pin(async move {
            let mut fetched = fetch.await?;
            fetched.body = Box::new(Holding {
                body: fetched.body,
                _slot: slot,
            });
            Ok(fetched)
        })
    }
}

/// A chunk's body and the read-ahead slot its fetch took.
struct Holding {
    body: Box<dyn OriginBody>,
    _slot: OwnedSemaphorePermit,
}

#[async_trait]
impl OriginBody for Holding {
    async fn next(&mut self) -> Result<Option<&[u8]>, OriginError> {
        self.body.next().await
    }

    async fn resume(&mut self, error: &OriginError) -> Result<bool, OriginError> {
        self.body.resume(error).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> ObjectRef {
        ObjectRef {
            upstream: "u".into(),
            bucket: "b".into(),
            key: "k".into(),
        }
    }

    #[test]
    fn consecutive_ranges_are_sequential_and_jumps_are_not() {
        let s = Streams::default();
        let o = object();
        assert_eq!(s.observe(&o, &(0..100), 10, 2), Some(2));
        assert_eq!(s.observe(&o, &(100..200), 10, 2), Some(2));
        assert_eq!(s.observe(&o, &(5000..5100), 10, 2), None);
        assert_eq!(s.observe(&o, &(5105..5200), 10, 2), Some(2));
    }

    #[test]
    fn a_pass_keeps_its_widened_window_and_a_new_pass_starts_over() {
        let s = Streams::default();
        let o = object();
        s.observe(&o, &(0..100), 10, 2);
        assert_eq!(s.widen(&o, 2, 16), 4);
        assert_eq!(s.widen(&o, 4, 16), 8);
        assert_eq!(s.widen(&o, 8, 12), 12);
        assert_eq!(s.observe(&o, &(100..200), 10, 2), Some(12));
        assert_eq!(s.observe(&o, &(7000..7100), 10, 2), None);
        assert_eq!(s.observe(&o, &(0..100), 10, 2), Some(2));
    }

    #[test]
    fn an_upstream_gives_no_more_slots_than_its_bound_and_others_have_their_own() {
        let slots = Slots::new(2);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let held = [slots.take(&a), slots.take(&a)];
        assert!(held.iter().all(Option::is_some));
        assert!(slots.take(&a).is_none());
        assert!(slots.take(&b).is_some());
        drop(held);
        assert!(slots.take(&a).is_some());
    }
}

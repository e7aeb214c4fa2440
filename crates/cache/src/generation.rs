//! Which cached metadata may still be trusted after writes through shardcache.
//!
//! Dropping an entry is not enough to forget it: foyer's `remove` does not cancel a disk write
//! of the same entry that is still queued, so the entry can come back from disk after it was
//! removed; and a lookup that asked the upstream before a write can store its (old) answer after
//! it. So every metadata entry carries a stamp, the value of a process-wide counter taken
//! before its lookup asked the upstream, and each invalidation records the counter's value for
//! its object. An entry stamped at or below its object's invalidation is never served, wherever
//! it comes from and whenever it was stored.
//!
//! The table of invalidations is bounded: when it is full it is emptied and the *floor* is raised
//! to the counter's current value. An entry stamped below the floor is not trusted either, only
//! revalidated (a HEAD): it may predate a write that the table no longer remembers. The counter
//! starts from the wall clock in nanoseconds, and the floor from there, so entries that come
//! back from the disk tier after a restart are revalidated once: the writes of the previous run
//! are not remembered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::RwLock;

use shardcache_types::ObjectRef;

/// Invalidations remembered before the table starts over with a higher floor.
const MAX_REMEMBERED: usize = 1 << 16;

/// How far a cached metadata entry can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Younger than every write through shardcache to its object: serve it (within its TTL).
    Current,
    /// From before the floor: it may predate a forgotten write; ask the upstream if it changed.
    Unconfirmed,
    /// From before a write to its object through shardcache: never serve it.
    Superseded,
}

/// Metadata stamps and invalidations.
pub struct Generations {
    next: AtomicU64,
    floor: AtomicU64,
    /// Read on every metadata lookup, written only by invalidations.
    invalidated: RwLock<HashMap<ObjectRef, u64>>,
}

impl Generations {
    /// A counter starting at the wall clock, with everything before it unconfirmed.
    pub fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2));
        Self {
            next: AtomicU64::new(now),
            floor: AtomicU64::new(now),
            invalidated: RwLock::new(HashMap::new()),
        }
    }

    /// A stamp for a lookup about to ask the upstream.
    pub fn stamp(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    /// Records that `object` changed through shardcache: entries stamped before now are
    /// superseded.
    pub fn invalidate(&self, object: ObjectRef) {
        let mut table = self.invalidated.write();
        let stamp = self.stamp();
        if table.len() >= MAX_REMEMBERED {
            // Forgetting an invalidation must not make its superseded entries current again:
            // raising the floor to now makes every entry stamped before now unconfirmed.
            table.clear();
            self.floor.store(stamp, Ordering::SeqCst);
        }
        table.insert(object, stamp);
    }

    /// Whether `object` was invalidated since start (as far as the table remembers).
    pub fn invalidated(&self, object: &ObjectRef) -> bool {
        let table = self.invalidated.read();
        table.contains_key(object)
    }

    /// How far an entry of `object` stamped `stamp` can be trusted.
    pub fn standing(&self, object: &ObjectRef, stamp: u64) -> Standing {
        let table = self.invalidated.read();
        if table.get(object).is_some_and(|&at| stamp <= at) {
            return Standing::Superseded;
        }
        if stamp < self.floor.load(Ordering::SeqCst) {
            return Standing::Unconfirmed;
        }
        Standing::Current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str) -> ObjectRef {
        ObjectRef {
            upstream: "up".into(),
            bucket: "b".into(),
            key: key.into(),
        }
    }

    #[test]
    fn entries_from_before_an_invalidation_are_superseded() {
        let g = Generations::new();
        let before = g.stamp();
        g.invalidate(object("k"));
        let after = g.stamp();
        assert_eq!(g.standing(&object("k"), before), Standing::Superseded);
        assert_eq!(g.standing(&object("k"), after), Standing::Current);
        assert_eq!(g.standing(&object("other"), before), Standing::Current);
    }

    #[test]
    fn entries_from_a_previous_run_are_unconfirmed() {
        let g = Generations::new();
        let previous_run = g.stamp() - 1_000_000;
        assert_eq!(g.standing(&object("k"), previous_run), Standing::Unconfirmed);
    }

    #[test]
    fn a_full_table_forgets_nothing_it_superseded() {
        let g = Generations::new();
        let old = g.stamp();
        g.invalidate(object("k"));
        for i in 0..MAX_REMEMBERED {
            g.invalidate(object(&i.to_string()));
        }
        let standing = g.standing(&object("k"), old);
        assert_ne!(standing, Standing::Current, "an old entry must not become current");
        assert_eq!(g.standing(&object("k"), g.stamp()), Standing::Current);
    }
}

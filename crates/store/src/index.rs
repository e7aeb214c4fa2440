//! The store's index: key hash -> slot, each slot's state and generation, and CLOCK over small
//! slots and over slabs. Pure bookkeeping under the store's lock: no I/O here.

use std::collections::HashMap;

use super::file::random_u64;
use super::format::{Fit, Geometry, Loc, BLOCK};
use super::KeepAlive;
use crate::metrics::StoreMetrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Free,
    /// Being written; indexed, but loads miss (foyer serves the entry from memory meanwhile).
    Writing,
    Live,
    /// Its header is being cleared; then free.
    Clearing,
}

/// What a slot holds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub(super) hash: u64,
    pub(super) generation: u64,
    pub(super) len: u64,
    pub(super) state: State,
    /// CLOCK's bit, for a small slot (a slab has one for all its slots).
    pub(super) referenced: bool,
    pub(super) cancelled: bool,
}

pub(super) const FREE: Entry = Entry {
    hash: 0,
    generation: 0,
    len: 0,
    state: State::Free,
    referenced: false,
    cancelled: false,
};

/// A slab: free (no entries), one chunk (class 0), or cut into 2^class slots.
#[derive(Debug, Default)]
pub(super) struct Slab {
    pub(super) class: u8,
    /// The cut's stamp ([`super::format::CutMark`]).
    pub(super) stamp: u64,
    pub(super) referenced: bool,
    pub(super) entries: Vec<Entry>,
    /// Free slots of a cut slab.
    pub(super) free: Vec<u16>,
}

impl Slab {
    fn busy(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.state, State::Writing | State::Clearing))
    }
}

/// Why no slot was taken for a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NoSlot {
    /// Every candidate is busy (written or cleared right now).
    Busy,
    /// The admission policy kept the chunk CLOCK would have evicted.
    Declined,
}

/// A slot taken for a write.
pub(super) struct Taken {
    pub(super) loc: Loc,
    /// Whether the slot's slab was cut for it: its mark is written before the slot's header.
    pub(super) cut: bool,
}

pub(super) struct Index {
    pub(super) map: HashMap<u64, Loc>,
    pub(super) small: Vec<Entry>,
    small_free: Vec<u32>,
    small_hand: u32,
    pub(super) slabs: Vec<Slab>,
    slab_free: Vec<u32>,
    slab_hand: u32,
    /// Per class, cut slabs that may have a free slot (checked when one is taken).
    partial: Vec<Vec<u32>>,
    pub(super) keep: HashMap<Loc, KeepAlive>,
}

impl Index {
    pub(super) fn new(g: &Geometry) -> Self {
        Self {
            map: HashMap::new(),
            small: vec![FREE; g.small_slots as usize],
            // Reversed, so that slots are taken from the front of the file first.
            small_free: (0..g.small_slots).rev().collect(),
            small_hand: 0,
            slabs: (0..g.slabs).map(|_| Slab::default()).collect(),
            slab_free: (0..g.slabs).rev().collect(),
            slab_hand: 0,
            partial: vec![Vec::new(); usize::from(g.classes())],
            keep: HashMap::new(),
        }
    }

    pub(super) fn entry(&self, loc: Loc) -> Option<&Entry> {
        match loc {
            Loc::Small(slot) => self.small.get(slot as usize),
            Loc::Slab { slab, class, sub } => {
                let s = self.slabs.get(slab as usize).filter(|s| s.class == class)?;
                s.entries.get(usize::from(sub))
            }
        }
    }

    pub(super) fn entry_mut(&mut self, loc: Loc) -> Option<&mut Entry> {
        match loc {
            Loc::Small(slot) => self.small.get_mut(slot as usize),
            Loc::Slab { slab, class, sub } => {
                let s = self.slabs.get_mut(slab as usize).filter(|s| s.class == class)?;
                s.entries.get_mut(usize::from(sub))
            }
        }
    }

    /// What the headers at `loc` carry besides the epoch: the stamp of a cut slab, else 0.
    pub(super) fn stamp(&self, loc: Loc) -> u64 {
        match loc {
            Loc::Slab { slab, class, .. } if class > 0 => self.slabs[slab as usize].stamp,
            _ => 0,
        }
    }

    /// Marks the entry at `loc` (or its slab) recently used.
    pub(super) fn reference(&mut self, loc: Loc) {
        match loc {
            Loc::Small(slot) => self.small[slot as usize].referenced = true,
            Loc::Slab { slab, .. } => self.slabs[slab as usize].referenced = true,
        }
    }

    /// Bytes of small slots and slabs in use (a cut slab counts whole).
    pub(super) fn used_bytes(&self, g: &Geometry) -> u64 {
        let small = (self.small.len() - self.small_free.len()) as u64 * BLOCK;
        small + (self.slabs.len() - self.slab_free.len()) as u64 * (g.slab_bytes + BLOCK)
    }

    /// Unindexes `hash`. Returns a live slot to clear; a slot being written is cancelled (and
    /// its keep-alive dropped, so foyer stops serving the entry too).
    pub(super) fn unindex(&mut self, hash: u64) -> Option<Loc> {
        let loc = self.map.remove(&hash)?;
        let e = self.entry_mut(loc)?;
        match e.state {
            State::Live => {
                e.state = State::Clearing;
                Some(loc)
            }
            State::Writing => {
                e.cancelled = true;
                self.keep.remove(&loc);
                None
            }
            State::Free | State::Clearing => None,
        }
    }

    /// A slot for a value that fits `fit`: a free one, else one freed by CLOCK, whose entries
    /// (one chunk, or the small values of a cut slab or a small slot) are displaced only if
    /// `admit` says so of their hashes.
    pub(super) fn take(
        &mut self,
        g: &Geometry,
        fit: Fit,
        metrics: &StoreMetrics,
        admit: &dyn Fn(&[u64]) -> bool,
    ) -> Result<Taken, NoSlot> {
        let class = match fit {
            Fit::Inline => {
                let slot = match self.small_free.pop() {
                    Some(slot) => slot,
                    None => self.evict_small(metrics, admit)?,
                };
                return Ok(Taken {
                    loc: Loc::Small(slot),
                    cut: false,
                });
            }
            Fit::Slab(class) => class,
        };
        let partial = &mut self.partial[usize::from(class)];
        while let Some(&slab) = partial.last() {
            let s = &mut self.slabs[slab as usize];
            let sub = if s.class == class { s.free.pop() } else { None };
            match sub {
                Some(sub) => {
                    if s.free.is_empty() {
                        partial.pop();
                    }
                    return Ok(Taken {
                        loc: Loc::Slab { slab, class, sub },
                        cut: false,
                    });
                }
                // A slab since filled, freed, evicted or cut another way.
                None => partial.pop(),
            };
        }
        let slab = match self.slab_free.pop() {
            Some(slab) => slab,
            None => self.evict_slab(metrics, admit)?,
        };
        let (subs, _) = g.cut(class).ok_or(NoSlot::Busy)?;
        let stamp = if class == 0 { 0 } else { random_u64() | 1 };
        self.slabs[slab as usize] = Slab {
            class,
            stamp,
            referenced: false,
            entries: vec![FREE; usize::from(subs)],
            free: (1..subs).rev().collect(),
        };
        if subs > 1 {
            self.partial[usize::from(class)].push(slab);
        }
        Ok(Taken {
            loc: Loc::Slab { slab, class, sub: 0 },
            cut: class > 0,
        })
    }

    /// A small slot freed by CLOCK, if `admit` says so of the value in it.
    fn evict_small(&mut self, metrics: &StoreMetrics, admit: &dyn Fn(&[u64]) -> bool) -> Result<u32, NoSlot> {
        let n = self.small.len() as u32;
        for _ in 0..2 * n {
            let slot = self.small_hand;
            self.small_hand = (slot + 1) % n;
            let e = &mut self.small[slot as usize];
            if e.state != State::Live {
                continue;
            }
            if std::mem::take(&mut e.referenced) {
                continue;
            }
            let hash = e.hash;
            if !admit(&[hash]) {
                return Err(NoSlot::Declined);
            }
            *e = FREE;
            if self.map.get(&hash) == Some(&Loc::Small(slot)) {
                self.map.remove(&hash);
            }
            metrics.disk_evictions.inc();
            return Ok(slot);
        }
        Err(NoSlot::Busy)
    }

    /// A slab freed by CLOCK, with every entry in it: only if `admit` says so of their hashes;
    /// if not, the hand has moved past it.
    fn evict_slab(&mut self, metrics: &StoreMetrics, admit: &dyn Fn(&[u64]) -> bool) -> Result<u32, NoSlot> {
        let n = self.slabs.len() as u32;
        for _ in 0..2 * n {
            let slab = self.slab_hand;
            self.slab_hand = (slab + 1) % n;
            let s = &mut self.slabs[slab as usize];
            if s.entries.is_empty() || s.busy() {
                continue;
            }
            if std::mem::take(&mut s.referenced) {
                continue;
            }
            let held: Vec<u64> = s
                .entries
                .iter()
                .filter(|e| e.state == State::Live)
                .map(|e| e.hash)
                .collect();
            if !held.is_empty() && !admit(&held) {
                return Err(NoSlot::Declined);
            }
            let class = s.class;
            for (sub, e) in std::mem::take(&mut s.entries).into_iter().enumerate() {
                if e.state != State::Live {
                    continue;
                }
                let loc = Loc::Slab {
                    slab,
                    class,
                    sub: sub as u16,
                };
                if self.map.get(&e.hash) == Some(&loc) {
                    self.map.remove(&e.hash);
                }
                metrics.disk_evictions.inc();
            }
            self.slabs[slab as usize] = Slab::default();
            return Ok(slab);
        }
        Err(NoSlot::Busy)
    }

    /// Frees the slot at `loc`, whose header is cleared; a cut slab with nothing left in it is
    /// freed whole.
    pub(super) fn release(&mut self, loc: Loc) {
        match loc {
            Loc::Small(slot) => {
                self.small[slot as usize] = FREE;
                self.small_free.push(slot);
            }
            Loc::Slab { slab, class, sub } => {
                let s = &mut self.slabs[slab as usize];
                s.entries[usize::from(sub)] = FREE;
                if class > 0 && s.entries.iter().any(|e| e.state != State::Free) {
                    if s.free.is_empty() {
                        self.partial[usize::from(class)].push(slab);
                    }
                    s.free.push(sub);
                    return;
                }
                *s = Slab::default();
                self.slab_free.push(slab);
            }
        }
    }

    /// Rebuilds the free lists from the entries (after recovery): empty slabs are free, cut
    /// slabs with free slots are listed for their class.
    pub(super) fn relist(&mut self, g: &Geometry) {
        self.small_free = (0..g.small_slots)
            .rev()
            .filter(|&s| self.small[s as usize].state == State::Free)
            .collect();
        self.slab_free.clear();
        for slab in (0..g.slabs).rev() {
            let s = &mut self.slabs[slab as usize];
            if s.entries.iter().all(|e| e.state == State::Free) {
                *s = Slab::default();
                self.slab_free.push(slab);
            } else if s.class > 0 {
                s.free = (0..s.entries.len() as u16)
                    .rev()
                    .filter(|&sub| s.entries[usize::from(sub)].state == State::Free)
                    .collect();
                if !s.free.is_empty() {
                    let class = usize::from(s.class);
                    self.partial[class].push(slab);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks the slot at `loc` live with an entry of `hash`.
    fn make_live(index: &mut Index, loc: Loc, hash: u64) {
        *index.entry_mut(loc).unwrap() = Entry {
            hash,
            generation: 1,
            len: 1,
            state: State::Live,
            referenced: false,
            cancelled: false,
        };
        index.map.insert(hash, loc);
    }

    #[test]
    fn a_slab_cut_again_another_way_keeps_its_free_slots() {
        let g = Geometry::new(64 << 20, 1 << 20).unwrap();
        let metrics = StoreMetrics::new(&shardcache_metrics::Registry::new());
        let mut index = Index::new(&g);
        let (fine, coarse) = (g.classes() - 1, 1);
        // Slab 0 cut fine with one slot live; every other slab holds a chunk.
        let first = index.take(&g, Fit::Slab(fine), &metrics, &|_| true).ok().unwrap();
        assert!(first.cut);
        make_live(&mut index, first.loc, 1);
        while let Some(slab) = index.slab_free.pop() {
            index.slabs[slab as usize] = Slab {
                entries: vec![FREE],
                ..Slab::default()
            };
            make_live(&mut index, Loc::Slab { slab, class: 0, sub: 0 }, 100 + u64::from(slab));
        }
        // A coarse value evicts slab 0 (CLOCK's hand is there) and cuts it again.
        let coarse_slot = index.take(&g, Fit::Slab(coarse), &metrics, &|_| true).ok().unwrap();
        assert_eq!(
            coarse_slot.loc,
            Loc::Slab {
                slab: 0,
                class: coarse,
                sub: 0
            }
        );
        assert!(!index.map.contains_key(&1));
        // A fine value finds slab 0 still listed as having fine slots free: it must leave the
        // coarse cut's free slots alone and take another slab.
        let next = index.take(&g, Fit::Slab(fine), &metrics, &|_| true).ok().unwrap();
        assert!(matches!(next.loc, Loc::Slab { slab, .. } if slab != 0));
        let (subs, _) = g.cut(coarse).unwrap();
        assert_eq!(
            index.slabs[0].free.len(),
            usize::from(subs) - 1,
            "a free slot of slab 0 was lost"
        );
    }
}

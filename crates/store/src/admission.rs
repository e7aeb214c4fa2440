//! Which chunks the disk tier keeps once it is full: datasets larger than the cache.
//!
//! A training job reads its dataset once per epoch, in the same order or reshuffled. Admitting
//! every miss, with CLOCK underneath, evicts each chunk just before it is read again: the cache
//! costs I/O and gives no hits. The best a cache of C chunks can do on passes over D > C chunks
//! is to keep C of them: 1 - C/D of each pass misses.
//!
//! So a miss displaces the chunk CLOCK picks as its victim only when it was read clearly more
//! often than the victim (two reads more, counting the newcomer's *earlier* reads only), or when
//! the victim is stale: not read for 1.35 reuse distances. While a job repeats its dataset the
//! residents stay; once it moves to another dataset, the old one goes stale and the new one is
//! admitted from its second pass. A small hot set read more often than once per epoch keeps its
//! place by frequency. (One read more is not enough: counts are halved in the middle of some
//! pass, after which the chunks of one dataset differ by one read; and counting this read too
//! would let every newcomer of a reshuffled epoch beat the residents not yet read in it.)
//!
//! Time is counted in reads ("ticks"). A read counts once per chunk and pass: a chunk read again
//! within a few ticks (a reader walking it in pieces) is the same read, and a chunk whose fill
//! was started ahead of its reader ([`Admission::expect`]) is counted then and not again when
//! the reader reaches it, however many streams read in between. Counts are halved
//! periodically, so yesterday's dataset fades.
//!
//! The reuse distance is the average gap between two reads of a chunk, each gap weighted by its
//! length: a hot set read every few ticks, or a client re-reading a few cached chunks, adds many
//! short gaps, and an unweighted average would make a dataset's chunks look stale. It is measured
//! on a sample of the chunks (picked by hash, at most [`SAMPLED`]), so it stays known however
//! large the dataset. A victim the policy holds no count for (forgotten past the memory bound, or
//! cached before a restart) is judged from the first time it came up as a victim.
//!
//! Small objects share a chunk slot: a newcomer takes their place only if it would take the
//! place of each, and the counts are sized by the entries the tier holds (the store says how
//! many when it asks, [`Admission::admit`]).
//!
//! The working set (distinct chunks read over two reuse distances: any two passes hold one
//! whole pass, whatever the order) is what `shardcache stats`
//! compares with the tier's size ([`Admission::working_set`]).
//!
//! Trace tests in this module check the rule against the bound on cyclic and shuffled passes,
//! a dataset switch, a hot set and a cycling client beside a scan, and concurrent streams with
//! read-ahead.

use std::collections::HashMap;

use parking_lot::Mutex;

/// A victim not read for this many reuse distances is stale. Lower adopts a new dataset sooner
/// and keeps less of a reshuffled one (whose chunks go up to two passes between reads); 1.35
/// adopts a reshuffled dataset to over 90% of the optimum by its third pass at 1.25x-3x the
/// tier, and keeps steady passes within 0.03 of the bound.
const STALE_DISTANCES: f64 = 1.35;
/// A newcomer displaces a victim it was read this many times more often than.
const MORE_READS: u8 = 2;
/// Counts are halved after this many reads per entry the disk tier holds (or four reuse
/// distances, if more).
const HALVING_PER_ENTRY: u64 = 10;
/// Largest count kept.
const MAX_COUNT: u8 = 15;
/// Chunks counted at most, per entry the disk tier holds (about 40 bytes each): past this,
/// counts are halved early, which forgets the chunks read once. Passes over up to about this
/// many times the tier keep their counts; past it, the residents are judged by staleness alone.
const SEEN_PER_ENTRY: u64 = 8;
/// The running average of reuse gaps spans this many reuse distances: within a reshuffled pass
/// the gaps run from near 0 (read late, then early) to twice the dataset, so an average over a
/// shorter span swings with the position in the pass.
const GAP_SPAN: f64 = 2.0;
/// Chunks whose gaps are measured at most: a sample, picked by hash, that halves when it would
/// grow past this, so the reuse distance and the working set are known for any dataset size.
const SAMPLED: usize = 4096;

/// The admission policy of the disk tier, fed with every chunk read.
///
/// One lock, taken once per chunk read for a few map operations (about 0.1 us). A halving walks
/// every count under it: about 25 ms per million chunks counted (measured on a loaded 2-core
/// machine). It comes once per ten reads per entry held, or sooner when the counts reach their
/// bound: a 1 TiB tier of 8 MiB chunks counts at most a million chunks.
pub struct Admission {
    state: Mutex<State>,
}

struct State {
    /// Per chunk hash: reads counted (halved periodically) and the tick of the last one.
    seen: HashMap<u64, Seen>,
    /// Victims with no count, and the tick each first came up as a victim.
    unknown: HashMap<u64, u64>,
    /// Reads counted so far: the clock reuse distances are measured in.
    tick: u64,
    since_halving: u64,
    /// Entries the tier holds: whole chunks, or more when it holds small objects (as the store
    /// last said, when it asked for a slot).
    capacity: u64,
    /// The sampled chunks (those whose mixed hash is at most `sample_below`), with the tick of
    /// each one's last read.
    sample: HashMap<u64, u64>,
    sample_below: u64,
    /// Running averages of the sampled reuse gaps and of their squares: their ratio is the
    /// reuse distance, each gap weighted by its length.
    gap: f64,
    gap_squared: f64,
    /// Gaps averaged so far. The average is trusted once they span a reuse distance: before,
    /// it holds only the short gaps of a pass's first reads.
    gaps: u64,
    /// Distinct sampled chunks read since `window_start`; the working set of the last whole
    /// window (two reuse distances), scaled from the sample.
    window_start: u64,
    window_distinct: u64,
    working_set: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    count: u8,
    /// Counted when a fill was started ahead of its reader: the reader's read is not counted.
    expected: bool,
    /// Warmed by an operator: admitted in place of any victim, once.
    favoured: bool,
    last: u64,
}

/// The hash of a chunk, mixed, for picking the sample.
fn mixed(hash: u64) -> u64 {
    let x = hash.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}

impl Admission {
    /// A policy for a disk tier of `slots` chunks.
    pub fn new(slots: u64) -> Self {
        let slots = slots.max(1);
        Self {
            state: Mutex::new(State {
                seen: HashMap::new(),
                unknown: HashMap::new(),
                tick: 0,
                since_halving: 0,
                capacity: slots,
                sample: HashMap::new(),
                sample_below: u64::MAX,
                gap: 0.0,
                gap_squared: 0.0,
                gaps: 0,
                window_start: 0,
                window_distinct: 0,
                working_set: None,
            }),
        }
    }

    /// Records a read of chunk `hash`, a hit or a miss.
    pub fn touch(&self, hash: u64) {
        self.state.lock().count(hash, false);
    }

    /// Records a read of chunk `hash` ahead of its reader (a fill started by read-ahead): the
    /// reader's own read of it, when it comes, is not counted again.
    pub fn expect(&self, hash: u64) {
        self.state.lock().count(hash, true);
    }

    /// Whether chunk `candidate`, not cached, should take the place of `victims` (one chunk, or
    /// the small values sharing a slot): only if it should take the place of each. `held` is
    /// the entries the full tier holds (more than its chunk slots when small objects share
    /// them), which sizes what the policy counts.
    pub fn admit(&self, candidate: u64, victims: &[u64], held: u64) -> bool {
        let mut s = self.state.lock();
        s.capacity = s.capacity.max(held);
        let newcomer = s
            .seen
            .get_mut(&candidate)
            .map(|e| (std::mem::take(&mut e.favoured), e.count));
        let (favoured, earlier) = newcomer.map_or((false, 0), |(f, count)| (f, count.saturating_sub(1)));
        // Every victim is looked at, so that those without a count all start their wait.
        let mut admit = true;
        for v in victims {
            admit &= s.displaces(earlier, *v);
        }
        if favoured || admit {
            for v in victims {
                s.unknown.remove(v);
            }
        }
        favoured || admit
    }

    /// Makes chunk `hash` win its next admission, whatever the victim, and gives it the highest
    /// count: an operator warmed it.
    pub fn favour(&self, hash: u64) {
        let mut s = self.state.lock();
        let tick = s.tick;
        let e = s.seen.entry(hash).or_default();
        e.count = MAX_COUNT;
        e.favoured = true;
        e.last = tick;
    }

    /// The working set in chunks: the distinct chunks read over the last two reuse distances,
    /// once they are known.
    pub fn working_set(&self) -> Option<u64> {
        self.state.lock().working_set
    }
}

impl State {
    /// Whether a newcomer read `earlier` times before displaces `victim`.
    fn displaces(&mut self, earlier: u8, victim: u64) -> bool {
        let resident = self.seen.get(&victim).copied();
        if earlier >= resident.map_or(0, |e| e.count).saturating_add(MORE_READS) {
            return true;
        }
        let Some(distance) = self.distance() else {
            return false;
        };
        let since = match resident {
            Some(r) => r.last,
            None => {
                if self.unknown.len() as u64 > 2 * self.capacity {
                    // Victims that left the tier another way (deleted, replaced): start over.
                    self.unknown.clear();
                }
                *self.unknown.entry(victim).or_insert(self.tick)
            }
        };
        (self.tick - since) as f64 > STALE_DISTANCES * distance
    }

    /// Counts a read of `hash`, unless it is one already counted.
    fn count(&mut self, hash: u64, expected: bool) {
        // A read within this many ticks of the last is the same pass's (a reader walking the
        // chunk in pieces, or several readers at once).
        let same_read = (self.capacity / 8).clamp(4, 1024);
        // A read-ahead whose reader never came (it went away) does not swallow a later pass's.
        let expected_within = self.distance().map_or(self.capacity, |d| (d / 2.0) as u64);
        let e = self.seen.entry(hash).or_default();
        let since = self.tick - e.last;
        if e.count > 0 && e.expected {
            if expected || since < expected_within {
                // Another read-ahead of it, or its reader: the read is counted already.
                e.expected &= expected;
                return;
            }
            e.expected = false;
        }
        if e.count > 0 && since < same_read {
            return;
        }
        self.tick += 1;
        e.count = e.count.saturating_add(1).min(MAX_COUNT);
        e.last = self.tick;
        e.expected = expected;
        self.unknown.remove(&hash);
        self.measure(hash);
        self.since_halving += 1;
        let period = (self.capacity * HALVING_PER_ENTRY).max(self.distance().map_or(0, |g| (4.0 * g) as u64));
        if self.since_halving >= period || self.seen.len() as u64 > SEEN_PER_ENTRY * self.capacity {
            self.since_halving = 0;
            self.seen.retain(|_, e| {
                e.count /= 2;
                e.count > 0 || e.favoured
            });
        }
    }

    /// Measures the gap since the last read of `hash` and counts it in the working set, if it
    /// is in the sample.
    fn measure(&mut self, hash: u64) {
        let mix = mixed(hash);
        if mix > self.sample_below {
            return;
        }
        let tick = self.tick;
        let window_start = self.window_start;
        let previous = self.sample.insert(hash, tick);
        if let Some(last) = previous {
            self.average((tick - last) as f64);
        }
        let distinct = previous.is_none_or(|last| last <= window_start);
        self.window_distinct += u64::from(distinct);
        if self.sample.len() > SAMPLED {
            // Half the sample: keep the chunks whose mixed hash is in the lower half.
            self.sample_below /= 2;
            let below = self.sample_below;
            self.sample.retain(|h, _| mixed(*h) <= below);
            self.window_distinct /= 2;
        }
        if let Some(distance) = self.distance() {
            let elapsed = (tick - self.window_start) as f64;
            if elapsed >= 2.0 * distance {
                // (A window much longer, the first one, spans what came before the distance
                // was known: it is not published.)
                if elapsed < 3.0 * distance {
                    let share = (self.sample_below as f64 + 1.0) / 2f64.powi(64);
                    self.working_set = Some((self.window_distinct as f64 / share).round() as u64);
                }
                self.window_start = tick;
                self.window_distinct = 0;
            }
        }
    }

    /// Adds gap `g` to the running averages.
    fn average(&mut self, g: f64) {
        self.gaps += 1;
        let weight = match self.estimate() {
            None => 1.0,
            Some(d) => (1.0 / self.gaps as f64).max(1.0 / (GAP_SPAN * d.max(1.0))),
        };
        self.gap += (g - self.gap) * weight;
        self.gap_squared += (g * g - self.gap_squared) * weight;
    }

    /// The reuse distance: the average gap, each weighted by its length.
    fn estimate(&self) -> Option<f64> {
        (self.gap > 0.0).then(|| self.gap_squared / self.gap)
    }

    /// The reuse distance, once the gaps averaged span one. With a sample of the chunks, fewer
    /// gaps come per tick: the span is counted in the sample's gaps, scaled up.
    fn distance(&self) -> Option<f64> {
        let share = (self.sample_below as f64 + 1.0) / 2f64.powi(64);
        self.estimate().filter(|d| self.gaps as f64 / share >= *d)
    }
}

#[cfg(test)]
mod tests;

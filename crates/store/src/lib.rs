//! The disk tier: a store of fixed-size slots in one file (or block device), written and read
//! through io_uring, under foyer as its storage engine (`cache::engine`).
//!
//! shardcache caches fixed-size chunks, so the store is built for them: one slab per chunk, a
//! header per slot with the full key, a generation and a checksum per segment; small slots
//! whose header holds the value itself, for metadata entries and tails of a few KiB; and slabs
//! cut into 2, 4, ... 1024 slots on demand, for values in between (short tails, small
//! objects), each in the smallest slot that holds it. The layout is in [`format`].
//!
//! - **Index.** In memory: key hash -> slot, with each slot's state and generation, and a
//!   CLOCK bit per small slot and per slab. CLOCK because the units evicted are all one size (a
//!   small slot, or a slab with whatever it holds): a second chance is one bit, not a copy, and
//!   a hit costs a flag store under the index lock. Evicting a cut slab evicts all its slots,
//!   as a log-structured cache evicts a region.
//! - **Writes.** A slot is taken (a free one, else CLOCK evicts), its header is cleared, the data
//!   written, then the header; only then is it live. (A slot of a cut slab needs no clearing:
//!   it is either new to the cut, whose stamp makes any old header there foreign, or was freed
//!   after its header was cleared.) No fsync: a crash at any point leaves a slot
//!   whose header is missing, or whose data fails its checksums, and both read as misses.
//! - **Delete wins.** A delete (or a newer write of the same key) unindexes the slot at once; a
//!   write still under way finds itself cancelled when it completes and clears its header. A
//!   slot that stops holding its entry gets its header cleared before it is reused, so a deleted
//!   entry does not come back after a restart either.
//! - **Recovery** reads the header table in large sequential reads; for each key the highest
//!   generation wins. A superblock of another geometry, or none, starts an empty store with a new
//!   epoch: headers of an older epoch are never taken for this store's.
//! - **Faults** never panic and never wedge: an I/O error fails that one write or read (counted
//!   and logged), the slot is dropped, and the cache carries on from memory and upstream. After
//!   three failures in a row, or when the file is removed or replaced under it, the store is
//!   *degraded*: it reads and writes nothing, and every two seconds checks the disk again (a
//!   write and read-back of a probe block, or re-creating a removed file, empty). When that
//!   works it resumes, without a restart.
//!
//! This crate holds all of shardcache's `unsafe` code and io_uring: besides the store, the chunk
//! buffers ([`buf`]: mapped, pooled) and the admission policy ([`admission`]) it consults when
//! full. It uses `shardcache-metrics` only; it must not reach the cache above it (foyer, keys,
//! fills) or anything of the request path.

pub mod admission;
pub mod buf;
mod file;
mod format;
mod health;
mod index;
mod io;
mod metrics;
mod read;
mod seal;
mod uring;
mod write;

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::admission::Admission;
use crate::buf::DiskBuf;
use file::random_u64;
use format::{CutMark, Geometry, Header, Loc, Superblock, BLOCK};
use health::HEALTH_CHECK;
use index::{Entry, Index, NoSlot, Slab, State, Taken, FREE};
use io::Io;
pub use io::IoEngine;
pub use metrics::StoreMetrics;
pub use read::{RangeError, RangeReader};
pub use seal::{KeyError, Keys};
use write::Ticket;

/// File name of the store inside a cache directory.
pub const STORE_FILE: &str = "shardcache.store";

/// Headers read per recovery read of the table (1 MiB).
const RECOVERY_BATCH: u32 = 256;
/// Cut slabs whose slot headers recovery reads at once.
const RECOVERY_READS: usize = 16;

/// Store settings.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// A directory (the store is a file in it) or a file or block device.
    pub path: PathBuf,
    /// Bytes the store may take.
    pub capacity_bytes: u64,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// Open with O_DIRECT (falls back to buffered I/O where the filesystem refuses it).
    pub direct: bool,
    /// The I/O engine wanted.
    pub io_engine: IoEngine,
    /// Master keys to encrypt entries with; `None` stores them in the clear (CRC-checked).
    pub keys: Option<Arc<Keys>>,
}

/// The store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file or device could not be opened, sized or read.
    #[error("cache.disk.path: {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The capacity cannot hold a chunk.
    #[error("cache.disk.capacity_bytes: {0}")]
    Capacity(String),
}

/// An entry read back.
#[derive(Debug)]
pub struct Loaded {
    /// The full key, as written.
    pub key: Vec<u8>,
    /// The value kind, as written.
    pub kind: u8,
    /// The value.
    pub value: Bytes,
}

/// Something to keep alive until an entry's write has finished or been cancelled (foyer's
/// `PieceRef`, which lets foyer serve the entry from memory meanwhile).
pub type KeepAlive = Box<dyn std::any::Any + Send>;

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    /// The I/O engine over the current file; replaced when a removed file is re-created.
    io: ArcSwap<Io>,
    /// The file's path and (device, inode) as opened, and the settings to open it again.
    file: Mutex<(PathBuf, (u64, u64))>,
    opts: StoreOptions,
    capacity: u64,
    failures: AtomicU32,
    degraded: AtomicBool,
    /// A health probe is in the kernel.
    probing: AtomicBool,
    /// Slots whose header clear is still to be written (skipped while degraded, or failed):
    /// not reused until it is.
    unclear: Mutex<Vec<Loc>>,
    /// Staging buffers of chunk writes, for reuse.
    stages: Mutex<Vec<DiskBuf>>,
    /// Read-ahead of range readers in flight: bounded, so that a reader's first read (not
    /// bounded) queues behind a few bulk reads, not behind every reader's.
    ahead: Arc<tokio::sync::Semaphore>,
    geometry: Geometry,
    keys: Option<Arc<Keys>>,
    epoch: AtomicU64,
    next_generation: AtomicU64,
    index: Mutex<Index>,
    /// Which chunks a full store keeps.
    admission: Arc<Admission>,
    writes: Mutex<Writes>,
    written: watch::Sender<u64>,
    metrics: Arc<StoreMetrics>,
    /// Where writes and clears run: the cache's own runtime, which outlives every request.
    runtime: tokio::runtime::Handle,
}

/// Write numbers in flight, so that `wait` can tell when every write begun before it is done.
struct Writes {
    next: u64,
    in_flight: BTreeSet<u64>,
}

impl Store {
    /// Opens the store at `opts.path`, recovering what a previous run left there. Writes run on
    /// `runtime`.
    pub async fn open(
        opts: &StoreOptions,
        metrics: Arc<StoreMetrics>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, StoreError> {
        let io_err = |source| StoreError::Io {
            path: opts.path.display().to_string(),
            source,
        };
        let opened = file::open(&opts.path, opts.capacity_bytes, opts.direct, true).map_err(io_err)?;
        // The last block is kept out of the layout: the health check's probe writes there.
        let geometry = Geometry::new(opened.capacity.saturating_sub(BLOCK), opts.chunk_size).ok_or_else(|| {
            StoreError::Capacity(format!(
                "{} bytes cannot hold a chunk of {} bytes",
                opened.capacity, opts.chunk_size
            ))
        })?;
        let io = Io::new(Arc::new(opened.file), opts.io_engine).await;
        let started = Instant::now();
        let block = io.read(DiskBuf::new(BLOCK as usize), 0).await;
        let found = block.ok().and_then(|b| Superblock::decode(&b));
        let sealed = opts.keys.is_some();
        let (epoch, recovered) = match found {
            Some(sb) if sb.geometry == geometry && sb.sealed == sealed => (sb.epoch, true),
            _ => {
                let sb = Superblock {
                    geometry,
                    epoch: random_u64(),
                    sealed,
                };
                io.write(sb.encode(), 0).await.map_err(io_err)?;
                if found.is_some() {
                    tracing::info!(
                        path = %opts.path.display(),
                        "the disk tier's geometry or encryption changed; starting it empty"
                    );
                }
                (sb.epoch, false)
            }
        };
        let (written, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            io: ArcSwap::from_pointee(io),
            file: Mutex::new((opened.path, opened.identity)),
            opts: opts.clone(),
            capacity: opened.capacity,
            failures: AtomicU32::new(0),
            degraded: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            unclear: Mutex::new(Vec::new()),
            stages: Mutex::new(Vec::new()),
            ahead: Arc::new(tokio::sync::Semaphore::new(read::AHEAD_IN_FLIGHT)),
            geometry,
            keys: opts.keys.clone(),
            epoch: AtomicU64::new(epoch),
            next_generation: AtomicU64::new(1),
            index: Mutex::new(Index::new(&geometry)),
            admission: Arc::new(Admission::new(u64::from(geometry.slabs))),
            writes: Mutex::new(Writes {
                next: 0,
                in_flight: BTreeSet::new(),
            }),
            written,
            metrics,
            runtime,
        });
        shared.metrics.disk_degraded.set(0);
        let watched = Arc::downgrade(&shared);
        shared.runtime.spawn(async move {
            loop {
                tokio::time::sleep(HEALTH_CHECK).await;
                let Some(shared) = watched.upgrade() else { break };
                shared.check_health().await;
            }
        });
        let store = Self { shared };
        if recovered {
            store.recover().await.map_err(io_err)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        store.shared.metrics.disk_recovery_seconds.set(seconds);
        tracing::info!(
            path = %opts.path.display(),
            engine = store.engine(),
            entries = store.entries(),
            small_slots = geometry.small_slots,
            slabs = geometry.slabs,
            seconds,
            "disk tier open"
        );
        Ok(store)
    }

    /// The policy that decides which chunks the store keeps once it is full; fed with every
    /// chunk read.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.shared.admission
    }

    /// The I/O engine in use.
    pub fn engine(&self) -> &'static str {
        self.shared.io().engine()
    }

    /// Entries indexed.
    pub fn entries(&self) -> usize {
        self.shared.lock().map.len()
    }

    /// Bytes of small slots and slabs holding or being written with entries.
    pub fn used_bytes(&self) -> u64 {
        self.shared.lock().used_bytes(&self.shared.geometry)
    }

    /// Whether the store is degraded: its disk failed, and it reads and writes nothing until a
    /// probe finds the disk working again.
    pub fn degraded(&self) -> bool {
        self.shared.degraded()
    }

    /// Whether `hash` may be stored (indexed, being written or written).
    pub fn contains(&self, hash: u64) -> bool {
        !self.shared.degraded() && self.shared.lock().map.contains_key(&hash)
    }

    /// Starts writing an entry; `keep` is dropped once the write has finished or was cancelled.
    /// Never blocks: when no slot can be taken the entry is not stored. Replaces any entry of
    /// the same hash.
    pub fn enqueue(&self, hash: u64, key: Vec<u8>, kind: u8, value: Bytes, keep: KeepAlive) {
        let shared = &self.shared;
        let Some(fit) = shared.geometry.fit(key.len(), value.len(), shared.keys.is_some()) else {
            return;
        };
        if shared.degraded() {
            shared.metrics.disk_write_drops.inc();
            return;
        }
        let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
        let epoch = shared.epoch.load(Ordering::Relaxed);
        let (loc, stamp, cut) = {
            let mut index = shared.lock();
            let replaced = index.unindex(hash);
            let held = index.map.len() as u64;
            let admit = |victims: &[u64]| shared.admission.admit(hash, victims, held);
            let Taken { loc, cut } = match index.take(&shared.geometry, fit, &shared.metrics, &admit) {
                Ok(taken) => taken,
                Err(why) => {
                    drop(index);
                    if let Some(old) = replaced {
                        shared.clone().clear_later(old);
                    }
                    match why {
                        NoSlot::Busy => shared.metrics.disk_write_drops.inc(),
                        NoSlot::Declined => shared.metrics.disk_admissions_declined.inc(),
                    }
                    return;
                }
            };
            if let Some(e) = index.entry_mut(loc) {
                *e = Entry {
                    hash,
                    generation,
                    len: value.len() as u64,
                    state: State::Writing,
                    referenced: false,
                    cancelled: false,
                };
            }
            index.map.insert(hash, loc);
            index.keep.insert(loc, keep);
            let stamp = index.stamp(loc);
            drop(index);
            if let Some(old) = replaced {
                shared.clone().clear_later(old);
            }
            (loc, stamp, cut)
        };
        let cut = match loc {
            Loc::Slab { class, .. } if cut => Some(CutMark { class, epoch, stamp }),
            _ => None,
        };
        let ticket = Ticket::new(shared);
        let header = Header {
            epoch: epoch ^ stamp,
            generation,
            hash,
            kind,
            len: value.len() as u64,
            segment_bytes: shared.geometry.segment_bytes,
            key,
            sealed: None,
            checks: Vec::new(),
            inline: None,
        };
        shared
            .runtime
            .spawn(shared.clone().write(loc, cut, header, value, ticket));
    }

    /// The entry for `hash`, if stored and whole.
    pub async fn load(&self, hash: u64) -> Option<Loaded> {
        self.shared.load(hash).await
    }

    /// Bytes `range` of the value of `hash`, streamed: only the segments that cover them are
    /// read and checked (or decrypted), a group at a time, the first before this returns. `None`
    /// if not stored, damaged, or `range` is not inside the value.
    pub async fn read_range(&self, hash: u64, range: Range<u64>) -> Option<RangeReader> {
        self.shared.read_range(hash, range).await
    }

    /// Forgets `hash`: it cannot be loaded again, whatever write of it is queued or under way.
    pub fn delete(&self, hash: u64) {
        let cleared = self.shared.lock().unindex(hash);
        if let Some(loc) = cleared {
            self.shared.clone().clear_later(loc);
        }
    }

    /// Resolves once every write begun before the call has finished.
    pub async fn wait(&self) {
        let target = self.shared.writes.lock().next;
        let mut done = self.shared.written.subscribe();
        let _ = done.wait_for(|&low| low >= target).await;
    }

    /// Forgets every entry: a new epoch makes every header on disk foreign.
    pub async fn destroy(&self) -> std::io::Result<()> {
        self.wait().await;
        let sb = Superblock {
            geometry: self.shared.geometry,
            epoch: random_u64(),
            sealed: self.shared.keys.is_some(),
        };
        self.shared.io().write(sb.encode(), 0).await?;
        self.shared.epoch.store(sb.epoch, Ordering::Relaxed);
        *self.shared.lock() = Index::new(&self.shared.geometry);
        Ok(())
    }

    /// Rebuilds the index from the headers on disk: the table (small slots, and each slab's
    /// chunk header or cut mark), then the slot headers at the front of each cut slab.
    async fn recover(&self) -> std::io::Result<()> {
        let shared = &self.shared;
        let g = shared.geometry;
        let epoch = shared.epoch.load(Ordering::Relaxed);
        let mut best: HashMap<u64, (Loc, Header)> = HashMap::new();
        let mut keep = |loc: Loc, header: Header| match best.get(&header.hash) {
            Some((_, seen)) if seen.generation >= header.generation => {}
            _ => {
                best.insert(header.hash, (loc, header));
            }
        };
        let mut cuts = Vec::new();
        let table = g.small_slots + g.slabs;
        let mut first = 0;
        while first < table {
            let n = RECOVERY_BATCH.min(table - first);
            let buf = shared
                .io()
                .read(
                    DiskBuf::new((n as u64 * BLOCK) as usize),
                    BLOCK * (1 + u64::from(first)),
                )
                .await?;
            for (i, block) in buf.chunks(BLOCK as usize).enumerate() {
                let at = first + i as u32;
                if at < g.small_slots {
                    match Header::decode(block, epoch) {
                        Some(h) if h.inline.is_some() => keep(Loc::Small(at), h),
                        _ => {}
                    }
                    continue;
                }
                let slab = at - g.small_slots;
                match Header::decode(block, epoch) {
                    Some(h) if h.inline.is_none() && h.len <= g.slab_bytes => {
                        keep(Loc::Slab { slab, class: 0, sub: 0 }, h);
                    }
                    _ => cuts.extend(CutMark::decode(block, epoch, &g).map(|mark| (slab, mark))),
                }
            }
            first += n;
        }
        // The slot headers of cut slabs, a few slabs' worth at a time.
        let io = shared.io();
        let spans: Vec<(u64, usize)> = cuts
            .iter()
            .map(|&(slab, mark)| {
                let (subs, _) = g.cut(mark.class).unwrap_or((0, 0));
                (g.slab_offset(slab), usize::from(subs) * BLOCK as usize)
            })
            .collect();
        let mut reads = futures_util::stream::iter(spans.into_iter().map(move |(at, len)| {
            let io = io.clone();
            async move { io.read(DiskBuf::new(len), at).await }
        }))
        .buffered(RECOVERY_READS);
        for &(slab, mark) in &cuts {
            let Some(buf) = reads.next().await else { break };
            let buf = buf?;
            for (sub, block) in buf.chunks(BLOCK as usize).enumerate() {
                let loc = Loc::Slab {
                    slab,
                    class: mark.class,
                    sub: sub as u16,
                };
                match Header::decode(block, epoch ^ mark.stamp) {
                    Some(h) if h.inline.is_none() && h.len <= g.room(loc) => keep(loc, h),
                    _ => {}
                }
            }
        }
        drop(reads);
        let mut index = shared.lock();
        for &(slab, mark) in &cuts {
            let (subs, _) = g.cut(mark.class).unwrap_or((0, 0));
            index.slabs[slab as usize] = Slab {
                class: mark.class,
                stamp: mark.stamp,
                referenced: false,
                entries: vec![FREE; usize::from(subs)],
                free: Vec::new(),
            };
        }
        let mut top = 0;
        for (hash, (loc, header)) in best {
            top = top.max(header.generation);
            if let Loc::Slab { slab, class: 0, .. } = loc {
                index.slabs[slab as usize].entries = vec![FREE];
            }
            if let Some(e) = index.entry_mut(loc) {
                *e = Entry {
                    hash,
                    generation: header.generation,
                    len: header.len,
                    state: State::Live,
                    referenced: false,
                    cancelled: false,
                };
                index.map.insert(hash, loc);
            }
        }
        index.relist(&g);
        shared.next_generation.store(top + 1, Ordering::Relaxed);
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Index> {
        self.index.lock()
    }

    fn io(&self) -> Arc<Io> {
        self.io.load_full()
    }
}

/// The result of a spawned I/O (a runtime shutting down under it is an I/O error).
fn joined(r: Result<std::io::Result<DiskBuf>, tokio::task::JoinError>) -> std::io::Result<DiskBuf> {
    r.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

fn zeroed() -> DiskBuf {
    let mut buf = DiskBuf::new(BLOCK as usize);
    buf.fill(0);
    buf
}

#[cfg(test)]
mod tests;

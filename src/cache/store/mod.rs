//! The disk tier: a store of fixed-size slots in one file (or block device), written and read
//! through io_uring, under foyer as its storage engine (`cache::engine`).
//!
//! shardcache caches fixed-size chunks, so the store is built for them: one slot per chunk, a
//! header per slot with the full key, a generation and a checksum per segment, and small slots
//! whose header holds the value itself, for metadata entries and short tails. The layout is in
//! [`format`].
//!
//! - **Index.** In memory: key hash -> slot, with each slot's state, generation and CLOCK bit.
//!   CLOCK because slots are all one size: a second chance is one bit, not a copy, and a hit
//!   costs a flag store under the index lock.
//! - **Writes.** A slot is taken (a free one, else CLOCK evicts), its header is cleared, the data
//!   written, then the header; only then is it live. No fsync: a crash at any point leaves a slot
//!   whose header is missing, or whose data fails its checksums, and both read as misses.
//! - **Delete wins.** A delete (or a newer write of the same key) unindexes the slot at once; a
//!   write still under way finds itself cancelled when it completes and clears its header. A
//!   slot that stops holding its entry gets its header cleared before it is reused, so a deleted
//!   entry does not come back after a restart either.
//! - **Recovery** reads the header table in large sequential reads; for each key the highest
//!   generation wins. A superblock of another geometry, or none, starts an empty store with a new
//!   epoch: headers of an older epoch are never taken for this store's.
//! - **Faults** never panic and never wedge: an I/O error fails that one write or read (counted
//!   and logged), the slot is dropped, and the cache carries on from memory and upstream.

mod format;
mod io;
mod uring;

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use super::buf::DiskBuf;
use crate::config::IoEngineKind;
use crate::metrics::Metrics;
use format::{segment_sums, Geometry, Header, Superblock, BLOCK};
use io::Io;

/// File name of the store inside a cache directory.
pub const STORE_FILE: &str = "shardcache.store";

/// Headers read per recovery read (1 MiB).
const RECOVERY_BATCH: u32 = 256;

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
    pub io_engine: IoEngineKind,
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
    io: Io,
    geometry: Geometry,
    epoch: AtomicU64,
    next_generation: AtomicU64,
    index: Mutex<Index>,
    writes: Mutex<Writes>,
    written: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    /// Where writes and clears run: the cache's own runtime, which outlives every request.
    runtime: tokio::runtime::Handle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// Being written; indexed, but loads miss (foyer serves the entry from memory meanwhile).
    Writing,
    Live,
    /// Its header is being cleared; then free.
    Clearing,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    generation: u64,
    len: u64,
    state: State,
    referenced: bool,
    cancelled: bool,
}

const FREE: Slot = Slot {
    hash: 0,
    generation: 0,
    len: 0,
    state: State::Free,
    referenced: false,
    cancelled: false,
};

/// Slot classes: small slots (value inline) and chunk slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Small = 0,
    Chunk = 1,
}

struct Index {
    map: HashMap<u64, u32>,
    slots: Vec<Slot>,
    free: [Vec<u32>; 2],
    hands: [u32; 2],
    keep: HashMap<u32, KeepAlive>,
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
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, StoreError> {
        let io_err = |source| StoreError::Io {
            path: opts.path.display().to_string(),
            source,
        };
        let (file, capacity) = open_file(opts).map_err(io_err)?;
        let geometry = Geometry::new(capacity, opts.chunk_size).ok_or_else(|| {
            StoreError::Capacity(format!(
                "{capacity} bytes cannot hold a chunk of {} bytes",
                opts.chunk_size
            ))
        })?;
        let io = Io::new(Arc::new(file), opts.io_engine).await;
        let started = Instant::now();
        let block = io.read(DiskBuf::new(BLOCK as usize), 0).await;
        let found = block.ok().and_then(|b| Superblock::decode(&b));
        let (epoch, recovered) = match found {
            Some(sb) if sb.geometry == geometry => (sb.epoch, true),
            _ => {
                let sb = Superblock {
                    geometry,
                    epoch: random_u64(),
                };
                io.write(sb.encode(), 0).await.map_err(io_err)?;
                if found.is_some() {
                    tracing::info!(path = %opts.path.display(), "the disk tier's geometry changed; starting it empty");
                }
                (sb.epoch, false)
            }
        };
        let (written, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            io,
            geometry,
            epoch: AtomicU64::new(epoch),
            next_generation: AtomicU64::new(1),
            index: Mutex::new(Index::new(&geometry)),
            writes: Mutex::new(Writes {
                next: 0,
                in_flight: BTreeSet::new(),
            }),
            written,
            metrics,
            runtime,
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
            slots = geometry.slots(),
            seconds,
            "disk tier open"
        );
        Ok(store)
    }

    /// The I/O engine in use.
    pub fn engine(&self) -> &'static str {
        self.shared.io.engine()
    }

    /// Entries indexed.
    pub fn entries(&self) -> usize {
        self.shared.lock().map.len()
    }

    /// Bytes of slots holding or being written with entries.
    pub fn used_bytes(&self) -> u64 {
        let g = &self.shared.geometry;
        let index = self.shared.lock();
        let used = |class: Class| {
            index
                .class_range(g, class)
                .filter(|&s| index.slots[s as usize].state != State::Free)
                .count() as u64
        };
        used(Class::Small) * BLOCK + used(Class::Chunk) * (g.chunk_slot_bytes + BLOCK)
    }

    /// Whether `hash` may be stored (indexed, being written or written).
    pub fn contains(&self, hash: u64) -> bool {
        self.shared.lock().map.contains_key(&hash)
    }

    /// Starts writing an entry; `keep` is dropped once the write has finished or was cancelled.
    /// Never blocks: when no slot can be taken the entry is not stored. Replaces any entry of
    /// the same hash.
    pub fn enqueue(&self, hash: u64, key: Vec<u8>, kind: u8, value: Bytes, keep: KeepAlive) {
        let shared = &self.shared;
        let Some(class) = shared.class_for(key.len(), value.len()) else {
            return;
        };
        let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
        let slot = {
            let mut index = shared.lock();
            let replaced = index.unindex(hash);
            let Some(slot) = index.take(&shared.geometry, class, &shared.metrics) else {
                drop(index);
                if let Some(old) = replaced {
                    shared.clone().clear_later(old);
                }
                shared.metrics.disk_write_drops.inc();
                return;
            };
            index.slots[slot as usize] = Slot {
                hash,
                generation,
                len: value.len() as u64,
                state: State::Writing,
                referenced: false,
                cancelled: false,
            };
            index.map.insert(hash, slot);
            index.keep.insert(slot, keep);
            if let Some(old) = replaced {
                drop(index);
                shared.clone().clear_later(old);
            }
            slot
        };
        let ticket = Ticket::new(shared);
        let header = Header {
            epoch: shared.epoch.load(Ordering::Relaxed),
            generation,
            hash,
            kind,
            len: value.len() as u64,
            segment_bytes: shared.geometry.segment_bytes,
            key,
            sums: Vec::new(),
            inline: None,
        };
        shared.runtime.spawn(shared.clone().write(slot, header, value, ticket));
    }

    /// The entry for `hash`, if stored and whole.
    pub async fn load(&self, hash: u64) -> Option<Loaded> {
        self.shared.load(hash).await
    }

    /// Forgets `hash`: it cannot be loaded again, whatever write of it is queued or under way.
    pub fn delete(&self, hash: u64) {
        let cleared = self.shared.lock().unindex(hash);
        if let Some(slot) = cleared {
            self.shared.clone().clear_later(slot);
        }
    }

    /// Resolves once every write begun before the call has finished.
    pub async fn wait(&self) {
        let target = self.shared.writes.lock().unwrap_or_else(|p| p.into_inner()).next;
        let mut done = self.shared.written.subscribe();
        let _ = done.wait_for(|&low| low >= target).await;
    }

    /// Forgets every entry: a new epoch makes every header on disk foreign.
    pub async fn destroy(&self) -> std::io::Result<()> {
        self.wait().await;
        let sb = Superblock {
            geometry: self.shared.geometry,
            epoch: random_u64(),
        };
        self.shared.io.write(sb.encode(), 0).await?;
        self.shared.epoch.store(sb.epoch, Ordering::Relaxed);
        *self.shared.lock() = Index::new(&self.shared.geometry);
        Ok(())
    }

    async fn recover(&self) -> std::io::Result<()> {
        let shared = &self.shared;
        let g = shared.geometry;
        let epoch = shared.epoch.load(Ordering::Relaxed);
        let mut best: HashMap<u64, (u32, Header)> = HashMap::new();
        let mut first = 0;
        while first < g.slots() {
            let n = RECOVERY_BATCH.min(g.slots() - first);
            let buf = shared
                .io
                .read(DiskBuf::new((n as u64 * BLOCK) as usize), g.header_offset(first))
                .await?;
            for (i, block) in buf.chunks(BLOCK as usize).enumerate() {
                let slot = first + i as u32;
                let Some(header) = Header::decode(block, epoch) else {
                    continue;
                };
                let fits = match g.is_small(slot) {
                    true => header.inline.is_some(),
                    false => header.inline.is_none() && header.len <= g.chunk_slot_bytes,
                };
                if !fits {
                    continue;
                }
                match best.get(&header.hash) {
                    Some((_, seen)) if seen.generation >= header.generation => {}
                    _ => {
                        best.insert(header.hash, (slot, header));
                    }
                }
            }
            first += n;
        }
        let mut index = shared.lock();
        let mut top = 0;
        for (hash, (slot, header)) in best {
            top = top.max(header.generation);
            index.slots[slot as usize] = Slot {
                hash,
                generation: header.generation,
                len: header.len,
                state: State::Live,
                referenced: false,
                cancelled: false,
            };
            index.map.insert(hash, slot);
        }
        for class in [Class::Small, Class::Chunk] {
            let free: Vec<u32> = index
                .class_range(&g, class)
                .rev()
                .filter(|&s| index.slots[s as usize].state == State::Free)
                .collect();
            index.free[class as usize] = free;
        }
        shared.next_generation.store(top + 1, Ordering::Relaxed);
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn class_for(&self, key_len: usize, len: usize) -> Option<Class> {
        let g = &self.geometry;
        if g.fits_inline(key_len, len) {
            Some(Class::Small)
        } else if g.fits_chunk(key_len, len) {
            Some(Class::Chunk)
        } else {
            None
        }
    }

    async fn write(self: Arc<Self>, slot: u32, mut header: Header, value: Bytes, ticket: Ticket) {
        let result = self.write_slot(slot, &mut header, &value).await;
        let (keep, clear) = {
            let mut index = self.lock();
            let keep = index.keep.remove(&slot);
            let cancelled = index.slots[slot as usize].cancelled;
            let clear = cancelled || result.is_err();
            if clear {
                if index.map.get(&header.hash) == Some(&slot) {
                    index.map.remove(&header.hash);
                }
                index.slots[slot as usize].state = State::Clearing;
            } else {
                index.slots[slot as usize].state = State::Live;
            }
            (keep, clear)
        };
        if let Err(e) = result {
            self.io_error("write", &e);
        }
        // Only now may foyer stop serving the entry from memory: it is live on disk, or gone.
        drop(keep);
        if clear {
            self.clone().clear(slot).await;
        }
        drop(ticket);
    }

    async fn write_slot(&self, slot: u32, header: &mut Header, value: &[u8]) -> std::io::Result<()> {
        let g = &self.geometry;
        header.sums = segment_sums(value, g.segment_bytes);
        if g.is_small(slot) {
            header.inline = Some(value.to_vec());
            self.io.write(header.encode(), g.header_offset(slot)).await?;
            self.metrics.disk_io_bytes.with_label_values(&["write"]).inc_by(BLOCK);
            return Ok(());
        }
        // Clear the old header first: until the new one is written, the slot must not claim
        // the entry that was in it before (its data is being overwritten).
        self.io.write(zeroed(), g.header_offset(slot)).await?;
        let mut data = DiskBuf::new(value.len());
        data[..value.len()].copy_from_slice(value);
        data[value.len()..].fill(0);
        self.io.write(data, g.data_offset(slot)).await?;
        self.io.write(header.encode(), g.header_offset(slot)).await?;
        self.metrics
            .disk_io_bytes
            .with_label_values(&["write"])
            .inc_by(value.len() as u64);
        Ok(())
    }

    /// Clears `slot`'s header in the background, then frees it.
    fn clear_later(self: Arc<Self>, slot: u32) {
        let ticket = Ticket::new(&self);
        let runtime = self.runtime.clone();
        runtime.spawn(async move {
            self.clear(slot).await;
            drop(ticket);
        });
    }

    async fn clear(self: Arc<Self>, slot: u32) {
        if let Err(e) = self.io.write(zeroed(), self.geometry.header_offset(slot)).await {
            // The slot is freed anyway: a stale header left on disk is overwritten by the next
            // write of the slot, and until then its entry is unindexed.
            self.io_error("clear", &e);
        }
        let mut index = self.lock();
        let class = if self.geometry.is_small(slot) {
            Class::Small
        } else {
            Class::Chunk
        };
        index.slots[slot as usize] = FREE;
        index.free[class as usize].push(slot);
    }

    async fn load(self: &Arc<Self>, hash: u64) -> Option<Loaded> {
        let g = &self.geometry;
        let (slot, generation, len) = {
            let mut index = self.lock();
            let slot = *index.map.get(&hash)?;
            let s = &mut index.slots[slot as usize];
            if s.state != State::Live {
                return None;
            }
            s.referenced = true;
            (slot, s.generation, s.len)
        };
        let epoch = self.epoch.load(Ordering::Relaxed);
        let header = self.io.read(DiskBuf::new(BLOCK as usize), g.header_offset(slot));
        let read = if g.is_small(slot) {
            header.await.map(|h| (h, None))
        } else {
            let data = self.io.read(DiskBuf::new(len as usize), g.data_offset(slot));
            futures_util::future::try_join(header, data)
                .await
                .map(|(h, d)| (h, Some(d)))
        };
        let (header_block, data) = match read {
            Ok(read) => {
                let bytes = BLOCK + read.1.as_ref().map_or(0, |d| d.len() as u64);
                self.metrics.disk_io_bytes.with_label_values(&["read"]).inc_by(bytes);
                read
            }
            Err(e) => {
                self.io_error("read", &e);
                self.drop_bad(slot, generation);
                return None;
            }
        };
        let header = Header::decode(&header_block, epoch)
            .filter(|h| h.generation == generation && h.hash == hash && h.len == len);
        let value = match (header.as_ref(), data) {
            (Some(h), None) => h.inline.clone().map(Bytes::from),
            (Some(h), Some(data)) if segment_sums(&data[..len as usize], h.segment_bytes) == h.sums => {
                Some(data.into_bytes(0..len as usize))
            }
            _ => None,
        };
        match (header, value) {
            (Some(h), Some(value)) => Some(Loaded {
                key: h.key,
                kind: h.kind,
                value,
            }),
            _ => {
                self.drop_bad(slot, generation);
                None
            }
        }
    }

    /// A read of `slot` (at `generation`) failed or did not verify. If the slot was reused
    /// meanwhile that was a race, not damage; otherwise the entry is counted and dropped.
    fn drop_bad(self: &Arc<Self>, slot: u32, generation: u64) {
        let mut index = self.lock();
        let s = index.slots[slot as usize];
        if s.generation != generation || s.state != State::Live {
            return;
        }
        self.metrics.cache_read_errors.inc();
        tracing::warn!(slot, "a disk tier entry failed verification; dropped (a miss)");
        index.unindex(s.hash);
        drop(index);
        self.clone().clear_later(slot);
    }

    fn io_error(&self, op: &str, e: &std::io::Error) {
        self.metrics.disk_io_errors.with_label_values(&[op]).inc();
        tracing::warn!(op, error = %e, "disk tier I/O failed");
    }
}

/// A write in flight, for [`Store::wait`]; ended when dropped, even by a runtime shutting down.
struct Ticket {
    shared: Arc<Shared>,
    number: u64,
}

impl Ticket {
    fn new(shared: &Arc<Shared>) -> Self {
        let mut writes = shared.writes.lock().unwrap_or_else(|p| p.into_inner());
        let number = writes.next;
        writes.next += 1;
        writes.in_flight.insert(number);
        Self {
            shared: shared.clone(),
            number,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut writes = self.shared.writes.lock().unwrap_or_else(|p| p.into_inner());
        writes.in_flight.remove(&self.number);
        let low = writes.in_flight.first().copied().unwrap_or(writes.next);
        self.shared.written.send_replace(low);
    }
}

impl Index {
    fn new(g: &Geometry) -> Self {
        let mut index = Self {
            map: HashMap::new(),
            slots: vec![FREE; g.slots() as usize],
            free: [Vec::new(), Vec::new()],
            hands: [0, g.small_slots],
            keep: HashMap::new(),
        };
        for class in [Class::Small, Class::Chunk] {
            // Reversed, so that slots are taken from the front of the file first.
            index.free[class as usize] = index.class_range(g, class).rev().collect();
        }
        index
    }

    fn class_range(&self, g: &Geometry, class: Class) -> std::ops::Range<u32> {
        match class {
            Class::Small => 0..g.small_slots,
            Class::Chunk => g.small_slots..g.slots(),
        }
    }

    /// Unindexes `hash`. Returns a live slot to clear; a slot being written is cancelled (and
    /// its keep-alive dropped, so foyer stops serving the entry too).
    fn unindex(&mut self, hash: u64) -> Option<u32> {
        let slot = self.map.remove(&hash)?;
        let s = &mut self.slots[slot as usize];
        match s.state {
            State::Live => {
                s.state = State::Clearing;
                Some(slot)
            }
            State::Writing => {
                s.cancelled = true;
                self.keep.remove(&slot);
                None
            }
            State::Free | State::Clearing => None,
        }
    }

    /// A slot of `class` to write: a free one, else one evicted by CLOCK. `None` when every
    /// slot of the class is busy (written or cleared right now).
    fn take(&mut self, g: &Geometry, class: Class, metrics: &Metrics) -> Option<u32> {
        if let Some(slot) = self.free[class as usize].pop() {
            return Some(slot);
        }
        let range = self.class_range(g, class);
        for _ in 0..2 * range.len() {
            let slot = self.hands[class as usize];
            self.hands[class as usize] = if slot + 1 >= range.end { range.start } else { slot + 1 };
            let s = &mut self.slots[slot as usize];
            if s.state != State::Live {
                continue;
            }
            if s.referenced {
                s.referenced = false;
                continue;
            }
            let hash = s.hash;
            if self.map.get(&hash) == Some(&slot) {
                self.map.remove(&hash);
            }
            self.slots[slot as usize] = FREE;
            metrics.disk_evictions.inc();
            return Some(slot);
        }
        None
    }
}

fn zeroed() -> DiskBuf {
    let mut buf = DiskBuf::new(BLOCK as usize);
    buf.fill(0);
    buf
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `len` bytes into the live buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 8 {
        // Only an epoch: distinct from the last one is what matters.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(bytes)
}

/// Opens (creating if needed) the store's file and returns it with the capacity to use: the
/// configured one, or for a file on a filesystem with less room, what fits (with a warning).
fn open_file(opts: &StoreOptions) -> std::io::Result<(File, u64)> {
    let is_dir = !opts.path.exists() || opts.path.is_dir();
    let path = if is_dir {
        std::fs::create_dir_all(&opts.path)?;
        opts.path.join(STORE_FILE)
    } else {
        opts.path.clone()
    };
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(is_dir);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(&path)
    };
    let file = match open(opts.direct) {
        // tmpfs and some overlay filesystems refuse O_DIRECT.
        Err(e) if opts.direct && e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(path = %path.display(), "the disk tier's filesystem refuses O_DIRECT; using buffered I/O");
            open(false)?
        }
        other => other?,
    };
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        let size = device_size(&file)?;
        return Ok((file, opts.capacity_bytes.min(size)));
    }
    let room = meta.len().max(allocated(&meta)) + free_bytes(&path)?;
    let capacity = if opts.capacity_bytes > room {
        let fitted = room / 10 * 9;
        tracing::warn!(
            path = %path.display(),
            configured = opts.capacity_bytes,
            using = fitted,
            "cache.disk.capacity_bytes is more than the filesystem has room for; using 90% of the room"
        );
        fitted
    } else {
        opts.capacity_bytes
    };
    // Sparse: blocks are taken as slots are first written.
    file.set_len(capacity)?;
    Ok((file, capacity))
}

fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let dir = path.parent().unwrap_or(path);
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live out-struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn device_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

#[cfg(test)]
mod tests;

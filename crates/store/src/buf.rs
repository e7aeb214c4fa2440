//! Chunk buffers. A chunk's bytes are written once, front to back, by the fill that fetches them
//! (or by the decoder reading it from disk), while every request reading the chunk meanwhile
//! takes [`Bytes`] views of the part written so far. The finished buffer is the cached chunk as
//! it is: one allocation and one copy per chunk, with no pieces kept and no assembly afterwards.
//!
//! Where the memory comes from matters as much as the copies. Buffers of 1 MiB and more are
//! mapped straight from the kernel, never from the heap allocator: glibc keeps freed blocks of
//! that size in its per-thread arenas, and streaming through a full memory tier grew the process
//! by hundreds of MiB of freed chunks. A dropped buffer (evicted from the memory tier, read by
//! everyone) goes back to the kernel, or into a small pool that the next chunks take it from, whole
//! or page by page, so a steadily evicting cache fills new chunks without faulting fresh pages in.
//! Mappings of 2 MiB and more are backed by huge pages where the kernel allows.
//!
//! [`DiskBuf`] is the disk store's buffer: the same memory, aligned for O_DIRECT, owned by one
//! I/O at a time and then handed out as [`Bytes`] without a copy.

use std::alloc::Layout;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// Buffers from this size up are mapped from the kernel (and pooled), not allocated from the heap.
/// glibc maps these sizes itself, but unmaps each on free: the disk store's 128 KiB read groups
/// then cost a page fault per 4 KiB and a TLB shootdown per buffer.
const MAPPED_FROM: usize = 128 << 10;
/// Mappings from this size up ask for transparent huge pages (`MADV_HUGEPAGE`; most
/// distributions enable them only on request). Filling a fresh 8 MiB chunk then takes 4 page faults
/// instead of 2048, and the kernel clears 2 MiB pages in one go: in a profile of a cold read,
/// faulting and clearing 4 KiB pages was about 15% of the CPU. Two MiB is the x86-64 huge page.
const HUGE_FROM: usize = 2 << 20;
/// Bytes of dropped mapped buffers kept for reuse, at most: two 8 MiB chunks (enough for a cache
/// that evicts one chunk for each it fills), or the read groups of many disk reads.
const POOL_BYTES: usize = 16 << 20;

/// Mapped regions waiting to be reused.
static POOL: Mutex<Pool> = Mutex::new(Pool(Vec::new()));

/// Alignment of disk buffers, offsets and lengths: O_DIRECT needs the device's logical block,
/// and 4 KiB covers every device the store expects.
pub const ALIGN: usize = 4096;

/// A mapped region owned by the pool: whole pages of a mapping, at a page boundary.
struct Region(NonNull<u8>, usize);
// SAFETY: a region is plain memory that nothing else references while it is in the pool.
unsafe impl Send for Region {}

/// Dropped mapped buffers, [`POOL_BYTES`] at most.
struct Pool(Vec<Region>);

impl Pool {
    /// `len` bytes (whole pages) from the smallest region that holds them. A larger region gives
    /// its first pages and keeps the rest: a mapping can be unmapped page by page. A full tier
    /// mostly evicts 8 MiB chunks, and a 1 MiB object's fill then reuses their pages instead of
    /// faulting in new ones.
    fn take(&mut self, len: usize) -> Option<NonNull<u8>> {
        let (i, _) = (self.0.iter().enumerate())
            .filter(|(_, r)| r.1 >= len)
            .min_by_key(|(_, r)| r.1)?;
        let region = &mut self.0[i];
        if region.1 == len {
            return Some(self.0.swap_remove(i).0);
        }
        let ptr = region.0;
        // SAFETY: `len < region.1`, so the rest of the region starts inside it.
        region.0 = unsafe { ptr.add(len) };
        region.1 -= len;
        Some(ptr)
    }

    /// Keeps `region` for reuse, or gives it back when the pool is full.
    fn keep(&mut self, region: Region) -> Option<Region> {
        if self.0.iter().map(|r| r.1).sum::<usize>() + region.1 > POOL_BYTES {
            return Some(region);
        }
        self.0.push(region);
        None
    }
}

/// A fixed-size buffer written once, front to back, by its [`ChunkWriter`].
///
/// The bytes below `written` are never written again; views only ever cover them. The bytes at
/// and above `written` are touched only by the single writer. That split is what makes sharing
/// the buffer while it is being written sound. All of the memory is initialised (zeroed when new,
/// old bytes when reused), so the writer can lend out its unwritten part as a plain slice.
pub struct ChunkBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    written: AtomicUsize,
}

// SAFETY: the buffer is plain memory owned by this value. Shared access reads only the written
// part, which is immutable (see the type's docs); the one writer is the unique `ChunkWriter`.
unsafe impl Send for ChunkBuf {}
// SAFETY: as above; `written` is published with release/acquire ordering.
unsafe impl Sync for ChunkBuf {}

impl ChunkBuf {
    /// A buffer of `capacity` bytes and its one writer.
    pub fn with_capacity(capacity: usize) -> (Arc<Self>, ChunkWriter) {
        let buf = Arc::new(Self {
            ptr: allocate(capacity),
            capacity,
            written: AtomicUsize::new(0),
        });
        (buf.clone(), ChunkWriter { buf })
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.written.load(Ordering::Acquire)
    }

    /// The buffer's size.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes `range` of the written part, sharing this buffer.
    ///
    /// # Panics
    /// If `range` reaches past what is written.
    pub fn bytes(self: &Arc<Self>, range: Range<usize>) -> Bytes {
        assert!(
            range.start <= range.end && range.end <= self.written(),
            "view {range:?} of a chunk buffer written up to {}",
            self.written()
        );
        if range.is_empty() {
            return Bytes::new();
        }
        Bytes::from_owner(View {
            buf: self.clone(),
            range,
        })
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        release(self.ptr, self.capacity);
    }
}

/// The one writer of a [`ChunkBuf`]: appends at the end of what is written.
pub struct ChunkWriter {
    buf: Arc<ChunkBuf>,
}

/// A write would have gone past the buffer's capacity; nothing was written.
#[derive(Debug)]
pub struct Overflow;

impl ChunkWriter {
    /// The part not written yet, to fill in place; [`Self::commit`] then publishes it.
    pub fn spare(&mut self) -> &mut [u8] {
        let at = self.written();
        // SAFETY: `[at, capacity)` is inside the allocation and initialised (see `ChunkBuf`). It
        // is at or past `written`, so no view covers it, and the returned slice borrows this
        // writer (unique for the buffer) mutably, so nothing else can write there meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.buf.ptr.as_ptr().add(at), self.buf.capacity - at) }
    }

    /// Publishes the next `n` bytes of the spare part to readers.
    ///
    /// # Panics
    /// If `n` is more than the spare part holds.
    pub fn commit(&mut self, n: usize) {
        let at = self.written();
        assert!(n <= self.buf.capacity - at, "commit past a chunk buffer's end");
        self.buf.written.store(at + n, Ordering::Release);
    }

    /// Appends `data` and publishes it to readers.
    pub fn write(&mut self, data: &[u8]) -> Result<(), Overflow> {
        let spare = self.spare();
        if data.len() > spare.len() {
            return Err(Overflow);
        }
        spare[..data.len()].copy_from_slice(data);
        self.commit(data.len());
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        // Only this writer stores `written`, so its own last store is current.
        self.buf.written.load(Ordering::Relaxed)
    }
}

/// The owner behind a [`Bytes`] view of a buffer.
struct View {
    buf: Arc<ChunkBuf>,
    range: Range<usize>,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `range` was checked against `written` when the view was made; that part of the
        // buffer is initialised and never written again, and the view keeps the buffer alive.
        unsafe { std::slice::from_raw_parts(self.buf.ptr.as_ptr().add(self.range.start), self.range.len()) }
    }
}

/// An owned buffer of a multiple of [`ALIGN`] bytes at an [`ALIGN`]ed address, for one disk I/O
/// at a time. Its memory is initialised (zeroed when new, old bytes when reused).
pub struct DiskBuf {
    ptr: NonNull<u8>,
    /// Bytes allocated.
    capacity: usize,
    /// Bytes in use (what I/O reads or writes): a multiple of [`ALIGN`], at most `capacity`.
    len: usize,
}

// SAFETY: the buffer is plain memory owned by this value alone.
unsafe impl Send for DiskBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for DiskBuf {}

impl DiskBuf {
    /// A buffer of at least `len` bytes: `len` rounded up to [`ALIGN`].
    pub fn new(len: usize) -> Self {
        let len = len.next_multiple_of(ALIGN).max(ALIGN);
        Self {
            ptr: allocate(len),
            capacity: len,
            len,
        }
    }

    /// Uses the first `len` bytes, rounded up to [`ALIGN`], of the allocation.
    ///
    /// # Panics
    /// If that is more than the allocation.
    pub fn set_len(&mut self, len: usize) {
        let len = len.next_multiple_of(ALIGN).max(ALIGN);
        assert!(
            len <= self.capacity,
            "a disk buffer of {} bytes cannot hold {len}",
            self.capacity
        );
        self.len = len;
    }

    /// Bytes `range` of the buffer, sharing it.
    pub fn into_bytes(self, range: Range<usize>) -> Bytes {
        Bytes::from_owner(self).slice(range)
    }
}

impl std::ops::Deref for DiskBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes owned by this value.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for DiskBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed uniquely through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for DiskBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for DiskBuf {
    fn drop(&mut self) {
        release(self.ptr, self.capacity);
    }
}

/// Heap buffers of a page or more are page-aligned, so that [`DiskBuf`]s can be used for O_DIRECT.
fn heap_layout(capacity: usize) -> Layout {
    let align = if capacity >= ALIGN { ALIGN } else { 1 };
    Layout::from_size_align(capacity, align).expect("a chunk buffer's size fits in isize")
}

/// Initialised memory for `capacity` bytes.
fn allocate(capacity: usize) -> NonNull<u8> {
    if capacity == 0 {
        return NonNull::dangling();
    }
    if capacity >= MAPPED_FROM {
        let pooled = POOL.lock().take(capacity.next_multiple_of(page_size()));
        if let Some(ptr) = pooled {
            return ptr;
        }
        return map(capacity);
    }
    let layout = heap_layout(capacity);
    // SAFETY: `layout` has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

/// The system's page size (4 KiB on x86-64, 16 or 64 KiB on some arm64 kernels): what mappings
/// are made of, and split and unmapped by. [`ALIGN`] is the disk's unit, not this.
fn page_size() -> usize {
    static PAGE: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        // SAFETY: sysconf reads a constant of the system; it has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n).ok().filter(|n| n.is_power_of_two()).unwrap_or(ALIGN)
    });
    *PAGE
}

/// A fresh anonymous mapping of `len` bytes, zeroed by the kernel.
fn map(len: usize) -> NonNull<u8> {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr != libc::MAP_FAILED {
        if len >= HUGE_FROM {
            // SAFETY: advice on the mapping just made; it changes how the kernel backs the
            // pages, not their contents. A kernel without transparent huge pages refuses it
            // harmlessly.
            unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
        }
        if let Some(ptr) = NonNull::new(ptr.cast()) {
            return ptr;
        }
    }
    std::alloc::handle_alloc_error(heap_layout(len));
}

/// Unmaps a region that nothing references any more.
fn unmap(Region(ptr, len): Region) {
    // SAFETY: a region is whole pages of one mapping from `map` (all of it, or a part the pool
    // split off), and it is owned: nothing else references those pages.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}

/// Gives back memory from [`allocate`].
fn release(ptr: NonNull<u8>, capacity: usize) {
    if capacity == 0 {
        return;
    }
    #[cfg(test)]
    RELEASED.with(|r| r.borrow_mut().push(ptr.as_ptr() as usize));
    if capacity >= MAPPED_FROM {
        let region = Region(ptr, capacity.next_multiple_of(page_size()));
        let unkept = POOL.lock().keep(region);
        if let Some(region) = unkept {
            unmap(region);
        }
        return;
    }
    // SAFETY: allocated in `allocate` with this same layout.
    unsafe { std::alloc::dealloc(ptr.as_ptr(), heap_layout(capacity)) };
}

#[cfg(test)]
thread_local! {
    /// The buffers this thread released (to the pool, the kernel or the heap), by address: for
    /// the tests that prove a buffer the kernel may still write is never released.
    pub(crate) static RELEASED: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_see_what_was_written_and_outlive_the_writer() {
        for capacity in [0, 10, MAPPED_FROM + 3] {
            let (buf, mut w) = ChunkBuf::with_capacity(capacity);
            let data: Vec<u8> = (0..capacity).map(|i| (i % 251) as u8).collect();
            let (head, tail) = data.split_at(capacity / 2);
            w.write(head).unwrap();
            let early = buf.bytes(0..head.len());
            w.spare()[..tail.len()].copy_from_slice(tail);
            w.commit(tail.len());
            assert!(w.write(b"x").is_err(), "a write past the capacity was accepted");
            drop(w);
            let whole = buf.bytes(0..capacity);
            drop(buf);
            assert_eq!(&early[..], head);
            assert_eq!(&whole[..], &data[..]);
        }
    }

    #[test]
    fn the_pool_reuses_the_smallest_fitting_region_and_splits_larger_ones() {
        // A pool of its own: the global one is shared with every test running meanwhile.
        let mut pool = Pool(Vec::new());
        let page = page_size();
        let (small, large) = (map(3 * page), map(8 * page));
        // SAFETY: the first byte of a fresh mapping.
        unsafe { large.as_ptr().write(7) };
        assert!(pool.keep(Region(large, 8 * page)).is_none());
        assert!(pool.keep(Region(small, 3 * page)).is_none());
        assert_eq!(pool.take(2 * page), Some(small), "not the smallest region that fits");
        assert_eq!(pool.take(4 * page), Some(large), "a larger region was not split");
        // SAFETY: the pages just taken, which the pool no longer holds.
        assert_eq!(unsafe { large.as_ptr().read() }, 7, "a reused region lost its pages");
        assert_eq!(pool.take(5 * page), None, "the split-off rest grew");
        // SAFETY: four pages into the eight-page mapping.
        assert_eq!(pool.take(4 * page), Some(unsafe { large.add(4 * page) }));
        assert_eq!(pool.take(page), Some(unsafe { small.add(2 * page) }));
        assert!(pool.0.is_empty());
        let big = map(POOL_BYTES + page);
        let refused = pool
            .keep(Region(big, POOL_BYTES + page))
            .expect("a pool past its bound");
        unmap(refused);
        // SAFETY: the offsets of the regions handed out above, each whole pages of its mapping.
        for (ptr, len) in [
            (small, 2 * page),
            (unsafe { small.add(2 * page) }, page),
            (large, 8 * page),
        ] {
            unmap(Region(ptr, len));
        }
    }

    #[test]
    fn disk_buffers_are_aligned_and_whole_blocks() {
        for len in [1, ALIGN, ALIGN + 1, 3 * ALIGN, MAPPED_FROM + 1] {
            let mut buf = DiskBuf::new(len);
            assert_eq!(buf.as_ptr() as usize % ALIGN, 0, "len {len}");
            assert_eq!(buf.len(), len.next_multiple_of(ALIGN));
            buf[len - 1] = 9;
            let bytes = buf.into_bytes(len - 1..len);
            assert_eq!(&bytes[..], [9]);
        }
    }

    #[test]
    #[should_panic(expected = "written up to 2")]
    fn a_view_past_the_written_part_is_refused() {
        let (buf, mut w) = ChunkBuf::with_capacity(8);
        w.write(b"ab").unwrap();
        let _ = buf.bytes(0..3);
    }
}

//! Chunk buffers. A chunk's bytes are written once, front to back, by the fill that fetches them,
//! while every request reading the chunk meanwhile takes [`Bytes`] views of the part written so
//! far. The finished buffer is the cached chunk as it is: one allocation and one copy per chunk
//! (from the upstream connection's buffer), with no pieces kept and no assembly afterwards.
//!
//! Buffers are not zeroed: no view ever covers a byte before it is written.

use std::alloc::Layout;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// A fixed-size buffer written once by its [`ChunkWriter`].
///
/// The bytes below `written` are never written again; views only ever cover them. The bytes at
/// and above `written` are touched only by the single writer. That split is what makes sharing
/// the buffer while it is being written sound.
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
        if self.capacity > 0 {
            // SAFETY: allocated in `allocate` with this same layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), byte_layout(self.capacity)) };
        }
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
    /// Appends `data` and publishes it to readers.
    pub fn write(&mut self, data: &[u8]) -> Result<(), Overflow> {
        let buf = &self.buf;
        // Only this writer stores `written`, so its own last store is current.
        let at = buf.written.load(Ordering::Relaxed);
        if data.len() > buf.capacity - at {
            return Err(Overflow);
        }
        // SAFETY: `at + data.len() <= capacity`, so the destination lies inside the allocation.
        // It is at or past `written`, so no view covers it, and this writer (unique, borrowed
        // mutably) is the only code that writes to the buffer. `data` cannot overlap it: no
        // reference to the unwritten part is ever handed out.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), buf.ptr.as_ptr().add(at), data.len());
        }
        buf.written.store(at + data.len(), Ordering::Release);
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
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

fn byte_layout(capacity: usize) -> Layout {
    Layout::array::<u8>(capacity).expect("a chunk buffer's size fits in isize")
}

/// Uninitialised memory for `capacity` bytes.
fn allocate(capacity: usize) -> NonNull<u8> {
    if capacity == 0 {
        return NonNull::dangling();
    }
    let layout = byte_layout(capacity);
    // SAFETY: `layout` has a non-zero size.
    let ptr = unsafe { std::alloc::alloc(layout) };
    NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_see_what_was_written_and_outlive_the_writer() {
        for capacity in [0, 10, (8 << 20) + 3] {
            let (buf, mut w) = ChunkBuf::with_capacity(capacity);
            let data: Vec<u8> = (0..capacity).map(|i| (i % 251) as u8).collect();
            let (head, tail) = data.split_at(capacity / 2);
            w.write(head).unwrap();
            let early = buf.bytes(0..head.len());
            w.write(tail).unwrap();
            assert!(w.write(b"x").is_err(), "a write past the capacity was accepted");
            drop(w);
            let whole = buf.bytes(0..capacity);
            drop(buf);
            assert_eq!(&early[..], head);
            assert_eq!(&whole[..], &data[..]);
            assert_eq!(&whole.slice(1.min(capacity)..)[..], &data[1.min(capacity)..]);
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

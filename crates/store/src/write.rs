//! Writes: an entry into its slot (clear the old header, the data, then the header), and the
//! clearing of slots whose entry was deleted or replaced.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::format::{check_width, segments, CutMark, Header, Loc, Sealed, BLOCK};
use super::seal::{self, Keys, WriteKey};
use super::{joined, zeroed, Shared, State};
use crate::buf::DiskBuf;

/// Bytes a chunk write stages at a time (rounded to whole segments).
const STAGE_BYTES: u64 = 1 << 20;
/// Staging buffers kept for reuse: mapping and unmapping one per write cost more CPU than the
/// copy itself (page faults, and TLB shootdowns across the runtime's threads).
const STAGE_POOL: usize = 16;

impl Shared {
    pub(super) async fn write(
        self: Arc<Self>,
        loc: Loc,
        cut: Option<CutMark>,
        mut header: Header,
        value: Bytes,
        ticket: Ticket,
    ) {
        let result = self.write_slot(loc, cut, &mut header, &value).await;
        if result.is_ok() {
            self.failures.store(0, Ordering::Relaxed);
        }
        let (keep, clear) = {
            let mut index = self.lock();
            let keep = index.keep.remove(&loc);
            let Some(e) = index
                .entry_mut(loc)
                .filter(|e| e.state == State::Writing && e.generation == header.generation)
            else {
                // The index was reset (file re-created, store destroyed) under this write.
                drop(index);
                drop(keep);
                return;
            };
            let clear = e.cancelled || result.is_err();
            e.state = if clear { State::Clearing } else { State::Live };
            if clear && index.map.get(&header.hash) == Some(&loc) {
                index.map.remove(&header.hash);
            }
            (keep, clear)
        };
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => self.io_error("write", &e),
            Ok(()) => {}
        }
        // Only now may foyer stop serving the entry from memory: it is live on disk, or gone.
        drop(keep);
        if clear {
            self.clone().clear(loc).await;
        }
        drop(ticket);
    }

    async fn write_slot(
        &self,
        loc: Loc,
        cut: Option<CutMark>,
        header: &mut Header,
        value: &[u8],
    ) -> std::io::Result<()> {
        let g = &self.geometry;
        let io = self.io();
        self.still_working()?;
        let mut protect = Protect::new(self.keys.as_deref(), header)?;
        let slab = match loc {
            Loc::Small(_) => {
                let mut inline = value.to_vec();
                protect.piece(0, &mut inline);
                protect.finish(header);
                header.inline = Some(inline);
                io.write(header.encode(), g.header_offset(loc)).await?;
                self.metrics.disk_io_bytes.with_label_values(&["write"]).inc_by(BLOCK);
                return Ok(());
            }
            Loc::Slab { slab, .. } => slab,
        };
        match (loc, cut) {
            // A slab just cut: its mark replaces whatever the table said of it (a chunk header,
            // an older cut), so from now on only headers with the new stamp are its slots'.
            (_, Some(mark)) => drop(io.write(mark.encode(g), g.table_offset(slab)).await?),
            // A whole slab: clear the old header first; until the new one is written, the slot
            // must not claim the entry that was in it before (its data is being overwritten).
            (Loc::Slab { class: 0, .. }, None) => drop(io.write(zeroed(), g.header_offset(loc)).await?),
            // A freed slot of a cut slab: its header was cleared when it was freed.
            _ => {}
        }
        // The value goes out through two staging buffers of a few segments each: one is written
        // while the next piece is copied (and encrypted) into the other. A write holds 2 MiB
        // beside its chunk, not a second copy of the chunk.
        let stage = (STAGE_BYTES.max(g.segment_bytes) / g.segment_bytes * g.segment_bytes) as usize;
        let mut spare = Vec::with_capacity(2);
        let mut writing: Option<tokio::task::JoinHandle<std::io::Result<DiskBuf>>> = None;
        for (n, piece) in value.chunks(stage).enumerate() {
            let mut buf = spare.pop().unwrap_or_else(|| self.stage_buffer(stage));
            // Whole blocks; the last piece's tail zeroed. Each segment is checked (or sealed)
            // right after it is copied, while it is still in the CPU's cache: copying the whole
            // stage first read it back from memory for the second pass.
            buf.set_len(piece.len());
            let segment = g.segment_bytes as usize;
            let first = n * stage / segment;
            let staged = buf[..piece.len()].chunks_mut(segment).zip(piece.chunks(segment));
            for (i, (to, from)) in staged.enumerate() {
                to.copy_from_slice(from);
                protect.piece(first + i, to);
            }
            buf[piece.len()..].fill(0);
            if let Some(previous) = writing.take() {
                spare.push(joined(previous.await)?);
            }
            self.still_working()?;
            let (io, offset) = (io.clone(), g.data_offset(loc) + (n * stage) as u64);
            writing = Some(self.runtime.spawn(async move { io.write(buf, offset).await }));
        }
        if let Some(last) = writing {
            spare.push(joined(last.await)?);
        }
        self.keep_stages(spare);
        protect.finish(header);
        io.write(header.encode(), g.header_offset(loc)).await?;
        self.metrics
            .disk_io_bytes
            .with_label_values(&["write"])
            .inc_by(value.len() as u64);
        Ok(())
    }

    /// Keeps staging buffers for the next writes, up to [`STAGE_POOL`].
    fn keep_stages(&self, bufs: Vec<DiskBuf>) {
        let mut stages = self.stages.lock();
        let room = STAGE_POOL.saturating_sub(stages.len());
        stages.extend(bufs.into_iter().take(room));
    }

    /// A staging buffer of `stage` bytes, reused if one is free.
    fn stage_buffer(&self, stage: usize) -> DiskBuf {
        let pooled = self.stages.lock().pop();
        pooled.unwrap_or_else(|| DiskBuf::new(stage))
    }

    /// Clears the header at `loc` in the background, then frees the slot.
    pub(super) fn clear_later(self: Arc<Self>, loc: Loc) {
        let ticket = Ticket::new(&self);
        let runtime = self.runtime.clone();
        runtime.spawn(async move {
            self.clear(loc).await;
            drop(ticket);
        });
    }

    async fn clear(self: Arc<Self>, loc: Loc) {
        // A degraded disk gets no I/O, and a header left on it would bring its entry back at the
        // next start: the slot stays unusable until the clear is written (after a probe, or at
        // the next health check if the write failed).
        if self.degraded() {
            self.unclear.lock().push(loc);
            return;
        }
        if let Err(e) = self.io().write(zeroed(), self.geometry.header_offset(loc)).await {
            self.io_error("clear", &e);
            self.unclear.lock().push(loc);
            return;
        }
        self.release_cleared(loc);
    }

    /// Fails a write the store stopped taking: no more of it goes to a degraded disk.
    fn still_working(&self) -> std::io::Result<()> {
        match self.degraded() {
            true => Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the disk tier is degraded",
            )),
            false => Ok(()),
        }
    }

    /// Frees slot `loc` once its header is cleared on disk.
    pub(super) fn release_cleared(&self, loc: Loc) {
        let mut index = self.lock();
        if index.entry(loc).map(|e| e.state) != Some(State::Clearing) {
            // The index was reset meanwhile; the slot is free in the new one already.
            return;
        }
        index.release(loc);
    }
}

/// The checks of one entry's value, piece by piece: a CRC-32 per segment, or with encryption
/// on, each segment encrypted in place under the write's own key, and its tag.
struct Protect<'k> {
    seal: Option<(WriteKey, [u8; seal::SALT], &'k Keys)>,
    segment: usize,
    segments: usize,
    key: Vec<u8>,
    checks: Vec<u8>,
}

impl<'k> Protect<'k> {
    fn new(keys: Option<&'k Keys>, header: &Header) -> std::io::Result<Self> {
        let seal = match keys {
            None => None,
            Some(keys) => {
                let (write, salt) = keys
                    .new_write()
                    .ok_or_else(|| std::io::Error::other("no randomness for a write key"))?;
                Some((write, salt, keys))
            }
        };
        let segments = segments(header.len, header.segment_bytes);
        Ok(Self {
            checks: Vec::with_capacity(segments * check_width(seal.is_some())),
            seal,
            segment: header.segment_bytes as usize,
            segments,
            key: header.key.clone(),
        })
    }

    /// Protects `piece`: segments `first..` of the value, in order.
    fn piece(&mut self, first: usize, piece: &mut [u8]) {
        for (j, segment) in piece.chunks_mut(self.segment).enumerate() {
            let i = first + j;
            match &self.seal {
                None => self.checks.extend_from_slice(&crc32fast::hash(segment).to_le_bytes()),
                Some((write, ..)) => {
                    let tag = write.seal(&self.key, i as u32, i + 1 == self.segments, segment);
                    self.checks.extend_from_slice(&tag);
                }
            }
        }
    }

    /// Puts the checks in `header`, and when sealing, seals its key.
    fn finish(self, header: &mut Header) {
        header.checks = self.checks;
        if let Some((write, salt, keys)) = self.seal {
            let key_tag = write.seal_key(header.hash, &mut header.key);
            header.sealed = Some(Sealed {
                key_id: keys.active(),
                salt,
                key_tag,
            });
        }
    }
}

/// A write in flight, for [`Store::wait`]; ended when dropped, even by a runtime shutting down.
pub(super) struct Ticket {
    shared: Arc<Shared>,
    number: u64,
}

impl Ticket {
    pub(super) fn new(shared: &Arc<Shared>) -> Self {
        let mut writes = shared.writes.lock();
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
        let mut writes = self.shared.writes.lock();
        writes.in_flight.remove(&self.number);
        let low = writes.in_flight.first().copied().unwrap_or(writes.next);
        self.shared.written.send_replace(low);
    }
}

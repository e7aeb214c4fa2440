//! Reads: a whole entry (for foyer, which loads whole values), or part of a chunk streamed a
//! group of segments at a time.
//!
//! Nothing is handed out before it is checked: the header (magic, epoch, generation, hash,
//! length, its CRC), the key (its GCM tag when sealed), and every segment's CRC or tag. A range
//! of a chunk reads only the segments that cover it, in groups: a first one of about 128 KiB,
//! read beside the header and checked before the reader is returned (so a damaged entry is still
//! a plain miss), then groups of about 1 MiB, each read while the one before is being sent. A
//! reader's first bytes therefore wait for 128 KiB, not for the whole range.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::format::{check_width, segments, Header, Loc, BLOCK};
use super::seal::WriteKey;
use super::{joined, Loaded, Shared, State};
use crate::buf::DiskBuf;

/// Bytes of value a [`RangeReader`] reads and checks first (rounded to whole segments): what its
/// first bytes wait for.
const FIRST_GROUP_BYTES: u64 = 128 << 10;
/// Bytes of value it reads and checks at a time after that: fewer, larger reads and sends.
const GROUP_BYTES: u64 = 1 << 20;
/// Read-ahead groups in flight across all readers.
pub(super) const AHEAD_IN_FLIGHT: usize = 4;

/// Part of a chunk, streamed in checked pieces. Dropping it midway is fine: a read in flight
/// finishes on its own, its buffer owned by the I/O engine until then.
pub struct RangeReader {
    shared: Arc<Shared>,
    loc: Loc,
    generation: u64,
    header: Header,
    key: Vec<u8>,
    write: Option<WriteKey>,
    /// Value bytes still to hand out.
    range: Range<u64>,
    /// The first group's bytes, checked, not handed out yet.
    first: Option<Bytes>,
    /// Value offset of the group being read ahead (segment-aligned), and that read.
    ahead: Option<(u64, JoinHandle<std::io::Result<DiskBuf>>)>,
    /// Value offset where the covering segments end.
    end: u64,
    group: u64,
}

/// A piece of a range failed its check or could not be read; the entry is dropped.
#[derive(Debug, thiserror::Error)]
#[error("a disk tier entry failed to read or verify midway through a range")]
pub struct RangeError;

impl RangeReader {
    /// The entry's key, in the clear.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The length of the entry's whole value.
    pub fn value_len(&self) -> u64 {
        self.header.len
    }

    /// The next checked piece of the range; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, RangeError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let Some((at, read)) = self.ahead.take() else {
            return Ok(None);
        };
        let buf = joined(read.await);
        let group_len = (self.end.min(at + self.group) - at) as usize;
        let mut buf = match buf {
            Ok(buf) => buf,
            Err(e) => {
                self.shared.read_failed(&e, self.loc, self.generation);
                return Err(RangeError);
            }
        };
        self.shared.count_read(buf.len() as u64);
        self.read_ahead(at + self.group);
        let first_segment = (at / self.header.segment_bytes) as usize;
        let opened = self.shared.open_segments(
            &self.header,
            &self.key,
            self.write.as_ref(),
            first_segment,
            &mut buf[..group_len],
        );
        if !opened {
            self.shared.drop_bad(self.loc, self.generation);
            return Err(RangeError);
        }
        let piece = self.range.start..self.range.end.min(at + group_len as u64);
        self.range.start = piece.end;
        Ok(Some(
            buf.into_bytes((piece.start - at) as usize..(piece.end - at) as usize),
        ))
    }

    /// Starts reading the group at value offset `at`, if the range reaches it.
    fn read_ahead(&mut self, at: u64) {
        if at >= self.end || at >= self.range.end {
            return;
        }
        let len = (self.end.min(at + self.group) - at) as usize;
        let (io, offset) = (self.shared.io(), self.shared.geometry.data_offset(self.loc) + at);
        let ahead = self.shared.ahead.clone();
        let read = self.shared.runtime.spawn(async move {
            let _permit = ahead.acquire_owned().await;
            io.read(DiskBuf::new(len), offset).await
        });
        self.ahead = Some((at, read));
    }
}

/// An entry the index has, for a read.
struct Found {
    loc: Loc,
    generation: u64,
    len: u64,
    /// The epoch its header carries.
    epoch: u64,
}

impl Shared {
    /// The live entry of `hash`, marked referenced.
    fn lookup(&self, hash: u64) -> Option<Found> {
        if self.degraded() {
            return None;
        }
        let mut index = self.lock();
        let loc = *index.map.get(&hash)?;
        let e = *index.entry(loc).filter(|e| e.state == State::Live)?;
        index.reference(loc);
        Some(Found {
            loc,
            generation: e.generation,
            len: e.len,
            epoch: self.epoch.load(Ordering::Relaxed) ^ index.stamp(loc),
        })
    }

    fn count_read(&self, bytes: u64) {
        self.metrics.disk_io_bytes.with_label_values(&["read"]).inc_by(bytes);
    }

    /// `block` as the header of the entry `found`, if it is whole and the one the index
    /// expects; with the key in the clear and the write key when sealed.
    fn check_header(&self, block: &[u8], hash: u64, found: &Found) -> Option<(Header, Vec<u8>, Option<WriteKey>)> {
        let header = Header::decode(block, found.epoch)
            .filter(|h| h.generation == found.generation && h.hash == hash && h.len == found.len)?;
        let (key, write) = self.open_key(&header)?;
        Some((header, key, write))
    }

    /// The header block of the entry `found` and, in a slab, `len` bytes of its value from
    /// `at`, read side by side. A failed read is counted and drops the entry.
    async fn read_slot(self: &Arc<Self>, found: &Found, at: u64, len: u64) -> Option<(DiskBuf, Option<DiskBuf>)> {
        let g = &self.geometry;
        let io = self.io();
        let header = io.read(DiskBuf::new(BLOCK as usize), g.header_offset(found.loc));
        let read = if let Loc::Small(_) = found.loc {
            header.await.map(|h| (h, None))
        } else {
            let data = io.read(DiskBuf::new(len as usize), g.data_offset(found.loc) + at);
            futures_util::future::try_join(header, data)
                .await
                .map(|(h, d)| (h, Some(d)))
        };
        match read {
            Ok((block, data)) => {
                self.count_read(BLOCK + data.as_ref().map_or(0, |d| d.len() as u64));
                Some((block, data))
            }
            Err(e) => {
                self.read_failed(&e, found.loc, found.generation);
                None
            }
        }
    }

    /// The whole entry of `hash`.
    pub(super) async fn load(self: &Arc<Self>, hash: u64) -> Option<Loaded> {
        let found = self.lookup(hash)?;
        let len = found.len;
        let (block, data) = self.read_slot(&found, 0, len).await?;
        let opened = self.check_header(&block, hash, &found).and_then(|(mut h, key, write)| {
            let value = match (h.inline.take(), data) {
                (Some(mut inline), None) => self
                    .open_segments(&h, &key, write.as_ref(), 0, &mut inline)
                    .then(|| Bytes::from(inline)),
                (None, Some(mut data)) => self
                    .open_segments(&h, &key, write.as_ref(), 0, &mut data[..len as usize])
                    .then(|| data.into_bytes(0..len as usize)),
                _ => None,
            }?;
            Some(Loaded {
                key,
                kind: h.kind,
                value,
            })
        });
        match opened.is_some() {
            true => self.failures.store(0, Ordering::Relaxed),
            false => self.drop_bad(found.loc, found.generation),
        }
        opened
    }

    /// Bytes `range` of the value of `hash`, as a reader whose first piece is read and checked.
    pub(super) async fn read_range(self: &Arc<Self>, hash: u64, range: Range<u64>) -> Option<RangeReader> {
        let g = &self.geometry;
        let found = self.lookup(hash)?;
        let len = found.len;
        if range.start > range.end || range.end > len {
            return None;
        }
        let seg = g.segment_bytes;
        let first_group = FIRST_GROUP_BYTES.max(seg) / seg * seg;
        let group = GROUP_BYTES.max(seg) / seg * seg;
        let start = range.start / seg * seg;
        let end = (range.end.div_ceil(seg) * seg).min(len);
        let first_len = (end.min(start + first_group) - start) as usize;
        let (block, data) = self.read_slot(&found, start, first_len as u64).await?;
        let Some((mut header, key, write)) = self.check_header(&block, hash, &found) else {
            self.drop_bad(found.loc, found.generation);
            return None;
        };
        let first = match (header.inline.take(), data) {
            (Some(mut inline), None) => self
                .open_segments(&header, &key, write.as_ref(), 0, &mut inline)
                .then(|| Bytes::from(inline).slice(range.start as usize..range.end as usize)),
            (None, Some(mut data)) => {
                let piece_end = range.end.min(start + first_len as u64);
                self.open_segments(
                    &header,
                    &key,
                    write.as_ref(),
                    (start / seg) as usize,
                    &mut data[..first_len],
                )
                .then(|| data.into_bytes((range.start - start) as usize..(piece_end - start) as usize))
            }
            _ => None,
        };
        let Some(first) = first else {
            self.drop_bad(found.loc, found.generation);
            return None;
        };
        self.failures.store(0, Ordering::Relaxed);
        let mut reader = RangeReader {
            shared: self.clone(),
            loc: found.loc,
            generation: found.generation,
            header,
            key,
            write,
            range: (range.start + first.len() as u64)..range.end,
            first: Some(first),
            ahead: None,
            end,
            group,
        };
        if !matches!(found.loc, Loc::Small(_)) {
            reader.read_ahead(start + first_group);
        }
        Some(reader)
    }

    /// The entry's key in the clear, and its write key when sealed; `None` if the key does not
    /// open or its master key is gone from the key file.
    fn open_key(&self, header: &Header) -> Option<(Vec<u8>, Option<WriteKey>)> {
        let Some(sealed) = &header.sealed else {
            return Some((header.key.clone(), None));
        };
        let write = self.keys.as_ref()?.write_key(sealed.key_id, &sealed.salt)?;
        let mut key = header.key.clone();
        write
            .open_key(header.hash, &mut key, &sealed.key_tag)
            .then_some((key, Some(write)))
    }

    /// Checks, and when sealed decrypts in place, `data`: segments `first..` of the entry's
    /// value, whose plain key is `key`.
    fn open_segments(
        &self,
        header: &Header,
        key: &[u8],
        write: Option<&WriteKey>,
        first: usize,
        data: &mut [u8],
    ) -> bool {
        let n = segments(header.len, header.segment_bytes);
        let w = check_width(write.is_some());
        data.chunks_mut(header.segment_bytes as usize)
            .enumerate()
            .all(|(j, piece)| {
                let i = first + j;
                let Some(check) = header.checks.get(i * w..(i + 1) * w) else {
                    return false;
                };
                match write {
                    None => crc32fast::hash(piece).to_le_bytes() == check,
                    Some(write) => write.open(key, i as u32, i + 1 == n, piece, check),
                }
            })
    }

    /// A read of the entry at `loc` (at `generation`) failed or did not verify. If the slot
    /// was reused meanwhile that was a race, not damage; otherwise the entry is counted and
    /// dropped.
    /// Counts a failed read of the entry at `loc`, and drops the entry unless the disk only
    /// hung (it degrades the store, and the entry is as good as it was once the disk answers).
    fn read_failed(self: &Arc<Self>, e: &std::io::Error, loc: Loc, generation: u64) {
        self.io_error("read", e);
        if e.kind() != std::io::ErrorKind::TimedOut {
            self.drop_bad(loc, generation);
        }
    }

    pub(super) fn drop_bad(self: &Arc<Self>, loc: Loc, generation: u64) {
        let mut index = self.lock();
        let Some(&e) = index.entry(loc) else { return };
        if e.generation != generation || e.state != State::Live {
            return;
        }
        self.metrics.cache_read_errors.inc();
        tracing::warn!(?loc, "a disk tier entry failed verification; dropped (a miss)");
        index.unindex(e.hash);
        drop(index);
        self.clone().clear_later(loc);
    }
}

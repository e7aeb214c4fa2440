//! A piece is either a view of a chunk's buffer (no copy) or a copy. A view keeps the whole
//! chunk in memory for as long as the client takes to accept it, evicted or not, so views go
//! freely only to clients that have shown they keep up ([`ObjectBody::wrote`]). Until a client
//! has taken [`PROVEN_BYTES`], each write quick, and for good once one write was slow, the body
//! holds nothing between pieces but its place: each piece is looked up afresh, in memory, on
//! disk (a chunk wanted whole is first read whole into the memory tier where there is room,
//! [`crate::ChunkCache::promote`]; else each piece is a disk read whose buffers are its own) or
//! in a fill in flight. The piece is a view if the client's socket takes it whole at once (the
//! kernel then has the bytes when the write returns, and the view is let go; the caller says
//! how many bytes that is, see [`ObjectBody::next_within`]), else a copy of at most
//! [`COPIED_PIECE`]. So what a slow reader costs in memory is one piece, not a chunk, and a
//! client whose socket has room costs no copy.
//! Copies have a budget ([`COPIES_KIB`]); past it, slow clients get views of chunks in memory,
//! which many slow clients of one hot chunk then share. Chunks no bigger than [`SMALL_CHUNK`]
//! are always viewed: a view of one pins little.

use std::time::Duration;

use bytes::Bytes;

use super::{fetcher, outcome_of, tiered, BodyError, Current, ObjectBody, Piece, VIEW_PIECE};
use crate::plan::{chunk_span, ChunkSlice};
use crate::ChunkRead;
use shardcache_metrics::Source;

/// Bytes of a piece copied for a client not (yet) known to keep up.
const COPIED_PIECE: u64 = 128 << 10;
/// KiB of copied pieces alive at once, over all clients. Past it a slow client gets views of
/// chunks in memory after all: many slow clients of one hot chunk then share it (2,000 clients
/// that read nothing of one 1 MiB object held 328 MiB of copies, one each).
pub(in crate::read) const COPIES_KIB: usize = 16 << 10;
/// Bytes a client must take, each write quicker than [`SLOW_WRITE`], before it gets views: more
/// than a socket's send buffer holds (Linux grows one to 4 MiB), or a client that reads nothing
/// would look quick while the kernel takes what it does not.
const PROVEN_BYTES: u64 = 8 << 20;
/// A write to the client that takes longer than this marks it slow for the rest of the body.
const SLOW_WRITE: Duration = Duration::from_millis(50);
/// Chunks of at most this many bytes are viewed whatever the client's pace.
const SMALL_CHUNK: u64 = 2 * COPIED_PIECE;

/// How the client takes the bytes, as far as its writes tell.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Pace {
    /// Not known yet: this many bytes taken, each write quick.
    Unproven(u64),
    /// It keeps up: views.
    Quick,
    /// A write was slow: copies to the end, but for pieces its socket takes at once.
    Slow,
}

impl ObjectBody<'_> {
    /// Tells the body the client took a piece of `bytes` in `took`: what decides whether it
    /// gets views or copies from now on.
    pub fn wrote(&mut self, bytes: usize, took: Duration) {
        self.pace = match self.pace {
            Pace::Slow => Pace::Slow,
            _ if took > SLOW_WRITE => {
                self.fall_behind();
                Pace::Slow
            }
            Pace::Unproven(n) if n + bytes as u64 >= PROVEN_BYTES => Pace::Quick,
            Pace::Unproven(n) => Pace::Unproven(n + bytes as u64),
            Pace::Quick => Pace::Quick,
        };
    }

    /// Lets go of the chunk being read, keeping only the place: copies from here on.
    fn fall_behind(&mut self) {
        let chunk_size = self.reader.parts.cache.chunk_size();
        let (slice, pos) = match self.current.take() {
            Some(Current::Fill { index, pos, within, .. }) => {
                let chunk = chunk_span(index, chunk_size, self.size);
                let at = pos.max(within.start);
                (ChunkSlice { index, chunk, within }, at)
            }
            Some(Current::Disk { slice, given, .. } | Current::Hit { slice, given, .. }) => {
                let at = slice.within.start + given;
                (slice, at)
            }
            other => {
                self.current = other;
                return;
            }
        };
        self.current = Some(Current::Copying {
            slice,
            pos,
            counted: true,
        });
    }

    /// The next piece of the [`Current::Copying`] chunk, looked up afresh: a view if it is no
    /// more than the `at_once` bytes the client's socket takes at once now, else a copy. `None`
    /// once the lookup found nothing to give (it is retried).
    pub(super) async fn copied(&mut self, at_once: u64) -> Result<Option<Piece>, BodyError> {
        let Some(Current::Copying { slice, pos, counted }) = &self.current else {
            return Ok(None);
        };
        let (slice, pos, counted) = (slice.clone(), *pos, *counted);
        let at_once = at_once.min(VIEW_PIECE as u64);
        let span = pos..(pos + at_once.max(COPIED_PIECE)).min(slice.within.end);
        let (index, len) = (slice.index, slice.chunk.end - slice.chunk.start);
        let read = match self.opened.take_if(|(i, _)| *i == index) {
            Some((_, fill)) => ChunkRead::Leader(fill.reader()),
            None => {
                let parts = &self.reader.parts;
                let fetch = fetcher(parts, self.source, &self.object, &self.etag, slice.chunk.clone());
                match counted {
                    true => parts.cache.lookup(self.key(index), len, span.clone(), fetch).await,
                    false => parts.cache.chunk(self.key(index), len, span.clone(), fetch).await,
                }
            }
        };
        if !counted {
            self.outcome = self.outcome.max(outcome_of(&read));
            self.read_ahead(index);
        }
        let taken = match read {
            ChunkRead::Hit(bytes, tier) => Ok((self.copy(bytes, at_once), tiered(tier).1)),
            // A chunk wanted whole is read into the memory tier first, where there is room (the
            // next look finds it there); else the disk read's own buffers, as big as the span:
            // nothing else is held.
            ChunkRead::Disk(mut read) => {
                let whole = slice.within.end - slice.within.start == len;
                if !counted && whole && self.reader.parts.cache.promote(self.key(index), len).await {
                    self.current = Some(Current::Copying {
                        slice,
                        pos,
                        counted: true,
                    });
                    return Ok(None);
                }
                let mut pieces = Vec::with_capacity(1);
                loop {
                    match read.next().await {
                        Ok(Some(piece)) => pieces.push(piece),
                        Ok(None) => break Ok((joined(pieces), Source::Disk)),
                        Err(e) => break Err(BodyError::Disk(e)),
                    }
                }
            }
            ChunkRead::Leader(reader) | ChunkRead::Follower(reader) => self
                .fill_view(reader, index, &span)
                .await
                .map(|b| (self.copy(b, at_once), Source::Upstream)),
        };
        let (bytes, from) = match taken {
            Ok(taken) => taken,
            // The next look reads the chunk afresh.
            Err(BodyError::Disk(e)) => {
                self.read_afresh(index, pos, e)?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if bytes.is_empty() {
            let (at, wanted) = (pos, span.end);
            return Err(BodyError::Short { index, at, wanted });
        }
        self.current = Some(Current::Copying {
            slice,
            pos: pos + bytes.len() as u64,
            counted: true,
        });
        Ok(Some(Piece { bytes, from }))
    }

    /// `view` itself if the client's socket takes it at once (no more than `at_once` bytes);
    /// else its first [`COPIED_PIECE`] bytes copied, holding nothing of the chunk, where there is
    /// room for a copy (else viewed).
    fn copy(&self, view: Bytes, at_once: u64) -> Bytes {
        if view.len() as u64 <= at_once {
            return view;
        }
        let view = view.slice(..view.len().min(COPIED_PIECE as usize));
        let units = view.len().div_ceil(1024) as u32;
        match self.reader.parts.copies.clone().try_acquire_many_owned(units) {
            Ok(room) => {
                self.reader.parts.cache.metrics().copied_bytes.inc_by(view.len() as u64);
                Bytes::from_owner(Copied {
                    bytes: view.to_vec(),
                    _room: room,
                })
            }
            Err(_) => view,
        }
    }
}

/// A copied piece, and its room among the copies.
struct Copied {
    bytes: Vec<u8>,
    _room: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Copied {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// `pieces` as one.
fn joined(mut pieces: Vec<Bytes>) -> Bytes {
    match pieces.len() {
        1 => pieces.remove(0),
        _ => Bytes::from(pieces.concat()),
    }
}

/// Whether a client at `pace` gets copies of a chunk of `len` bytes.
pub(super) fn copies(pace: Pace, len: u64) -> bool {
    pace != Pace::Quick && len > SMALL_CHUNK
}

//! An object's bytes as a stream of pieces, chunk by chunk, each from wherever the cache finds
//! it: a tier, a fill in flight, or a fill this read starts. Chunks ahead of a sequential
//! reader are fetched meanwhile. A piece is a view of a chunk's buffer (no copy), or, for a
//! client not known to keep up, a copy ([`copies`]).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::ahead::holding;
use super::fetch::fetcher;
use super::{BucketSource, ObjectReader, Version};
use crate::plan::{chunk_span, plan, ChunkSlice, Plan};
use crate::{CacheKey, ChunkRead, DiskRead, FillError, FillReader, RangeError, StartedFill, Tier};
use shardcache_metrics::{Outcome, Source};
use shardcache_types::{ETag, ObjectRef};
use shardcache_upstream::OriginError;

mod copies;

pub(super) use copies::COPIES_KIB;
use copies::{copies, Pace};

/// The most bytes of one view.
const VIEW_PIECE: usize = 1 << 20;

/// Bytes of the object, and where they came from.
pub struct Piece {
    /// The bytes, in order.
    pub bytes: Bytes,
    /// Where they came from.
    pub from: Source,
}

/// Why a body stopped before its end. Whatever pieces came before it are correct.
#[derive(Debug)]
pub enum BodyError {
    /// A chunk's fill failed (the upstream's or the owner's error).
    Fill(FillError),
    /// A chunk only the disk holds failed to read past its first checked piece, and again after
    /// it was dropped and read afresh.
    Disk(RangeError),
    /// A chunk's fill ended before the bytes asked for.
    Short {
        /// The chunk.
        index: u64,
        /// Where it ended, from the chunk's start.
        at: u64,
        /// Where the read needed it to go.
        wanted: u64,
    },
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fill(e) => write!(f, "upstream fill failed: {e}"),
            Self::Disk(e) => write!(f, "disk read failed: {e}"),
            Self::Short { index, at, wanted } => write!(f, "chunk {index} ended at byte {at} of {wanted}"),
        }
    }
}

/// Who reads a body, which decides what it does besides reading.
#[derive(Clone, Copy)]
pub(super) enum Reading {
    /// A client's read, whose read-ahead goes past its end if it continues a sequential `pass`
    /// (with that pass's window).
    Client { pass: Option<u32> },
    /// A cluster member's read of one chunk from its owner: no read-ahead.
    Peer,
}

/// The chunk being read.
enum Current {
    /// A fill's reader (which starts at the chunk's first byte), at `pos`, wanting `within`.
    Fill {
        reader: FillReader,
        index: u64,
        pos: u64,
        within: Range<u64>,
    },
    /// A disk read of the bytes `slice` wants, `given` of them handed out so far.
    Disk {
        read: DiskRead,
        slice: ChunkSlice,
        given: u64,
    },
    /// The bytes `slice` wants, from a tier, `given` of them handed out so far.
    Hit {
        bytes: Bytes,
        from: Source,
        slice: ChunkSlice,
        given: u64,
    },
    /// Copies: the next byte of `slice` wanted is `pos` (from the chunk's start); nothing held.
    /// `counted`: the chunk's first look was made (counted for admission and the outcome).
    Copying { slice: ChunkSlice, pos: u64, counted: bool },
}

/// A span of one version of an object, read piece by piece ([`Self::next`]).
pub struct ObjectBody<'a> {
    reader: &'a ObjectReader,
    source: &'a BucketSource,
    object: ObjectRef,
    etag: ETag,
    /// The ETag as chunk keys hold it.
    etag_key: Arc<str>,
    size: u64,
    slices: Plan,
    current: Option<Current>,
    /// The chunk whose fill the metadata lookup started, and that fill.
    opened: Option<(u64, StartedFill)>,
    /// Chunks read ahead end before this one.
    ahead_limit: u64,
    /// The chunks the request asked for end before this one.
    asked_end: u64,
    /// Chunks read ahead of the one being read, past the request's end.
    window: u32,
    /// Read-ahead due once the current fill's first bytes are here.
    ahead_after: Option<u64>,
    /// A client's read: an upstream that says the object changed or went away makes the
    /// reader forget its metadata. (A peer's read does not: the asker may hold an old ETag.)
    for_client: bool,
    /// The last chunk whose disk read failed midway and was read afresh.
    disk_failed: Option<u64>,
    pace: Pace,
    outcome: Outcome,
}

impl<'a> ObjectBody<'a> {
    /// Bytes `whole` of `version`, read by `reading`; `first`: the fill the metadata lookup
    /// started, if any.
    pub(super) fn new(
        reader: &'a ObjectReader,
        source: &'a BucketSource,
        version: Version,
        first: Option<(u64, StartedFill)>,
        whole: Range<u64>,
        reading: Reading,
    ) -> Self {
        let (pass, for_client) = match reading {
            Reading::Client { pass } => (pass, true),
            Reading::Peer => (None, false),
        };
        // A peer's read is sent to a member that keeps up by design (its own floor cuts one
        // that does not); a client proves it.
        let pace = match for_client {
            true => Pace::Unproven(0),
            false => Pace::Quick,
        };
        let Version { object, etag, size } = version;
        let chunk_size = reader.parts.cache.chunk_size();
        let last = plan(whole.clone(), chunk_size, size).last().map_or(0, |s| s.index);
        let ahead_limit = match pass {
            Some(_) => size.div_ceil(chunk_size),
            None => last + 1,
        };
        Self {
            reader,
            source,
            object,
            etag_key: Arc::from(etag.as_str()),
            etag,
            size,
            slices: plan(whole, chunk_size, size),
            current: None,
            opened: first,
            ahead_limit,
            asked_end: last + 1,
            window: pass.unwrap_or(reader.ahead.chunks),
            ahead_after: None,
            for_client,
            disk_failed: None,
            pace,
            outcome: Outcome::MemoryHit,
        }
    }

    /// How the chunks read so far were found, the worst of them (a miss over a disk hit over a
    /// memory hit).
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The next piece; `None` at the end. For a reader whose socket's room is not known: a client
    /// not known to keep up gets copies.
    pub async fn next(&mut self) -> Result<Option<Piece>, BodyError> {
        self.next_within(|| 0).await
    }

    /// The next piece; `None` at the end. `at_once`: how many bytes the client's socket takes
    /// now without the write waiting for the client, asked only for a client not known to keep
    /// up (pieces within it are views, see [`copies`]).
    pub async fn next_within(&mut self, at_once: impl Fn() -> u64) -> Result<Option<Piece>, BodyError> {
        loop {
            match &mut self.current {
                Some(Current::Copying { slice, pos, .. }) => {
                    if *pos >= slice.within.end {
                        self.current = None;
                        continue;
                    }
                    let len = slice.chunk.end - slice.chunk.start;
                    if !copies(self.pace, len) {
                        // The client proved quick: views from the byte reached.
                        let rest = ChunkSlice {
                            within: *pos..slice.within.end,
                            ..slice.clone()
                        };
                        self.current = None;
                        if let Some(piece) = self.start(rest).await {
                            return Ok(Some(piece));
                        }
                        continue;
                    }
                    if let Some(piece) = self.copied(at_once()).await? {
                        return Ok(Some(piece));
                    }
                }
                Some(Current::Hit {
                    bytes,
                    from,
                    slice,
                    given,
                }) => {
                    let rest = (slice.within.end - slice.within.start - *given) as usize;
                    if rest == 0 {
                        self.current = None;
                        continue;
                    }
                    let at = *given as usize;
                    let n = rest.min(VIEW_PIECE);
                    *given += n as u64;
                    return Ok(Some(Piece {
                        bytes: bytes.slice(at..at + n),
                        from: *from,
                    }));
                }
                Some(Current::Disk { read, slice, given }) => match read.next().await {
                    Ok(Some(bytes)) => {
                        *given += bytes.len() as u64;
                        return Ok(Some(Piece {
                            bytes,
                            from: Source::Disk,
                        }));
                    }
                    Ok(None) => self.current = None,
                    Err(e) => {
                        let rest = ChunkSlice {
                            within: slice.within.start + *given..slice.within.end,
                            ..slice.clone()
                        };
                        self.read_afresh(rest.index, rest.within.start, e)?;
                        self.current = None;
                        if let Some(piece) = self.start(rest).await {
                            return Ok(Some(piece));
                        }
                    }
                },
                Some(Current::Fill {
                    reader,
                    index,
                    pos,
                    within,
                }) => {
                    if *pos >= within.end {
                        self.current = None;
                        continue;
                    }
                    let piece = match reader.next().await {
                        Ok(Some(piece)) => piece,
                        Ok(None) => {
                            let (index, at, wanted) = (*index, *pos, within.end);
                            return Err(BodyError::Short { index, at, wanted });
                        }
                        Err(e) => return Err(self.fill_failed(e)),
                    };
                    let (from, to) = (*pos, *pos + piece.len() as u64);
                    *pos = to;
                    let (a, b) = (from.max(within.start), to.min(within.end));
                    if let Some(index) = self.ahead_after.take() {
                        self.read_ahead(index);
                    }
                    if a < b {
                        let bytes = piece.slice((a - from) as usize..(b - from) as usize);
                        return Ok(Some(Piece {
                            bytes,
                            from: Source::Upstream,
                        }));
                    }
                }
                None => {
                    let Some(slice) = self.slices.next() else {
                        return Ok(None);
                    };
                    if let Some(piece) = self.start(slice).await {
                        return Ok(Some(piece));
                    }
                }
            }
        }
    }

    /// Starts reading `slice`'s chunk: a hit's first piece comes at once; anything else becomes
    /// the current chunk. A client that gets copies starts from its place alone.
    async fn start(&mut self, slice: ChunkSlice) -> Option<Piece> {
        if copies(self.pace, slice.chunk.end - slice.chunk.start) {
            let pos = slice.within.start;
            self.current = Some(Current::Copying {
                slice,
                pos,
                counted: false,
            });
            return None;
        }
        let ChunkSlice { index, chunk, within } = slice.clone();
        let read = match self.opened.take_if(|(i, _)| *i == index) {
            Some((_, fill)) => ChunkRead::Leader(fill.reader()),
            None => {
                let fetch = fetcher(&self.reader.parts, self.source, &self.object, &self.etag, chunk.clone());
                let len = chunk.end - chunk.start;
                self.reader
                    .parts
                    .cache
                    .chunk(self.key(index), len, within.clone(), fetch)
                    .await
            }
        };
        self.outcome = self.outcome.max(outcome_of(&read));
        let reader = match read {
            ChunkRead::Hit(bytes, tier) => {
                self.read_ahead(index);
                let from = tiered(tier).1;
                let n = bytes.len().min(VIEW_PIECE);
                let piece = bytes.slice(..n);
                self.current = Some(Current::Hit {
                    bytes,
                    from,
                    slice,
                    given: n as u64,
                });
                return Some(Piece { bytes: piece, from });
            }
            ChunkRead::Disk(read) => {
                self.read_ahead(index);
                self.current = Some(Current::Disk { read, slice, given: 0 });
                return None;
            }
            ChunkRead::Leader(r) => r,
            ChunkRead::Follower(r) => {
                // Fetched ahead but not here yet: the reader waits on the upstream.
                self.widen();
                r
            }
        };
        // Read-ahead starts once this chunk's first bytes are here, so that its fetches never
        // compete with this chunk's for the connection setup and CPU before the first byte.
        self.ahead_after = Some(index);
        self.current = Some(Current::Fill {
            reader,
            index,
            pos: 0,
            within,
        });
        None
    }

    /// Whether chunk `index`, whose disk read failed at byte `at` with `e`, is read afresh: the
    /// store dropped the damaged entry, so the chunk comes from a fresh fill (its owner or the
    /// upstream, pinned to the ETag) from the byte reached, and is cached anew. Once per chunk:
    /// a second failure is the disk's, not the entry's, and ends the body.
    fn read_afresh(&mut self, index: u64, at: u64, e: RangeError) -> Result<(), BodyError> {
        if self.disk_failed == Some(index) {
            return Err(BodyError::Disk(e));
        }
        tracing::warn!(chunk = index, at, error = %e, "a disk read failed midway; reading the rest afresh");
        self.reader.parts.cache.metrics().disk_reads_resumed.inc();
        self.disk_failed = Some(index);
        Ok(())
    }

    /// The bytes of `span` of chunk `index` a fill has so far (at least one, waiting for
    /// them), from `reader`, which starts at the chunk's first byte: a view.
    async fn fill_view(&self, mut reader: FillReader, index: u64, span: &Range<u64>) -> Result<Bytes, BodyError> {
        let mut at = 0;
        loop {
            let piece = match reader.next().await {
                Ok(Some(piece)) => piece,
                Ok(None) => {
                    return Err(BodyError::Short {
                        index,
                        at,
                        wanted: span.end,
                    })
                }
                Err(e) => return Err(self.fill_failed(e)),
            };
            let (from, to) = (at, at + piece.len() as u64);
            at = to;
            let (a, b) = (from.max(span.start), to.min(span.end));
            if a < b {
                return Ok(piece.slice((a - from) as usize..(b - from) as usize));
            }
        }
    }

    /// A fill's error, as the body's: an upstream that says the object changed or went away
    /// makes a client's reader forget its metadata at once, so the next read opens the new
    /// version instead of failing too.
    fn fill_failed(&self, e: FillError) -> BodyError {
        let gone = matches!(*e, OriginError::Changed | OriginError::NoSuchKey);
        if gone && self.for_client {
            self.reader.invalidate(self.object.clone());
        }
        BodyError::Fill(e)
    }

    fn key(&self, index: u64) -> CacheKey {
        CacheKey::Chunk(self.object.clone(), self.etag_key.clone(), index)
    }

    /// Fetches the chunks after `index` the reader will want next, as many as the upstream's
    /// read-ahead slots allow: those the request asked for up to the most chunks ahead at once
    /// (the client wants them: nothing is guessed), those past its end as far as its window.
    fn read_ahead(&self, index: u64) {
        let (parts, ahead) = (&self.reader.parts, &self.reader.ahead);
        if ahead.chunks == 0 {
            return;
        }
        let chunk_size = parts.cache.chunk_size();
        let asked = (index + 1 + u64::from(ahead.max_chunks)).min(self.asked_end);
        let end = (index + 1 + u64::from(self.window)).min(self.ahead_limit).max(asked);
        for i in index + 1..end {
            let key = self.key(i);
            if parts.cache.has(&key) {
                continue;
            }
            let Some(slot) = self.reader.slots.take(&self.source.upstream) else {
                return;
            };
            let span = chunk_span(i, chunk_size, self.size);
            let fetch = fetcher(parts, self.source, &self.object, &self.etag, span.clone());
            parts.cache.prefetch(key, span.end - span.start, holding(fetch, slot));
        }
    }

    /// Doubles a client's read-ahead window (up to its most).
    fn widen(&mut self) {
        if self.for_client && self.window > 0 {
            let ahead = &self.reader.ahead;
            self.window = self.reader.streams.widen(&self.object, self.window, ahead.max_chunks);
        }
    }
}

/// How a chunk read found its chunk.
fn outcome_of(read: &ChunkRead) -> Outcome {
    match read {
        ChunkRead::Hit(_, tier) => tiered(*tier).0,
        ChunkRead::Disk(_) => Outcome::DiskHit,
        ChunkRead::Leader(_) => Outcome::Miss,
        ChunkRead::Follower(_) => Outcome::Coalesced,
    }
}

/// The outcome and source of a hit in `tier`.
fn tiered(tier: Tier) -> (Outcome, Source) {
    match tier {
        Tier::Memory => (Outcome::MemoryHit, Source::Memory),
        Tier::Disk => (Outcome::DiskHit, Source::Disk),
    }
}

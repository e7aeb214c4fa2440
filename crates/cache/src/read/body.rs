//! An object's bytes as a stream of pieces, chunk by chunk, each from wherever the cache finds
//! it: a tier, a fill in flight, or a fill this read starts. Chunks ahead of a sequential
//! reader are fetched meanwhile.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::fetch::fetcher;
use super::{BucketSource, ObjectReader, Version};
use crate::plan::{chunk_span, plan, ChunkSlice, Plan};
use crate::{CacheKey, ChunkRead, DiskRead, FillError, FillReader, RangeError, StartedFill, Tier};
use shardcache_metrics::{Outcome, Source};
use shardcache_types::{ETag, ObjectRef};
use shardcache_upstream::OriginError;

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
    /// A client's read, which reads ahead if `sequential`.
    Client { sequential: bool },
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
    /// Read-ahead due once the current fill's first bytes are here.
    ahead_after: Option<u64>,
    /// A client's read: an upstream that says the object changed or went away makes the
    /// reader forget its metadata. (A peer's read does not: the asker may hold an old ETag.)
    for_client: bool,
    /// The last chunk whose disk read failed midway and was read afresh.
    disk_failed: Option<u64>,
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
        let (sequential, for_client) = match reading {
            Reading::Client { sequential } => (sequential, true),
            Reading::Peer => (false, false),
        };
        let Version { object, etag, size } = version;
        let chunk_size = reader.parts.cache.chunk_size();
        let last = plan(whole.clone(), chunk_size, size).last().map_or(0, |s| s.index);
        let ahead_limit = match sequential {
            true => size.div_ceil(chunk_size),
            false => last + 1,
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
            ahead_after: None,
            for_client,
            disk_failed: None,
            outcome: Outcome::MemoryHit,
        }
    }

    /// How the chunks read so far were found, the worst of them (a miss over a disk hit over a
    /// memory hit).
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The next piece; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Piece>, BodyError> {
        loop {
            match &mut self.current {
                Some(Current::Disk { read, slice, given }) => match read.next().await {
                    Ok(Some(bytes)) => {
                        *given += bytes.len() as u64;
                        return Ok(Some(Piece {
                            bytes,
                            from: Source::Disk,
                        }));
                    }
                    Ok(None) => self.current = None,
                    // The store dropped the damaged entry: the chunk is read afresh (its owner
                    // or the upstream, pinned to the ETag), from the byte reached, and cached
                    // anew. Once per chunk: a second failure is the disk's, not the entry's.
                    Err(e) if self.disk_failed != Some(slice.index) => {
                        let rest = ChunkSlice {
                            within: slice.within.start + *given..slice.within.end,
                            ..slice.clone()
                        };
                        tracing::warn!(chunk = rest.index, at = rest.within.start, error = %e, "a disk read failed midway; reading the rest afresh");
                        self.reader.parts.cache.metrics().disk_reads_resumed.inc();
                        self.disk_failed = Some(rest.index);
                        self.current = None;
                        if let Some(piece) = self.start(rest).await {
                            return Ok(Some(piece));
                        }
                    }
                    Err(e) => return Err(BodyError::Disk(e)),
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
                        Err(e) => {
                            // The upstream says the object changed or went away: forget its
                            // metadata at once, so the next read opens the new version instead
                            // of failing too.
                            let gone = matches!(*e, OriginError::Changed | OriginError::NoSuchKey);
                            if gone && self.for_client {
                                self.reader.invalidate(self.object.clone());
                            }
                            return Err(BodyError::Fill(e));
                        }
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

    /// Starts reading `slice`'s chunk: a memory hit is its one piece; anything else becomes
    /// the current chunk.
    async fn start(&mut self, slice: ChunkSlice) -> Option<Piece> {
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
        let (reader, outcome) = match read {
            ChunkRead::Hit(bytes, tier) => {
                self.read_ahead(index);
                let (outcome, from) = match tier {
                    Tier::Memory => (Outcome::MemoryHit, Source::Memory),
                    Tier::Disk => (Outcome::DiskHit, Source::Disk),
                };
                self.outcome = self.outcome.max(outcome);
                return Some(Piece { bytes, from });
            }
            ChunkRead::Disk(read) => {
                self.read_ahead(index);
                self.outcome = self.outcome.max(Outcome::DiskHit);
                self.current = Some(Current::Disk { read, slice, given: 0 });
                return None;
            }
            ChunkRead::Leader(r) => (r, Outcome::Miss),
            ChunkRead::Follower(r) => (r, Outcome::Coalesced),
        };
        self.outcome = self.outcome.max(outcome);
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

    fn key(&self, index: u64) -> CacheKey {
        CacheKey::Chunk(self.object.clone(), self.etag_key.clone(), index)
    }

    /// Fetches the chunks after `index` a sequential reader will want next.
    fn read_ahead(&self, index: u64) {
        let parts = &self.reader.parts;
        let chunk_size = parts.cache.chunk_size();
        let end = (index + 1 + u64::from(self.reader.read_ahead)).min(self.ahead_limit);
        for i in index + 1..end {
            let span = chunk_span(i, chunk_size, self.size);
            let fetch = fetcher(parts, self.source, &self.object, &self.etag, span.clone());
            parts.cache.prefetch(self.key(i), span.end - span.start, fetch);
        }
    }
}

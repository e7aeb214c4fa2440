//! A chunk streamed from the disk tier, and put back in the memory tier when read whole.

use std::sync::Arc;

use bytes::Bytes;

use super::{CacheKey, CacheValue, Hybrid};
use shardcache_store::buf::{ChunkBuf, ChunkWriter};
use shardcache_store::{RangeError, RangeReader};

/// Bytes of a chunk streamed from the disk tier, a checked piece at a time, so the first bytes
/// wait for one piece, not for the whole chunk. A whole chunk read this way is also put back in
/// the memory tier once every piece has passed its check, as foyer's own load would.
pub struct DiskRead {
    reader: Box<RangeReader>,
    promote: Option<Promote>,
}

/// A whole chunk being copied, as it streams, into a buffer for the memory tier: a chunk
/// buffer, mapped and pooled like a fill's. 8 MiB heap allocations stayed in the process after
/// their chunks were evicted (peak RSS streaming 10 GiB: tier + 306 MiB, against + 64).
struct Promote {
    hybrid: Hybrid,
    key: CacheKey,
    buf: Arc<ChunkBuf>,
    writer: ChunkWriter,
}

impl DiskRead {
    /// Streams `reader`; with `memory`, the whole chunk it reads goes into that memory tier
    /// under that key once every piece has passed its check.
    pub(super) fn new(reader: Box<RangeReader>, memory: Option<(Hybrid, CacheKey)>) -> Self {
        let promote = memory.map(|(hybrid, key)| {
            let (buf, writer) = ChunkBuf::with_capacity(reader.value_len() as usize);
            Promote {
                hybrid,
                key,
                buf,
                writer,
            }
        });
        Self { reader, promote }
    }

    /// The next checked piece; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, RangeError> {
        let piece = self.reader.next().await?;
        match (&piece, self.promote.as_mut()) {
            (Some(piece), Some(p)) => {
                if p.writer.write(piece).is_err() {
                    // Longer than its header said: never stored as whole.
                    self.promote = None;
                }
            }
            (None, Some(p)) => {
                let whole = p.buf.bytes(0..p.writer.written());
                if whole.len() == p.buf.capacity() {
                    p.hybrid.memory().insert(p.key.clone(), CacheValue::Chunk(whole));
                }
                self.promote = None;
            }
            (_, None) => {}
        }
        Ok(piece)
    }
}

//! Chunk arithmetic: which chunks cover a byte span, and which bytes of each chunk it needs.

use std::ops::Range;

/// One chunk touched by a read, and the part of it the read needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSlice {
    /// Chunk index within the object.
    pub index: u64,
    /// Byte span of the whole chunk within the object.
    pub chunk: Range<u64>,
    /// The needed bytes, relative to the start of the chunk.
    pub within: Range<u64>,
}

/// Byte span of chunk `index` of an object of `size` bytes (the last chunk may be short).
pub fn chunk_span(index: u64, chunk_size: u64, size: u64) -> Range<u64> {
    let start = index.saturating_mul(chunk_size).min(size);
    start..start.saturating_add(chunk_size).min(size)
}

/// Number of chunks of an object of `size` bytes.
pub fn chunk_count(chunk_size: u64, size: u64) -> u64 {
    size.div_ceil(chunk_size)
}

/// The chunks covering `span` (half-open, within the object), in order. Empty for an empty span.
pub fn plan(span: Range<u64>, chunk_size: u64, size: u64) -> Plan {
    let span = span.start.min(size)..span.end.min(size);
    let indices = if span.is_empty() {
        0..0
    } else {
        span.start / chunk_size..(span.end - 1) / chunk_size + 1
    };
    Plan {
        indices,
        span,
        chunk_size,
        size,
    }
}

/// The chunks of a span, as [`plan`] lists them.
#[derive(Clone, Debug)]
pub struct Plan {
    indices: Range<u64>,
    span: Range<u64>,
    chunk_size: u64,
    size: u64,
}

impl Iterator for Plan {
    type Item = ChunkSlice;

    fn next(&mut self) -> Option<ChunkSlice> {
        let index = self.indices.next()?;
        let chunk = chunk_span(index, self.chunk_size, self.size);
        let from = self.span.start.max(chunk.start) - chunk.start;
        let to = self.span.end.min(chunk.end) - chunk.start;
        Some(ChunkSlice {
            index,
            chunk,
            within: from..to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = 100;

    fn indices(span: Range<u64>, size: u64) -> Vec<u64> {
        plan(span, C, size).map(|s| s.index).collect()
    }

    #[test]
    fn objects_around_the_chunk_size_split_as_expected() {
        assert_eq!(chunk_count(C, 0), 0);
        assert_eq!(chunk_count(C, C - 1), 1);
        assert_eq!(chunk_count(C, C), 1);
        assert_eq!(chunk_count(C, C + 1), 2);
        assert_eq!(chunk_span(1, C, C + 1), 100..101);
        assert_eq!(chunk_span(2, C, C + 1), 101..101);
    }

    #[test]
    fn a_whole_object_touches_every_chunk() {
        assert_eq!(indices(0..C - 1, C - 1), vec![0]);
        assert_eq!(indices(0..C, C), vec![0]);
        assert_eq!(indices(0..C + 1, C + 1), vec![0, 1]);
        assert_eq!(indices(0..0, 0), Vec::<u64>::new());
    }

    #[test]
    fn a_range_touches_only_its_chunks() {
        let s: Vec<_> = plan(150..250, C, 1000).collect();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            ChunkSlice {
                index: 1,
                chunk: 100..200,
                within: 50..100
            }
        );
        assert_eq!(
            s[1],
            ChunkSlice {
                index: 2,
                chunk: 200..300,
                within: 0..50
            }
        );
        assert_eq!(indices(199..200, 1000), vec![1]);
        assert_eq!(indices(200..201, 1000), vec![2]);
    }

    #[test]
    fn spans_past_the_end_are_clipped() {
        assert_eq!(indices(950..2000, 1000), vec![9]);
        assert_eq!(indices(1000..2000, 1000), Vec::<u64>::new());
        let last = plan(990..1000, C, 995).last().unwrap();
        assert_eq!(last.within, 90..95);
    }
}

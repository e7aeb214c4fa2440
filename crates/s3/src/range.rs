//! The `Range` request header, as S3 reads it (RFC 9110 section 14, single ranges only).
//!
//! S3 answers one byte range per request. A header it cannot use (multiple ranges, bad syntax,
//! a unit other than `bytes`) is ignored and the whole object is returned, so `parse` returns
//! `None` for those rather than an error. Only a well-formed range that misses the object is an
//! error: `416 InvalidRange`.

use std::ops::Range;

/// One `bytes=` range as the client wrote it, before the object size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b`: from `a` to `b` inclusive.
    FromTo(u64, u64),
    /// `bytes=a-`: from `a` to the end.
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// The range cannot be satisfied for an object of this size (answer 416).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

impl ByteRange {
    /// Parses a `Range` header value; `None` means "ignore the header".
    pub fn parse(header: &str) -> Option<Self> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        match (first.trim().is_empty(), last.trim().is_empty()) {
            (true, false) => Some(Self::Suffix(num(last)?)),
            (false, true) => Some(Self::From(num(first)?)),
            (false, false) => {
                let (a, b) = (num(first)?, num(last)?);
                (a <= b).then_some(Self::FromTo(a, b))
            }
            (true, true) => None,
        }
    }

    /// The first byte this range asks for, if it does not depend on the object's size.
    pub fn first_byte(self) -> Option<u64> {
        match self {
            Self::FromTo(a, _) | Self::From(a) => Some(a),
            Self::Suffix(_) => None,
        }
    }

    /// The half-open byte span this range selects in an object of `size` bytes.
    pub fn resolve(self, size: u64) -> Result<Range<u64>, Unsatisfiable> {
        match self {
            Self::FromTo(a, _) | Self::From(a) if a >= size => Err(Unsatisfiable),
            Self::FromTo(a, b) => Ok(a..b.min(size - 1) + 1),
            Self::From(a) => Ok(a..size),
            Self::Suffix(0) => Err(Unsatisfiable),
            Self::Suffix(_) if size == 0 => Err(Unsatisfiable),
            Self::Suffix(n) => Ok(size.saturating_sub(n)..size),
        }
    }
}

/// `Content-Range` value for a satisfied range.
pub fn content_range(span: &Range<u64>, size: u64) -> String {
    format!("bytes {}-{}/{}", span.start, span.end - 1, size)
}

/// `Content-Range` value that goes with a 416.
pub fn unsatisfied_content_range(size: u64) -> String {
    format!("bytes */{size}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_form_parses() {
        assert_eq!(ByteRange::parse("bytes=0-99"), Some(ByteRange::FromTo(0, 99)));
        assert_eq!(ByteRange::parse("bytes=100-"), Some(ByteRange::From(100)));
        assert_eq!(ByteRange::parse("bytes=-5"), Some(ByteRange::Suffix(5)));
        assert_eq!(ByteRange::parse(" bytes= 1 - 2 "), Some(ByteRange::FromTo(1, 2)));
    }

    #[test]
    fn unusable_headers_are_ignored() {
        for h in [
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=5-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "",
        ] {
            assert_eq!(ByteRange::parse(h), None, "{h}");
        }
    }

    #[test]
    fn ranges_resolve_at_the_edges_of_the_object() {
        let size = 10;
        assert_eq!(ByteRange::FromTo(0, 9).resolve(size), Ok(0..10));
        assert_eq!(ByteRange::FromTo(0, 10).resolve(size), Ok(0..10));
        assert_eq!(ByteRange::FromTo(9, 100).resolve(size), Ok(9..10));
        assert_eq!(ByteRange::FromTo(10, 11).resolve(size), Err(Unsatisfiable));
        assert_eq!(ByteRange::From(9).resolve(size), Ok(9..10));
        assert_eq!(ByteRange::From(10).resolve(size), Err(Unsatisfiable));
        assert_eq!(ByteRange::Suffix(3).resolve(size), Ok(7..10));
        assert_eq!(ByteRange::Suffix(11).resolve(size), Ok(0..10));
        assert_eq!(ByteRange::Suffix(0).resolve(size), Err(Unsatisfiable));
    }

    #[test]
    fn no_range_fits_an_empty_object() {
        for r in [ByteRange::FromTo(0, 0), ByteRange::From(0), ByteRange::Suffix(1)] {
            assert_eq!(r.resolve(0), Err(Unsatisfiable));
        }
    }

    #[test]
    fn content_range_headers_use_inclusive_ends() {
        assert_eq!(content_range(&(0..10), 10), "bytes 0-9/10");
        assert_eq!(unsatisfied_content_range(10), "bytes */10");
    }
}

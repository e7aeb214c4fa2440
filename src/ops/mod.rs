//! Operator commands that talk to a running shardcache: `shardcache warm`, `shardcache stats`,
//! `shardcache lineage`, and `shardcache probe` (which also reads the upstream directly).
//!
//! They are clients of shardcache's public faces only (the S3 listener and the admin listener)
//! and of S3 itself, so they work against any shardcache a user can reach: they use `s3`'s wire
//! types, `auth`'s SigV4 vocabulary and the upstream crate's credentials chain, and must not
//! reach any other module.

mod bucket;
mod client;
pub mod probe;
mod progress;
pub mod stats;
pub mod warm;

use bucket::Bucket;
use client::Connection;
pub use client::Endpoint;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left alone in a query value: RFC 3986's unreserved set.
const QUERY_SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` percent-encoded as a query value.
pub fn query_value(s: &str) -> String {
    utf8_percent_encode(s, QUERY_SAFE).to_string()
}

/// `n` bytes in binary units, e.g. `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, query_value};

    #[test]
    fn query_values_encode_slashes_and_spaces() {
        assert_eq!(query_value("a/b c+d~"), "a%2Fb%20c%2Bd~");
    }

    #[test]
    fn bytes_print_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10 << 30), "10.0 GiB");
    }
}

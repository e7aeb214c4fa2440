//! Vocabulary types shared by every layer. Each one is parsed once, at the boundary where it
//! enters shardcache; code behind that boundary never re-checks it. It uses no other crate of ours.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;

/// A bucket name as a client or an upstream spells it.
///
/// Accepts what S3 has ever accepted (including legacy upper-case and `_` names): 1 to 255
/// characters of `[A-Za-z0-9._-]`. Stricter DNS rules are the upstream's business.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketName(String);

impl BucketName {
    /// Parses a bucket name, returning `None` when it cannot name an S3 bucket.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        ok.then(|| Self(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object key: 1 to 1024 bytes of UTF-8, as S3 allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Longest key S3 accepts, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// Parses an (already percent-decoded) object key.
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.len() <= Self::MAX_LEN).then(|| Self(s.to_owned()))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One object at one upstream: (upstream name, upstream bucket, key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// Upstream name from the config.
    pub upstream: Arc<str>,
    /// Bucket name at the upstream.
    pub bucket: Arc<str>,
    /// Object key.
    pub key: Arc<str>,
}

/// An entity tag exactly as the upstream sent it, quotes included (`"9b2cf5..."`).
///
/// ETags are opaque: shardcache only compares them for equality, and pins every ranged upstream
/// read to one with `If-Match`, so chunks of two versions of an object are never mixed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// Wraps an upstream's ETag header value; adds quotes if the upstream left them out.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() || !s.is_ascii() {
            return None;
        }
        if s.starts_with('"') || s.starts_with("W/\"") {
            Some(Self(s.to_owned()))
        } else {
            Some(Self(format!("\"{s}\"")))
        }
    }

    /// The header value, quotes included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when this tag equals one entry of an `If-Match`/`If-None-Match` list (`*` matches all).
    /// Comparison is weak, as S3 does: `W/` prefixes and missing quotes are ignored.
    pub fn matches_list(&self, header: &str) -> bool {
        let bare = |t: &str| t.trim().trim_start_matches("W/").trim_matches('"').to_owned();
        let me = bare(&self.0);
        header.split(',').any(|t| t.trim() == "*" || bare(t) == me)
    }
}

/// Who is asking, carried through the whole request path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    /// The request carried no signature (or client authentication is off).
    #[default]
    Anonymous,
    /// A principal whose access key signed the request.
    Principal(std::sync::Arc<str>),
}

/// What shardcache knows about one version of an object: enough to answer HEAD, evaluate
/// conditional headers and plan chunk reads without asking the upstream again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Object size in bytes.
    pub size: u64,
    /// The version's entity tag.
    pub etag: ETag,
    /// `Last-Modified`, at whole-second precision as HTTP dates carry it.
    pub last_modified: SystemTime,
    /// `Content-Type`, if the upstream sent one.
    pub content_type: Option<String>,
    /// `x-amz-version-id`, on versioned buckets.
    pub version_id: Option<String>,
    /// Other representation headers returned verbatim on GET and HEAD: `x-amz-meta-*`,
    /// `Cache-Control`, `Content-Encoding`, `Content-Disposition`, `Content-Language`, `Expires`,
    /// `x-amz-storage-class`, ... Names are lower case; values are byte-exact as the upstream
    /// sent them (user metadata need not be ASCII).
    pub headers: Vec<(String, HeaderValue)>,
    /// The object's checksums (`x-amz-checksum-<algorithm>` and `x-amz-checksum-type`), sent
    /// only to clients that ask with `x-amz-checksum-mode: ENABLED`. `None` when the answer the
    /// metadata came from could not carry them (a ranged GET): a client that asks for them gets
    /// them after a HEAD.
    pub checksums: Option<Vec<(String, HeaderValue)>>,
}

impl ObjectMeta {
    /// Whether a response header of this name belongs in [`ObjectMeta::headers`].
    pub fn keeps_header(name: &str) -> bool {
        name.starts_with("x-amz-meta-")
            || matches!(
                name,
                "cache-control"
                    | "content-encoding"
                    | "content-disposition"
                    | "content-language"
                    | "expires"
                    | "x-amz-storage-class"
                    | "x-amz-server-side-encryption"
                    | "x-amz-website-redirect-location"
                    | "x-amz-tagging-count"
                    | "x-amz-missing-meta"
                    | "x-amz-server-side-encryption-aws-kms-key-id"
                    | "x-amz-server-side-encryption-bucket-key-enabled"
                    | "x-amz-server-side-encryption-customer-algorithm"
                    | "x-amz-server-side-encryption-customer-key-md5"
                    | "x-amz-object-lock-mode"
                    | "x-amz-object-lock-retain-until-date"
                    | "x-amz-object-lock-legal-hold"
                    | "x-amz-replication-status"
                    | "x-amz-restore"
                    | "x-amz-expiration"
                    | "x-amz-mp-parts-count"
            )
    }

    /// The checksums a whole-object answer carries: all of them, except on a GET of a multipart
    /// object (ETag ending `-N`) whose checksums came without `x-amz-checksum-type`: a composite
    /// checksum sent without its `-N` suffix (moto does so on HEAD) would be taken by the client
    /// for the checksum of the bytes, and fail a correct download. S3 names the type.
    pub fn checksums_for(&self, head: bool) -> &[(String, HeaderValue)] {
        let Some(checksums) = &self.checksums else { return &[] };
        let multipart = self
            .etag
            .as_str()
            .trim_matches('"')
            .rsplit_once('-')
            .is_some_and(|(_, parts)| !parts.is_empty() && parts.bytes().all(|b| b.is_ascii_digit()));
        let typed = checksums.iter().any(|(k, _)| k == "x-amz-checksum-type");
        match head || !multipart || typed {
            true => checksums,
            false => &[],
        }
    }

    /// Whether a response header of this name is one of the object's checksums.
    pub fn is_checksum_header(name: &str) -> bool {
        name.starts_with("x-amz-checksum-") && name != "x-amz-checksum-mode"
    }
}

/// `t` as RFC 3339 in UTC with milliseconds (`2024-02-29T23:59:59.007Z`): S3's `LastModified` in
/// listings, and the audit log's and lineage's times.
pub fn rfc3339(t: SystemTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from(t)
        .format(FORMAT)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// splitmix64: a tiny generator of well-mixed 64-bit values, the same on every machine and
/// version. One step also serves as a hash finaliser with full avalanche (nearby inputs give
/// unrelated outputs).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_format_as_rfc3339_utc() {
        let at = |s: u64, ms: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(1_709_251_199, 7)), "2024-02-29T23:59:59.007Z");
        assert_eq!(rfc3339(at(1_798_761_600, 999)), "2027-01-01T00:00:00.999Z");
    }

    use super::*;

    #[test]
    fn bucket_names_reject_slashes_and_empty() {
        assert!(BucketName::parse("datasets").is_some());
        assert!(BucketName::parse("My_Legacy.Bucket-1").is_some());
        assert!(BucketName::parse("").is_none());
        assert!(BucketName::parse("a/b").is_none());
        assert!(BucketName::parse(&"a".repeat(256)).is_none());
    }

    #[test]
    fn keys_longer_than_1024_bytes_are_rejected() {
        assert!(ObjectKey::parse(&"k".repeat(1024)).is_some());
        assert!(ObjectKey::parse(&"k".repeat(1025)).is_none());
        assert!(ObjectKey::parse("").is_none());
    }

    #[test]
    fn untyped_checksums_of_multipart_objects_stay_off_gets() {
        let meta = |etag: &str, checksums: &[(&str, &str)]| ObjectMeta {
            size: 1,
            etag: ETag::parse(etag).unwrap(),
            last_modified: SystemTime::UNIX_EPOCH,
            content_type: None,
            version_id: None,
            headers: vec![],
            checksums: Some(
                checksums
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), HeaderValue::from_str(v).unwrap()))
                    .collect(),
            ),
        };
        let crc = ("x-amz-checksum-crc32", "pkOjvA==");
        assert_eq!(meta("\"abc\"", &[crc]).checksums_for(false).len(), 1);
        assert_eq!(meta("\"abc-5\"", &[crc]).checksums_for(false).len(), 0);
        assert_eq!(meta("\"abc-5\"", &[crc]).checksums_for(true).len(), 1);
        let typed = [
            ("x-amz-checksum-crc32", "pkOjvA==-5"),
            ("x-amz-checksum-type", "COMPOSITE"),
        ];
        assert_eq!(meta("\"abc-5\"", &typed).checksums_for(false).len(), 2);
    }

    #[test]
    fn etag_lists_match_weakly_and_with_star() {
        let tag = ETag::parse("\"abc\"").unwrap();
        assert!(tag.matches_list("\"abc\""));
        assert!(tag.matches_list("abc"));
        assert!(tag.matches_list("\"x\", W/\"abc\""));
        assert!(tag.matches_list("*"));
        assert!(!tag.matches_list("\"abcd\""));
        assert_eq!(ETag::parse("abc").unwrap().as_str(), "\"abc\"");
    }

    #[test]
    fn splitmix64_gives_the_reference_sequence() {
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}

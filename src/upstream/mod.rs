//! Where objects come from on a miss. An [`Origin`] answers two questions: what is this object
//! (metadata), and what are these bytes of this version of it. It never knows it is cached.
//!
//! Two implementations: [`S3Origin`] (any S3-compatible endpoint, SigV4-signed, pooled
//! connections through Pingora's connector) and [`FsOrigin`] (a local directory whose top-level
//! folders are buckets). A peer shardcache node is the next one.

mod credentials;
mod fs;
mod s3;
mod sign;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use fs::{FsOrigin, ListParams};
pub use s3::{S3Origin, S3OriginOptions};
pub use sign::{SignError, Signer, UNSIGNED_PAYLOAD};

use crate::types::{ETag, ObjectMeta};

/// Body of a ranged read: pieces as they arrive.
pub type OriginBody = BoxStream<'static, Result<Bytes, OriginError>>;

/// What went wrong talking to an origin.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The key does not exist.
    #[error("no such key")]
    NoSuchKey,
    /// The bucket does not exist.
    #[error("no such bucket")]
    NoSuchBucket,
    /// The object no longer has the ETag the read was pinned to.
    #[error("the object changed since its metadata was read")]
    Changed,
    /// The upstream refused; `body` is its error document (S3 XML when it sent one).
    #[error("upstream answered {status}")]
    Rejected {
        /// HTTP status from the upstream.
        status: u16,
        /// Error body (may be empty).
        body: Bytes,
    },
    /// Connecting, sending or reading failed.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// The upstream's answer made no sense (missing ETag, bad Content-Range, ...).
    #[error("invalid upstream response: {0}")]
    Invalid(String),
    /// A local I/O error (local-directory origin).
    #[error("local I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A source of objects.
#[async_trait]
pub trait Origin: Send + Sync + 'static {
    /// Metadata of the current version of `bucket/key` (`bucket` is the upstream's name).
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, OriginError>;

    /// Bytes `span` of the version of `bucket/key` whose ETag is `etag`; fails with
    /// [`OriginError::Changed`] if the object is now another version.
    async fn read(&self, bucket: &str, key: &str, span: Range<u64>, etag: &ETag) -> Result<OriginBody, OriginError>;
}

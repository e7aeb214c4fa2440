//! Where objects come from on a miss. An [`Origin`] answers two questions: what is this object
//! (metadata), and what are these bytes of this version of it. It never knows it is cached.
//!
//! Two implementations: [`S3Origin`] (any S3-compatible endpoint, SigV4-signed, pooled
//! connections through Pingora's connector) and [`FsOrigin`] (a local directory whose top-level
//! folders are buckets). A peer shardcache node is the next one.
//!
//! It uses `types`, `metrics` and `s3` (how its failures are answered); it must not reach the
//! config (the config's `upstreams` section uses its [`settings`] types), the cache, the cluster
//! or the proxy: it never knows it is cached.

mod credentials;
mod error;
mod failover;
mod fs;
mod metrics;
mod resilient;
mod s3;
pub mod settings;
mod sign;

use std::ops::Range;

use async_trait::async_trait;

pub use credentials::default_chain;
pub use error::OriginError;
pub use failover::Failover;
pub use fs::{FsOrigin, ListParams};
pub use metrics::UpstreamMetrics;
pub use resilient::Breaker;
pub use resilient::{BreakerPolicy, Floor, HedgePolicy, Meter, Resilience, Resilient};
pub use s3::{content_range, exchange, meta_from, network_error, pooled_body};
pub use s3::{S3Origin, S3OriginOptions};
pub use settings::{CredentialsConfig, CredentialsSource, UpstreamAddressing};
pub use sign::{SignError, Signer, UNSIGNED_PAYLOAD};

use shardcache_types::{ETag, ObjectMeta};

/// Body of a ranged read, read piece by piece. Pieces are borrowed from the origin's own buffer,
/// so the caller copies each once, straight to where it belongs.
#[async_trait]
pub trait OriginBody: Send {
    /// The next bytes, `None` at the end. The slice is only valid until the next call.
    async fn next(&mut self) -> Result<Option<&[u8]>, OriginError>;

    /// Called after [`Self::next`] failed with `error`: continues the body from the byte where
    /// it stopped, if this body can (`Ok(true)`: call `next` again); `Ok(false)` when it cannot,
    /// and the error of the last try when it tried and failed.
    async fn resume(&mut self, _error: &OriginError) -> Result<bool, OriginError> {
        Ok(false)
    }
}

/// A ranged read's body.
pub type Body = Box<dyn OriginBody>;

/// A ranged read under way: resolves once the origin answered, to the body.
pub type BodyFetch = futures_util::future::BoxFuture<'static, Result<Body, OriginError>>;

/// An object opened by a read: its metadata, and the body of the span asked for.
pub struct Opened {
    /// Metadata of the version that answered.
    pub meta: ObjectMeta,
    /// The span, clipped to the object's size; `None` when the object ends before it starts.
    pub body: Option<Box<dyn OriginBody>>,
    /// The answer took a HEAD (the metadata asked for apart) besides the one request a caller
    /// counts for an open, which the caller then counts too.
    pub headed: bool,
}

/// A source of objects.
#[async_trait]
pub trait Origin: Send + Sync + 'static {
    /// Metadata of the current version of `bucket/key` (`bucket` is the upstream's name).
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, OriginError>;

    /// Metadata of the current version of `bucket/key` and the bytes of `span` (non-empty) of
    /// it. An origin that can answers both with one request, saving a cold read the round trip
    /// of `head` before `read`; this default makes both calls.
    async fn open(&self, bucket: &str, key: &str, span: Range<u64>) -> Result<Opened, OriginError> {
        let meta = self.head(bucket, key).await?;
        let span = span.start.min(meta.size)..span.end.min(meta.size);
        let body = match span.is_empty() {
            true => None,
            false => Some(self.read(bucket, key, span, &meta.etag).await?),
        };
        Ok(Opened {
            meta,
            headed: body.is_some(),
            body,
        })
    }

    /// Bytes `span` of the version of `bucket/key` whose ETag is `etag`; fails with
    /// [`OriginError::Changed`] if the object is now another version.
    async fn read(&self, bucket: &str, key: &str, span: Range<u64>, etag: &ETag) -> Result<Body, OriginError>;
}

//! The read-through facade: an object's metadata and bytes, from the cache or its source.
//!
//! [`ObjectReader`] is what the S3 listener, the peer listener and `POST /warm` read through.
//! Given a [`BucketSource`] (the upstream, its bucket, how long its metadata is trusted, the
//! cluster) and a key, it owns everything between the request and the bytes: the metadata cache
//! and its coalesced lookups (`meta`), the tier lookups and fills of each chunk, the choice of
//! source for a missing chunk (its cluster owner or the upstream, `fetch`), and read-ahead for
//! sequential readers (`ahead`). Callers turn requests into calls on it and its answers
//! into responses; it knows nothing of HTTP.
//!
//! It uses the chunk cache, the cluster's peers, the upstream's `Origin`, `s3`'s operation names
//! (metric labels), `metrics` and `types`; it must not reach the proxy or the config.

mod ahead;
mod body;
mod fetch;
mod meta;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

pub use ahead::ReadAhead;
use ahead::{Slots, Streams};
use body::Reading;
pub use body::{BodyError, ObjectBody, Piece};

use super::plan::{chunk_count, chunk_span};
use super::{CacheKey, ChunkCache, ChunkRead, Fetched, StartedFill};
use fetch::fetcher;
use meta::MetaLookups;
use shardcache_cluster::Peers;
use shardcache_types::{ETag, ObjectMeta, ObjectRef};
use shardcache_upstream::UpstreamMetrics;
use shardcache_upstream::{Origin, OriginBody, OriginError};

/// Where a bucket's objects come from, and how far their metadata is trusted.
#[derive(Clone)]
pub struct BucketSource {
    /// The upstream's name (a metric label, and part of every cache key).
    pub upstream: Arc<str>,
    /// The upstream, for cached reads.
    pub origin: Arc<dyn Origin>,
    /// The bucket's name at the upstream.
    pub bucket: Arc<str>,
    /// How long metadata is trusted; `None` for immutable buckets.
    pub meta_ttl: Option<Duration>,
    /// How long past its TTL metadata may still be served when the upstream fails to
    /// revalidate it (zero: never).
    pub stale_if_error: Duration,
    /// Cluster mode: chunk fetches ask the chunk's owner first. `None` on a node alone, and for
    /// the reads of peer requests (a node never forwards one).
    pub peers: Option<Arc<Peers>>,
}

impl BucketSource {
    /// The object `key` of this bucket.
    pub fn object(&self, key: &str) -> ObjectRef {
        ObjectRef {
            upstream: self.upstream.clone(),
            bucket: self.bucket.clone(),
            key: key.into(),
        }
    }
}

/// What the reader's parts share; cheap to clone into a task.
#[derive(Clone)]
struct Parts {
    cache: ChunkCache,
    metrics: Arc<UpstreamMetrics>,
    /// Whether chunks from their cluster owners may go to this node's disk tier.
    owned_chunks_on_disk: bool,
    /// Room in KiB for pieces copied for clients that read slowly ([`body`]'s copies).
    copies: Arc<tokio::sync::Semaphore>,
}

impl Parts {
    /// A chunk's body from its cluster owner.
    fn owner_sent(&self, body: Box<dyn OriginBody>) -> Fetched {
        Fetched {
            body,
            keep_on_disk: self.owned_chunks_on_disk,
        }
    }
}

/// An object opened for reading: its metadata, and possibly the fill of the chunk the read
/// starts in (fetched along with the metadata).
pub struct Opened {
    /// The object's metadata.
    pub meta: Arc<ObjectMeta>,
    /// The metadata is past its TTL and could not be revalidated: served under stale-if-error.
    pub stale: bool,
    object: ObjectRef,
    /// The chunk this request's own lookup started fetching, and its fill: the request reads
    /// that chunk from it (its miss, whether or not the fill has ended).
    first: Option<(u64, StartedFill)>,
}

/// One version of an object, as far as a read needs to know it.
struct Version {
    object: ObjectRef,
    etag: ETag,
    size: u64,
}

/// What warming one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warmed {
    /// The object's size in bytes.
    pub size: u64,
    /// ETag of the version now cached.
    pub etag: ETag,
    /// Chunks the object has.
    pub chunks: u64,
    /// Bytes that were already in a cache tier.
    pub cached_bytes: u64,
}

/// Chunks of one object warmed at once.
const WARM_IN_FLIGHT: usize = 4;

/// Reads objects through the cache. See the module documentation.
pub struct ObjectReader {
    parts: Parts,
    meta: MetaLookups,
    ahead: ReadAhead,
    /// Sequential passes and their read-ahead windows.
    streams: Streams,
    /// Each upstream's room for read-ahead fetches.
    slots: Slots,
}

impl ObjectReader {
    /// A reader over `cache`. `metrics`: the upstreams' (the reader's calls to them are counted
    /// there); `owned_chunks_on_disk`: whether a chunk from its cluster owner may go to this
    /// node's disk tier.
    pub fn new(cache: ChunkCache, metrics: Arc<UpstreamMetrics>, ahead: ReadAhead, owned_chunks_on_disk: bool) -> Self {
        Self {
            parts: Parts {
                cache,
                metrics,
                owned_chunks_on_disk,
                copies: Arc::new(tokio::sync::Semaphore::new(body::COPIES_KIB)),
            },
            meta: MetaLookups::default(),
            ahead,
            streams: Streams::default(),
            slots: Slots::new(ahead.per_upstream),
        }
    }

    /// The cache it reads through.
    pub fn cache(&self) -> &ChunkCache {
        &self.parts.cache
    }

    /// Opens `key` of `source`'s bucket: its metadata, cached if fresh, else from the source
    /// (one lookup at a time per object). `first_byte` is where the read will start: an object
    /// the cache has never seen is then opened with a GET of that chunk, whose body becomes the
    /// chunk's fill (`None`: a HEAD, or a read whose start depends on the size). With
    /// `checksums`, cached metadata that does not know the object's checksums is looked up again.
    pub async fn open(
        &self,
        source: &BucketSource,
        key: &str,
        first_byte: Option<u64>,
        checksums: bool,
    ) -> Result<Opened, Arc<OriginError>> {
        let object = source.object(key);
        let first_chunk = first_byte.map(|b| b / self.parts.cache.chunk_size());
        let looked = self
            .meta
            .get(&self.parts, source, &object, first_chunk, checksums)
            .await?;
        Ok(Opened {
            meta: looked.meta,
            stale: looked.stale,
            object,
            first: looked.opened,
        })
    }

    /// Bytes `whole` of the version `opened` found. Chunks ahead are fetched while it is read,
    /// past its end too if reads of the object look sequential.
    pub fn read<'a>(&'a self, source: &'a BucketSource, opened: Opened, whole: Range<u64>) -> ObjectBody<'a> {
        let chunk_size = self.parts.cache.chunk_size();
        let pass = self
            .streams
            .observe(&opened.object, &whole, chunk_size, self.ahead.chunks);
        let Opened {
            meta, object, first, ..
        } = opened;
        let version = Version {
            object,
            etag: meta.etag.clone(),
            size: meta.size,
        };
        ObjectBody::new(self, source, version, first, whole, Reading::Client { pass })
    }

    /// Bytes `span` (one chunk, ending no further than the object) of version `etag` of `key`,
    /// with no read-ahead: what a cluster member asks of a chunk's owner. An upstream's answer
    /// that the object changed does not make this node forget its metadata: the asker's ETag
    /// may be the old one. `opened`, from
    /// [`Self::open`] of that key, brings the fill it started.
    pub fn read_chunk<'a>(
        &'a self,
        source: &'a BucketSource,
        key: &str,
        etag: ETag,
        span: Range<u64>,
        opened: Option<Opened>,
    ) -> ObjectBody<'a> {
        let version = Version {
            object: source.object(key),
            etag,
            // The chunk's end is all the reader needs to know of the size.
            size: span.end,
        };
        let first = opened.and_then(|o| o.first);
        ObjectBody::new(self, source, version, first, span, Reading::Peer)
    }

    /// Forgets what is known of `object` after a write through shardcache: its cached metadata,
    /// and the lookup in flight, whose answer may predate the write.
    pub fn invalidate(&self, object: ObjectRef) {
        self.meta.invalidate(&self.parts.cache, object);
    }

    /// Brings every chunk of `key` into the cache, as reads of it would: a cached chunk is left
    /// alone, a chunk in flight is joined, a missing one is fetched (ETag-pinned) and stored.
    pub async fn warm(&self, source: &BucketSource, key: &str) -> Result<Warmed, Arc<OriginError>> {
        // With the checksums too: the SDKs ask for them on every GetObject, and metadata without
        // them would cost each warmed object a HEAD at its first read. Chunk 0 is not opened
        // with the lookup (a HEAD, where a GET of chunk 0 would go beside it): each chunk is
        // favoured before its fill starts, so that a full disk tier admits it.
        let Opened { meta, object, .. } = self.open(source, key, None, true).await?;
        let cache = &self.parts.cache;
        let chunk_size = cache.chunk_size();
        let etag: Arc<str> = meta.etag.as_str().into();
        let chunks = chunk_count(chunk_size, meta.size);
        let cached: Vec<Result<u64, Arc<OriginError>>> = stream::iter(0..chunks)
            .map(|index| {
                let span = chunk_span(index, chunk_size, meta.size);
                let len = span.end - span.start;
                let key = CacheKey::Chunk(object.clone(), etag.clone(), index);
                cache.favour(&key);
                let fetch = fetcher(&self.parts, source, &object, &meta.etag, span);
                async move {
                    let mut reader = match cache.chunk(key, len, 0..len, fetch).await {
                        ChunkRead::Hit(..) | ChunkRead::Disk(_) => return Ok(len),
                        ChunkRead::Leader(r) | ChunkRead::Follower(r) => r,
                    };
                    // A fill ends cleanly only with exactly `len` bytes (it checks), so draining
                    // to the end is enough.
                    while reader.next().await?.is_some() {}
                    Ok(0)
                }
            })
            .buffer_unordered(WARM_IN_FLIGHT)
            .collect()
            .await;
        let cached_bytes = cached.into_iter().sum::<Result<u64, _>>()?;
        Ok(Warmed {
            size: meta.size,
            etag: meta.etag.clone(),
            chunks,
            cached_bytes,
        })
    }
}

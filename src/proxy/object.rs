//! GetObject and HeadObject served through the cache.
//!
//! Metadata first (cached or from the upstream), then preconditions, then the range, then the
//! chunks that cover it, each from memory, disk, a fill in flight or a new upstream fetch. The
//! response header is sent with the first body bytes, so an upstream that reports the object
//! changed (412 on our `If-Match`) before any byte was sent gets one retry with fresh metadata.
//! Once bytes are out, a failure closes the connection: the client sees a short body, never
//! wrong bytes.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use prometheus::IntCounter;

use super::respond::{object_header, validator_header, Checksums};
use super::routes::Route;
use super::{ProxyState, RequestCtx};
use crate::cache::plan::{chunk_count, chunk_span, plan};
use crate::cache::{CacheKey, ChunkBody, ChunkFetch, ChunkRead, FillError, ObjectRef, StartedFill, Tier};
use crate::cluster::{ChunkPlace, UpstreamFetch};
use crate::metrics::{Metrics, Outcome, Source};
use crate::s3::conditional::{self, evaluate, Precondition};
use crate::s3::range::ByteRange;
use crate::s3::{Operation, S3Error};
use crate::types::{ETag, ObjectKey, ObjectMeta};
use crate::upstream::{OriginBody, OriginError};

/// Why streaming stopped.
enum StreamError {
    /// Nothing was sent yet; the client can still get a proper error.
    BeforeStart(FillError),
    /// Bytes were sent; the connection must be closed.
    AfterStart(Box<Error>),
}

/// Serves a GET (or HEAD) of `key` in `route`'s bucket.
pub async fn serve(
    state: &ProxyState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    key: &ObjectKey,
    head: bool,
) -> Result<()> {
    let object = ObjectRef {
        upstream: route.upstream.name.clone(),
        bucket: route.bucket.clone(),
        key: key.as_str().into(),
    };
    let range_header = session
        .req_header()
        .headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let requested = range_header.as_deref().and_then(ByteRange::parse);
    // The chunk a cold read starts in can be fetched along with the metadata, unless the start
    // depends on the size (a suffix range) or the answer may well have no body (HEAD, or a
    // conditional request).
    let first_chunk = match (head || conditional::any(&session.req_header().headers), requested) {
        (true, _) => None,
        (false, None) => Some(0),
        (false, Some(r)) => r.first_byte().map(|b| b / state.cache.chunk_size()),
    };
    // S3 returns an object's checksums to a client that asks, on answers about the whole object.
    let checksums = requested.is_none() && checksum_mode(&session.req_header().headers);
    let mut retried = false;
    loop {
        let looked = state
            .meta
            .get(&state.cache, &state.metrics, route, &object, first_chunk, checksums)
            .await;
        let (meta, opened, stale) = match looked {
            Ok(looked) => (looked.meta, looked.opened, looked.stale),
            Err(e) => return ctx.fail(session, e.answer()).await,
        };
        match evaluate(&session.req_header().headers, &meta) {
            Precondition::Proceed => {}
            Precondition::NotModified => {
                let mut h = validator_header(&meta, http::StatusCode::NOT_MODIFIED, &ctx.request_id)?;
                mark_stale(&mut h, stale)?;
                session.write_response_header(Box::new(h), true).await?;
                ctx.status = 304;
                return Ok(());
            }
            Precondition::Failed(condition) => {
                return ctx.fail(session, S3Error::PreconditionFailed { condition }).await
            }
        }
        let span = match requested.map(|r| r.resolve(meta.size)).transpose() {
            Ok(span) => span,
            Err(_) => {
                let e = S3Error::InvalidRange {
                    requested: range_header.clone().unwrap_or_default(),
                    size: meta.size,
                };
                return ctx.fail(session, e).await;
            }
        };
        let sums = match (checksums, head) {
            (false, _) => Checksums::Off,
            (true, true) => Checksums::Head,
            (true, false) => Checksums::Get,
        };
        let mut header = object_header(&meta, span.as_ref(), sums, &ctx.request_id)?;
        mark_stale(&mut header, stale)?;
        ctx.status = header.status.as_u16();
        if head {
            session.write_response_header(Box::new(header), true).await?;
            return Ok(());
        }
        ctx.outcome = Outcome::MemoryHit;
        let whole = span.unwrap_or(0..meta.size);
        let read = Read {
            object: &object,
            meta: &meta,
            whole,
            opened,
        };
        match stream(state, session, ctx, route, read, header).await {
            Ok(()) => return Ok(()),
            Err(StreamError::AfterStart(e)) => {
                // Part of the body is out: the only honest signal left is closing the connection.
                session.set_keepalive(None);
                session.shutdown().await;
                return Err(e);
            }
            Err(StreamError::BeforeStart(e)) => {
                if matches!(*e, OriginError::Changed) && !retried {
                    retried = true;
                    continue;
                }
                return ctx.fail(session, e.answer()).await;
            }
        }
    }
}

/// Says on an answer that its metadata could not be revalidated (stale-if-error).
fn mark_stale(header: &mut ResponseHeader, stale: bool) -> Result<()> {
    if stale {
        header.insert_header(STALE_HEADER, "revalidation-failed")?;
    }
    Ok(())
}

/// The response header that marks an answer served under stale-if-error.
const STALE_HEADER: &str = "x-shardcache-stale";

/// Whether the request asks for the object's checksums (`x-amz-checksum-mode: ENABLED`).
fn checksum_mode(headers: &http::HeaderMap) -> bool {
    headers
        .get("x-amz-checksum-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"enabled"))
}

/// Sends the response header with the first body bytes, and counts body bytes by source.
struct BodyWriter<'m> {
    header: Option<ResponseHeader>,
    metrics: &'m Metrics,
}

impl BodyWriter<'_> {
    async fn send(&mut self, session: &mut Session, ctx: &mut RequestCtx, data: Bytes, source: Source) -> Result<()> {
        if let Some(h) = self.header.take() {
            session.write_response_header(Box::new(h), false).await?;
            ctx.ttfb = Some(ctx.start.elapsed());
        }
        self.metrics.served_bytes(source).inc_by(data.len() as u64);
        session.write_response_body(Some(data), false).await
    }

    fn started(&self) -> bool {
        self.header.is_none()
    }
}

/// What one GET reads.
struct Read<'a> {
    object: &'a ObjectRef,
    meta: &'a ObjectMeta,
    /// The bytes to send.
    whole: Range<u64>,
    /// The chunk whose fill this request's metadata lookup started, and that fill.
    opened: Option<(u64, StartedFill)>,
}

async fn stream(
    state: &ProxyState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    read: Read<'_>,
    header: ResponseHeader,
) -> Result<(), StreamError> {
    let Read {
        object,
        meta,
        whole,
        mut opened,
    } = read;
    let cache = &state.cache;
    let chunk_size = cache.chunk_size();
    let chunks = chunk_count(chunk_size, meta.size);
    let sequential = state.sequential.observe(object, &whole, chunk_size);
    let etag: Arc<str> = meta.etag.as_str().into();
    let key_of = |index| CacheKey::Chunk(object.clone(), etag.clone(), index);
    let fetch_of = |index| {
        fetcher(
            state,
            route,
            object,
            &meta.etag,
            chunk_span(index, chunk_size, meta.size),
        )
    };
    let last = plan(whole.clone(), chunk_size, meta.size).last().map_or(0, |s| s.index);
    let ahead_limit = if sequential { chunks } else { last + 1 };
    let mut out = BodyWriter {
        header: Some(header),
        metrics: &state.metrics,
    };
    let after = |e| StreamError::AfterStart(e);

    for slice in plan(whole, chunk_size, meta.size) {
        let len = slice.chunk.end - slice.chunk.start;
        let read = match opened.take_if(|(index, _)| *index == slice.index) {
            Some((_, fill)) => ChunkRead::Leader(fill.reader()),
            None => {
                let within = slice.within.clone();
                cache
                    .chunk(key_of(slice.index), len, within, fetch_of(slice.index))
                    .await
            }
        };
        // Read-ahead starts once this chunk's first bytes are here, so that its fetches never
        // compete with this chunk's for the connection setup and CPU before the first byte.
        let mut read_ahead = Some(|| {
            let ahead = (slice.index + 1)..(slice.index + 1 + u64::from(state.read_ahead)).min(ahead_limit);
            for i in ahead {
                let span = chunk_span(i, chunk_size, meta.size);
                cache.prefetch(key_of(i), span.end - span.start, fetch_of(i));
            }
        });
        let (mut reader, outcome) = match read {
            ChunkRead::Hit(data, tier) => {
                if let Some(start) = read_ahead.take() {
                    start();
                }
                let (outcome, source) = match tier {
                    Tier::Memory => (Outcome::MemoryHit, Source::Memory),
                    Tier::Disk => (Outcome::DiskHit, Source::Disk),
                };
                ctx.outcome = ctx.outcome.max(outcome);
                out.send(session, ctx, data, source).await.map_err(after)?;
                continue;
            }
            ChunkRead::Disk(mut part) => {
                if let Some(start) = read_ahead.take() {
                    start();
                }
                ctx.outcome = ctx.outcome.max(Outcome::DiskHit);
                // The first piece was checked before the reader was returned: a failure after it
                // is after the response started.
                loop {
                    match part.next().await {
                        Ok(Some(piece)) => out.send(session, ctx, piece, Source::Disk).await.map_err(after)?,
                        Ok(None) => break,
                        Err(e) => return Err(after(Error::explain(ErrorType::ReadError, e.to_string()))),
                    }
                }
                continue;
            }
            ChunkRead::Leader(r) => (r, Outcome::Miss),
            ChunkRead::Follower(r) => (r, Outcome::Coalesced),
        };
        ctx.outcome = ctx.outcome.max(outcome);
        let mut pos = 0u64;
        while pos < slice.within.end {
            let piece = match reader.next().await {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                Err(e) => {
                    // The upstream says the object changed or went away: forget its metadata at
                    // once, so the next read opens the new version instead of failing too.
                    if matches!(*e, OriginError::Changed | OriginError::NoSuchKey) {
                        state.meta.invalidate(cache, object.clone());
                    }
                    return Err(match out.started() {
                        false => StreamError::BeforeStart(e),
                        true => after(Error::explain(
                            ErrorType::ReadError,
                            format!("upstream fill failed: {e}"),
                        )),
                    });
                }
            };
            if let Some(start) = read_ahead.take() {
                start();
            }
            let (from, to) = (pos, pos + piece.len() as u64);
            pos = to;
            let (a, b) = (from.max(slice.within.start), to.min(slice.within.end));
            if a < b {
                let part = piece.slice((a - from) as usize..(b - from) as usize);
                out.send(session, ctx, part, Source::Upstream).await.map_err(after)?;
            }
        }
        if pos < slice.within.end {
            let e = format!("chunk {} ended at byte {pos} of {}", slice.index, slice.within.end);
            return Err(after(Error::explain(ErrorType::ReadError, e)));
        }
    }
    if let Some(h) = out.header.take() {
        // An empty object or span: header only.
        session.write_response_header(Box::new(h), false).await.map_err(after)?;
        ctx.ttfb = Some(ctx.start.elapsed());
    }
    session.write_response_body(None, true).await.map_err(after)
}

/// The fetch closure for bytes `span` (one chunk) of version `etag` of `object`: from the
/// chunk's cluster owner when another member owns it, else (and should the owner fail) a ranged
/// read of the upstream pinned to the ETag.
pub(super) fn fetcher(
    state: &ProxyState,
    route: &Route,
    object: &ObjectRef,
    etag: &ETag,
    span: Range<u64>,
) -> impl FnOnce() -> ChunkFetch {
    let (metrics, route, object, etag) = (state.metrics.clone(), route.clone(), object.clone(), etag.clone());
    let index = span.start / state.cache.chunk_size();
    // Built only when the chunk is fetched: most reads are hits.
    move || {
        let upstream = upstream_fetch(&metrics, &route, &object, &etag);
        match &route.peers {
            Some(peers) => peers.fetch(ChunkPlace::new(&object, index), span, etag, upstream),
            None => upstream(span),
        }
    }
}

/// Ranged reads of version `etag` of `object` from the upstream, metered.
pub(super) fn upstream_fetch(metrics: &Arc<Metrics>, route: &Route, object: &ObjectRef, etag: &ETag) -> UpstreamFetch {
    let origin = route.upstream.origin.clone();
    let name = route.upstream.name.clone();
    let bucket = route.bucket.clone();
    let key = object.key.clone();
    let etag = etag.clone();
    let metrics = metrics.clone();
    Box::new(move |span| {
        Box::pin(async move {
            let request = origin.read(&bucket, &key, span, &etag);
            let body = timed(&metrics, &name, Operation::GetObject, request)
                .await
                .map_err(|e| {
                    let labels = [&*name, Operation::GetObject.as_str()];
                    metrics.upstream_errors.with_label_values(&labels).inc();
                    Arc::new(e)
                })?;
            Ok(MeteredBody::boxed(body, &metrics, &name))
        })
    })
}

/// Counts an upstream call to `upstream` and times it until it answers (its body, if any, is
/// metered by [`MeteredBody`]). Failures are the caller's to count: what is one depends on why
/// it asked.
pub(super) async fn timed<T>(
    metrics: &Metrics,
    upstream: &str,
    call: Operation,
    request: impl std::future::Future<Output = std::result::Result<T, OriginError>>,
) -> std::result::Result<T, OriginError> {
    let labels = [upstream, call.as_str()];
    metrics.upstream_requests.with_label_values(&labels).inc();
    let started = Instant::now();
    let result = request.await;
    metrics
        .upstream_duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    result
}

/// An upstream GET's body that counts its bytes and errors.
pub(super) struct MeteredBody {
    body: Box<dyn OriginBody>,
    bytes: IntCounter,
    errors: IntCounter,
}

impl MeteredBody {
    /// `body`, from a GET to upstream `name`, metered.
    pub(super) fn boxed(body: Box<dyn OriginBody>, metrics: &Metrics, name: &str) -> Box<dyn ChunkBody> {
        Box::new(Self {
            body,
            bytes: metrics.upstream_bytes.with_label_values(&[name]),
            errors: metrics
                .upstream_errors
                .with_label_values(&[name, Operation::GetObject.as_str()]),
        })
    }
}

#[async_trait]
impl ChunkBody for MeteredBody {
    async fn next(&mut self) -> Result<Option<&[u8]>, FillError> {
        match self.body.next().await {
            Ok(piece) => {
                self.bytes.inc_by(piece.map_or(0, |p| p.len() as u64));
                Ok(piece)
            }
            Err(e) => {
                self.errors.inc();
                Err(Arc::new(e))
            }
        }
    }

    async fn resume(&mut self, error: FillError) -> Result<(), FillError> {
        match self.body.resume(&error).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(error),
            Err(e) => Err(Arc::new(e)),
        }
    }
}

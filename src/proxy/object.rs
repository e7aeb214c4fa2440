//! GetObject and HeadObject: HTTP in, HTTP out, the reading done by the cache's
//! [`ObjectReader`](crate::cache::read::ObjectReader).
//!
//! Metadata first (cached or from the upstream), then preconditions, then the range, then the
//! body. The response header is sent with the first body bytes, so an upstream that reports the
//! object changed (412 on our `If-Match`) before any byte was sent gets one retry with fresh
//! metadata. Once bytes are out, a failure closes the connection: the client sees a short body,
//! never wrong bytes.

use std::time::Instant;

use bytes::Bytes;
use pingora_core::protocols::SocketDigest;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::respond::{object_header, validator_header, Checksums};
use super::routes::Route;
use super::{ProxyState, RequestCtx};
use crate::cache::read::{BodyError, ObjectBody};
use crate::cache::FillError;
use crate::metrics::{Metrics, Outcome, Source};
use crate::s3::conditional::{self, evaluate, Precondition};
use crate::s3::range::ByteRange;
use crate::s3::S3Error;
use crate::types::ObjectKey;
use crate::upstream::OriginError;

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
    let first_byte = match (head || conditional::any(&session.req_header().headers), requested) {
        (true, _) => None,
        (false, None) => Some(0),
        (false, Some(r)) => r.first_byte(),
    };
    // S3 returns an object's checksums to a client that asks, on answers about the whole object.
    let checksums = requested.is_none() && checksum_mode(&session.req_header().headers);
    let mut retried = false;
    loop {
        let reader = &state.reader;
        let opened = match reader.open(&route.source, key.as_str(), first_byte, checksums).await {
            Ok(opened) => opened,
            Err(e) => return ctx.fail(session, e.answer()).await,
        };
        let (meta, stale) = (opened.meta.clone(), opened.stale);
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
        let body = reader.read(&route.source, opened, span.unwrap_or(0..meta.size));
        match stream(&state.metrics, session, ctx, body, header).await {
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

/// Bytes the client's socket takes now without the write waiting for the client: half its send
/// buffer (the kernel counts its own overhead against the buffer too) less what the buffer still
/// holds, unsent or unacknowledged; 0 when unknown.
fn at_once(socket: Option<&SocketDigest>) -> u64 {
    let Some((info, buffer)) = socket.and_then(|s| Some((s.tcp_info()?, s.get_snd_buf()?))) else {
        return 0;
    };
    let held = u64::from(info.tcpi_notsent_bytes) + u64::from(info.tcpi_unacked) * u64::from(info.tcpi_snd_mss);
    (buffer as u64 / 2).saturating_sub(held)
}

/// Sends `body` under `header` (which goes out with its first bytes).
async fn stream(
    metrics: &Metrics,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut body: ObjectBody<'_>,
    header: ResponseHeader,
) -> Result<(), StreamError> {
    let mut out = BodyWriter {
        header: Some(header),
        metrics,
    };
    let after = |e| StreamError::AfterStart(e);
    let socket = session.digest().and_then(|d| d.socket_digest.clone());
    loop {
        let next = body.next_within(|| at_once(socket.as_deref())).await;
        ctx.outcome = ctx.outcome.max(body.outcome());
        match next {
            Ok(Some(piece)) => {
                // How quickly the client takes each piece decides whether it gets views of the
                // cache's buffers or copies (see `cache::read::body`).
                let (len, started) = (piece.bytes.len(), Instant::now());
                out.send(session, ctx, piece.bytes, piece.from).await.map_err(after)?;
                body.wrote(len, started.elapsed());
            }
            Ok(None) => break,
            Err(BodyError::Fill(e)) if !out.started() => return Err(StreamError::BeforeStart(e)),
            Err(e) => return Err(after(Error::explain(ErrorType::ReadError, e.to_string()))),
        }
    }
    if let Some(h) = out.header.take() {
        // An empty object or span: header only.
        session.write_response_header(Box::new(h), false).await.map_err(after)?;
        ctx.ttfb = Some(ctx.start.elapsed());
    }
    session.write_response_body(None, true).await.map_err(after)
}

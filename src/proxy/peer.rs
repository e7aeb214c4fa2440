//! The owner's side of cluster mode: the peer listener, which answers other members' chunk
//! requests (`GET /peer/v1/chunk`, see [`crate::cluster::peers`]) and nothing else.
//!
//! A request needs a valid proof under the cluster secret, and every answer to one is proven in
//! turn (its header tagged, its body framed in tagged segments; see [`crate::cluster::auth`]), so
//! the asker can tell the owner's bytes from anything else. Clients never reach this listener
//! (they are authorized at the node they asked, before any peer request is made). The chunk is
//! served from the cache, from a fill in flight, or by a fill from this node's own upstream, on
//! the same path as a client's read. A peer request is never forwarded: its route has no peers.
//! Without an ETag, the object's metadata is revalidated (or opened) with the upstream, so a
//! write through any member is seen by the next cold read through any other.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;

use super::respond::{object_header, Checksums};
use super::ProxyState;
use crate::cache::read::{BodyError, BucketSource, ObjectBody};
use crate::cluster::auth::{framed_len, ClusterKey, Framer, ANSWER_HEADER, PEER_HEADER};
use crate::cluster::peers::{MemberAnswer, CHUNK_PATH, MEMBER_PATH, OUTCOME_HEADER, UPSTREAM_FAILING};
use crate::cluster::placement::Member;
use crate::metrics::Source;
use crate::s3::{query_param, Failure, S3Error};
use crate::types::{ETag, ObjectMeta};
use crate::upstream::OriginError;

/// Seconds an idle peer connection is kept open.
const IDLE_SECONDS: u64 = 60;

/// The peer listener's app.
pub struct PeerApp {
    state: Arc<ProxyState>,
    me: Member,
    key: ClusterKey,
    max_skew: Duration,
}

/// A chunk request, parsed.
struct Ask {
    upstream: String,
    bucket: String,
    key: String,
    span: Range<u64>,
    etag: Option<ETag>,
}

impl Ask {
    /// The request of `query`, if it names one chunk (of `chunk_size` bytes, the last one
    /// shorter) by its span.
    fn parse(query: &str, chunk_size: u64) -> Option<Self> {
        let text = |name| query_param(query, name).map(Cow::into_owned);
        let number = |name| text(name)?.parse::<u64>().ok();
        let span = number("start")?..number("end")?;
        // A chunk, or its start: the bytes are cached as that chunk (a hit checks the length).
        if !(span.start.is_multiple_of(chunk_size) && span.start < span.end && span.end - span.start <= chunk_size) {
            return None;
        }
        let etag = match text("etag") {
            Some(t) => Some(ETag::parse(&t)?),
            None => None,
        };
        Some(Self {
            upstream: text("upstream")?,
            bucket: text("bucket")?,
            key: text("key")?,
            span,
            etag,
        })
    }
}

/// How a request ended, for the connection: whether it can serve another.
type Reusable = bool;

/// What proves the answers to one proven request.
struct Seal<'k> {
    key: &'k ClusterKey,
    /// The request's proof, which the answer's tag covers.
    proof: String,
}

impl Seal<'_> {
    /// Makes `h` the header of a proven answer whose body is `len` bytes: its length framed,
    /// its tag added; and the framer of that body.
    fn header(&self, h: &mut ResponseHeader, len: u64) -> pingora_error::Result<Framer> {
        h.insert_header("content-length", framed_len(len).to_string())?;
        let headers = h.headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes()));
        let tag = self.key.seal_header(&self.proof, h.status.as_u16(), headers);
        h.insert_header(ANSWER_HEADER, &tag)?;
        Ok(self.key.framer(&tag))
    }
}

impl PeerApp {
    /// The app of node `me` over its shared state, accepting proofs under `key` within
    /// `max_skew`.
    pub fn new(state: Arc<ProxyState>, me: Member, key: ClusterKey, max_skew: Duration) -> Self {
        Self {
            state,
            me,
            key,
            max_skew,
        }
    }

    async fn serve(&self, session: &mut ServerSession) -> Reusable {
        let req = session.req_header();
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        if req.method != Method::GET || ![CHUNK_PATH, MEMBER_PATH].contains(&req.uri.path()) {
            return self
                .refuse(session, None, StatusCode::NOT_FOUND, "not a peer call")
                .await;
        }
        let proof = req.headers.get(PEER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        let node = match self.key.verify(proof, "GET", &target, SystemTime::now(), self.max_skew) {
            Ok(node) => node,
            Err(e) => {
                tracing::warn!(error = %e, "peer request refused");
                return self.refuse(session, None, StatusCode::FORBIDDEN, &e.to_string()).await;
            }
        };
        let seal = Seal {
            key: &self.key,
            proof: proof.to_owned(),
        };
        if req.uri.path() == MEMBER_PATH {
            return self.member(session, &seal).await;
        }
        let query = req.uri.query().unwrap_or("").to_owned();
        self.chunk(session, &seal, &node, &query).await
    }

    /// Says which node this is, for members found by address (DNS).
    async fn member(&self, session: &mut ServerSession, seal: &Seal<'_>) -> Reusable {
        let answer = MemberAnswer {
            node: self.me.id.clone(),
            zone: self.me.zone.clone(),
        };
        let body = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
        reply(session, Some(seal), StatusCode::OK, "application/json", None, body).await
    }

    /// Answers a chunk request from `node`.
    async fn chunk(&self, session: &mut ServerSession, seal: &Seal<'_>, node: &str, query: &str) -> Reusable {
        let state = &self.state;
        let chunk_size = state.reader.cache().chunk_size();
        let Some(ask) = Ask::parse(query, chunk_size) else {
            return self
                .refuse(session, Some(seal), StatusCode::BAD_REQUEST, "malformed chunk request")
                .await;
        };
        let Some(upstream) = state.router.upstream(&ask.upstream).cloned() else {
            tracing::warn!(%node, upstream = ask.upstream, "a peer asked for an upstream this node does not have");
            return self
                .refuse(session, Some(seal), StatusCode::BAD_REQUEST, "unknown upstream")
                .await;
        };
        // Metadata is never taken from this node's cache on trust: the asker has none, perhaps
        // because it just wrote the object. A peer request is never forwarded: no peers.
        let source = BucketSource {
            upstream: upstream.name.clone(),
            origin: upstream.origin.clone(),
            bucket: ask.bucket.as_str().into(),
            meta_ttl: Some(Duration::ZERO),
            stale_if_error: Duration::ZERO,
            peers: None,
        };
        let reader = &state.reader;
        let (etag, opened) = match ask.etag {
            Some(etag) => (etag, None),
            None => match reader.open(&source, &ask.key, Some(ask.span.start), false).await {
                Ok(opened) => (opened.meta.etag.clone(), Some(opened)),
                Err(e) => return self.fail(session, seal, &e).await,
            },
        };
        let meta = opened.as_ref().map(|o| o.meta.clone());
        let span = match &meta {
            Some(meta) if ask.span.start >= meta.size => return self.beyond_end(session, seal, meta).await,
            Some(meta) => ask.span.start..ask.span.end.min(meta.size),
            None => ask.span,
        };
        let header = match answer_header(meta.as_deref(), &etag, &span) {
            Ok(h) => h,
            Err(e) => {
                return self
                    .refuse(session, Some(seal), StatusCode::INTERNAL_SERVER_ERROR, &e)
                    .await
            }
        };
        let body = reader.read_chunk(&source, &ask.key, etag, span.clone(), opened);
        self.stream(session, seal, body, header, span.end - span.start).await
    }

    /// Sends the chunk's `len` bytes under `header`, framed; an error before the first byte is
    /// answered.
    async fn stream(
        &self,
        session: &mut ServerSession,
        seal: &Seal<'_>,
        mut body: ObjectBody<'_>,
        header: ResponseHeader,
        len: u64,
    ) -> Reusable {
        let metrics = &self.state.metrics;
        let mut header = Some(header);
        let mut framer = None;
        loop {
            let piece = match body.next().await {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                Err(BodyError::Fill(e)) if header.is_some() => return self.fail(session, seal, &e).await,
                Err(e @ BodyError::Disk(_)) if header.is_some() => {
                    metrics.peer_served.with_label_values(&["failed"]).inc();
                    return self
                        .refuse(session, Some(seal), StatusCode::BAD_GATEWAY, &e.to_string())
                        .await;
                }
                Err(e) => return broke_off(&e),
            };
            if let Some(mut h) = header.take() {
                let outcome = match piece.from {
                    Source::Memory | Source::Disk => "hit",
                    Source::Upstream => "fill",
                };
                metrics.peer_served.with_label_values(&[outcome]).inc();
                let _ = h.insert_header(OUTCOME_HEADER, outcome);
                let Ok(f) = seal.header(&mut h, len) else {
                    return false;
                };
                framer = Some(f);
                if session.write_response_header(Box::new(h)).await.is_err() {
                    return false;
                }
            }
            metrics.peer_served_bytes.inc_by(piece.bytes.len() as u64);
            for part in framer.iter_mut().flat_map(|f| f.push(piece.bytes.clone())) {
                if session.write_response_body(part, false).await.is_err() {
                    return false;
                }
            }
        }
        // A chunk of no bytes cannot be asked for: without a header, the fill ended short.
        let Some(framer) = &mut framer else {
            return false;
        };
        let last = framer.finish().unwrap_or_default();
        session.write_response_body(last, true).await.is_ok()
    }

    /// The object's metadata alone: it ends before the span asked for.
    async fn beyond_end(&self, session: &mut ServerSession, seal: &Seal<'_>, meta: &ObjectMeta) -> Reusable {
        let header = object_header(meta, None, Checksums::Off, "peer").and_then(|mut h| {
            h.set_status(StatusCode::RANGE_NOT_SATISFIABLE)?;
            h.insert_header("content-range", format!("bytes */{}", meta.size))?;
            seal.header(&mut h, 0)?;
            Ok(h)
        });
        match header {
            Ok(h) => session.write_response_header(Box::new(h)).await.is_ok(),
            Err(e) => {
                self.refuse(session, Some(seal), StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
                    .await
            }
        }
    }

    /// Answers an upstream's answer or failure (the asker maps 404 and 412 back; anything else
    /// makes it read from the upstream itself).
    async fn fail(&self, session: &mut ServerSession, seal: &Seal<'_>, e: &OriginError) -> Reusable {
        let (status, code) = if e.upstream_failing() {
            // Not this node's fault: the asker reads from the upstream without ejecting it.
            (StatusCode::SERVICE_UNAVAILABLE, UPSTREAM_FAILING)
        } else {
            match e.answer() {
                Failure::S3(a @ (S3Error::NoSuchKey | S3Error::NoSuchBucket | S3Error::PreconditionFailed { .. })) => {
                    (a.status(), a.code())
                }
                _ => (StatusCode::BAD_GATEWAY, "BadGateway"),
            }
        };
        let outcome = if status.is_server_error() { "failed" } else { "fill" };
        self.state.metrics.peer_served.with_label_values(&[outcome]).inc();
        let why = Bytes::from(format!("{e}\n"));
        reply(session, Some(seal), status, "text/plain", Some(code), why).await
    }

    /// Refuses a request that is not a valid peer call (proving the answer once the request is
    /// proven).
    async fn refuse(
        &self,
        session: &mut ServerSession,
        seal: Option<&Seal<'_>>,
        status: StatusCode,
        why: &str,
    ) -> Reusable {
        if status.is_client_error() {
            self.state.metrics.peer_served.with_label_values(&["refused"]).inc();
        }
        reply(
            session,
            seal,
            status,
            "text/plain",
            None,
            Bytes::from(format!("{why}\n")),
        )
        .await
    }
}

/// Logs a chunk sent to a peer that broke off after its header: the connection is not reused.
fn broke_off(e: &dyn std::fmt::Display) -> Reusable {
    tracing::warn!(error = %e, "a chunk sent to a peer broke off");
    false
}

/// Sends a whole answer: `body` of `content_type`, with the S3 error `code` if any; proven and
/// framed under `seal` if the request was proven.
async fn reply(
    session: &mut ServerSession,
    seal: Option<&Seal<'_>>,
    status: StatusCode,
    content_type: &str,
    code: Option<&str>,
    body: Bytes,
) -> Reusable {
    let Ok(mut h) = ResponseHeader::build(status, Some(4)) else {
        return false;
    };
    let _ = h.insert_header("content-type", content_type);
    if let Some(code) = code {
        let _ = h.insert_header("x-amz-error-code", code);
    }
    let mut parts = vec![body.clone()];
    match seal {
        Some(seal) => {
            let Ok(mut framer) = seal.header(&mut h, body.len() as u64) else {
                return false;
            };
            parts = framer.push(body);
            parts.extend(framer.finish());
        }
        None => {
            let _ = h.insert_header("content-length", body.len().to_string());
        }
    }
    if session.write_response_header(Box::new(h)).await.is_err() {
        return false;
    }
    for part in parts {
        if session.write_response_body(part, false).await.is_err() {
            return false;
        }
    }
    session.write_response_body(Bytes::new(), true).await.is_ok()
}

/// The header of a chunk answer: the object's metadata when the request opened it, else the
/// validators of the version asked for.
fn answer_header(meta: Option<&ObjectMeta>, etag: &ETag, span: &Range<u64>) -> Result<ResponseHeader, String> {
    if let Some(meta) = meta {
        return object_header(meta, Some(span), Checksums::Off, "peer").map_err(|e| e.to_string());
    }
    let build = || -> pingora_error::Result<ResponseHeader> {
        let mut h = ResponseHeader::build(StatusCode::PARTIAL_CONTENT, Some(4))?;
        h.insert_header("etag", etag.as_str())?;
        h.insert_header("content-length", (span.end - span.start).to_string())?;
        h.insert_header("content-range", format!("bytes {}-{}/*", span.start, span.end - 1))?;
        Ok(h)
    };
    build().map_err(|e| e.to_string())
}

#[async_trait]
impl HttpServerApp for PeerApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(session.read_request().await, Ok(true)) {
            return None;
        }
        let keepalive = if *shutdown.borrow() { None } else { Some(IDLE_SECONDS) };
        session.set_keepalive(keepalive);
        if !self.serve(&mut session).await {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}

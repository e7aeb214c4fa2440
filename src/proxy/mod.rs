//! The request lifecycle: Pingora's [`ProxyHttp`] phases for an S3 endpoint.
//!
//! - `request_filter` parses the S3 request, routes its bucket, and answers GetObject and
//!   HeadObject from the cache (and local-directory calls) by itself;
//! - everything else goes to the upstream: `upstream_peer` picks it, `upstream_request_filter`
//!   rewrites the target and re-signs with the upstream's credentials, bodies stream both ways;
//! - `response_filter` drops cached metadata of keys a successful write or delete touched;
//! - `logging` records the request's metrics and one debug line.
//!
//! It speaks HTTP only: cached reads go through the cache's
//! [`ObjectReader`], passthrough through the upstream's
//! `S3Origin` (re-signing), and errors through `s3`'s one mapping. It uses every crate below the
//! server, `audit` and `lineage`; it must not reach the config (it gets its options from
//! `app`) or the chunk cache's internals.

mod authorize;
mod delete;
mod floor;
mod local;
mod object;
mod peer;
mod record;
mod respond;
mod routes;
mod upload;
mod warm;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

pub use authorize::{Gate, Refused, SharedGate};
pub use peer::PeerApp;
pub use routes::{BucketRoute, FallbackRoute, Freshness, Router, Upstream, UpstreamKind};
pub use warm::{WarmError, WarmReport};

use crate::audit::Audit;
use crate::auth::chunked::{ChunkSigning, Decoder};
use crate::cache::read::ObjectReader;
use crate::config::Residency;
use crate::lineage::Lineage;
use crate::metrics::{Metrics, Outcome};
use crate::s3::{CopySource, Operation, Query, S3Error};
use crate::types::{Identity, ObjectKey};
use crate::upstream::UNSIGNED_PAYLOAD;
use floor::PassFloor;
use routes::Route;

/// Everything the proxy phases share.
pub struct ProxyState {
    /// Bucket routes and upstreams.
    pub router: Router,
    /// Cached reads: metadata and chunks, from the cache or their source.
    pub reader: ObjectReader,
    /// Metric catalogue.
    pub metrics: Arc<Metrics>,
    /// Base domains for virtual-hosted-style requests.
    pub vhost_domains: Vec<String>,
    /// Client authentication and authorization; `None`: every request is anonymous and allowed.
    pub gate: Option<Arc<SharedGate>>,
    /// The audit log and lineage, each if on.
    pub records: Records,
}

impl ProxyState {
    /// Assembles the shared state.
    pub fn new(
        router: Router,
        reader: ObjectReader,
        metrics: Arc<Metrics>,
        vhost_domains: Vec<String>,
        gate: Option<Arc<SharedGate>>,
        records: Records,
    ) -> Self {
        Self {
            router,
            reader,
            metrics,
            vhost_domains,
            gate,
            records,
        }
    }
}

/// What shardcache records of requests besides metrics and logs.
#[derive(Default)]
pub struct Records {
    /// The audit log.
    pub audit: Option<Audit>,
    /// Per-job lineage.
    pub lineage: Option<Lineage>,
}

impl Records {
    /// Whether anything records requests (otherwise their job is not worked out).
    fn any(&self) -> bool {
        self.audit.is_some() || self.lineage.is_some()
    }
}

/// Per-request state carried through the phases.
pub struct RequestCtx {
    start: Instant,
    request_id: String,
    /// Who is asking (anonymous until client authentication lands).
    pub identity: Identity,
    resource: String,
    bucket_name: String,
    op: Operation,
    route: Option<Route>,
    key: Option<ObjectKey>,
    query: Query,
    /// A PUT, POST or DELETE of `key`: its cached metadata is forgotten.
    writes: bool,
    /// `x-amz-copy-source` as the upstream names the source.
    copy_source: Option<String>,
    outcome: Outcome,
    status: u16,
    ttfb: Option<Duration>,
    /// A chunk-signed body being checked and decoded on its way upstream.
    upload: Option<Decoder>,
    /// A body being checked against the hash it was signed with on its way upstream.
    payload: Option<upload::PayloadCheck>,
    /// Why the request body was refused mid-stream: the answer `fail_to_proxy` gives.
    body_error: Option<S3Error>,
    /// The S3 error code shardcache answered with.
    error: Option<&'static str>,
    /// Refused by the signature checks or the policy.
    denied: bool,
    /// The training job the request belongs to.
    job: Option<String>,
    /// A passed-through answer's rate against its upstream's floor.
    floor: Option<PassFloor>,
}

impl RequestCtx {
    /// Records the status of an answer shardcache wrote itself.
    fn answered(&mut self, written: Result<u16>) -> Result<()> {
        self.status = written?;
        Ok(())
    }
}

/// The S3 caching proxy.
pub struct S3Proxy {
    state: Arc<ProxyState>,
    clients: ClientTimeouts,
}

/// How long a client connection may idle between requests and between reads of a body.
#[derive(Clone, Copy, Debug)]
pub struct ClientTimeouts {
    /// Wait for a keep-alive connection's next request, in seconds.
    pub idle_seconds: u64,
    /// Wait between two reads of a request body.
    pub body: std::time::Duration,
    /// Wait for the client to take one piece of a response.
    pub send: std::time::Duration,
}

impl S3Proxy {
    /// A proxy over `state`.
    pub fn new(state: Arc<ProxyState>, clients: ClientTimeouts) -> Self {
        Self { state, clients }
    }

    fn s3_route<'a>(&self, ctx: &'a RequestCtx) -> Result<(&'a Route, &'a crate::upstream::S3Origin)> {
        match ctx.route.as_ref().map(|r| (r, &r.upstream.kind)) {
            Some((route, UpstreamKind::S3(origin))) => Ok((route, origin)),
            _ => Err(Error::explain(
                ErrorType::InternalError,
                "passthrough without an S3 route",
            )),
        }
    }

    /// Service-level calls (no bucket in the request). S3 has one, ListBuckets; anything else at
    /// `/` is another AWS service's call (STS, IAM), which re-signed as S3 would get a wrong
    /// answer: it is refused.
    async fn service_call(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ctx.op != Operation::ListBuckets {
            let e = S3Error::NotImplemented(
                "shardcache serves the S3 API only; send calls to other AWS services (STS, IAM, ...) to their own endpoints."
                    .into(),
            );
            ctx.fail(session, e).await?;
            return Ok(true);
        }
        match self.state.router.default_upstream().map(|u| &u.kind) {
            Some(UpstreamKind::S3(_)) => {
                let upstream = self.state.router.default_upstream().cloned().expect("matched above");
                let fresh = Freshness {
                    ttl: None,
                    stale_if_error: Duration::ZERO,
                };
                ctx.route = Some(Route::new(upstream, "", fresh, Residency::None, None));
                ctx.outcome = Outcome::Passthrough;
                Ok(false)
            }
            kind => {
                let fs = match kind {
                    Some(UpstreamKind::Fs(fs)) => Some(fs.clone()),
                    _ => None,
                };
                local::list_buckets(&self.state, session, ctx, fs.as_deref()).await?;
                Ok(true)
            }
        }
    }

    /// Readies a request for the upstream: its copy source named as the upstream knows it, and
    /// the checks its body gets on the way (chunk signatures, or the signed hash).
    async fn prepare_passthrough(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &Route,
        copy: Option<&CopySource>,
        chunks: Option<ChunkSigning>,
    ) -> Result<(), S3Error> {
        ctx.copy_source = copy.map(|c| self.copy_source(c, route)).transpose()?;
        ctx.payload = upload::PayloadCheck::for_request(session.req_header())?;
        ctx.upload = upload::admit(session, chunks, self.state.gate.is_some()).await?;
        Ok(())
    }

    /// `x-amz-copy-source` for the upstream: the source's bucket must be routed, to the
    /// destination's upstream (which is asked to read it), and is named as that upstream knows
    /// it. A source no route serves is never sent upstream.
    fn copy_source(&self, source: &CopySource, to: &Route) -> Result<String, S3Error> {
        let from = self
            .state
            .router
            .route(source.bucket.as_str())
            .ok_or(S3Error::NoSuchBucket)?;
        if from.upstream.name != to.upstream.name {
            return Err(S3Error::InvalidRequest(
                "The copy source is in a bucket of another upstream: copy through a client instead.".into(),
            ));
        }
        Ok(source.to_header(&from.source.bucket))
    }

    /// Forgets what is known of the objects a write or delete touched. Called before the client
    /// hears the outcome, whatever it is: a failed write costs a metadata lookup, a write that
    /// went through but whose answer was lost must not leave the old object served.
    fn invalidate(&self, ctx: &RequestCtx) {
        let Some(route) = &ctx.route else { return };
        if let (true, Some(key)) = (ctx.writes, &ctx.key) {
            self.state.reader.invalidate(route.source.object(key.as_str()));
        }
    }
}

/// A new request id (`x-amz-request-id`).
pub(crate) fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    format!("{t:016X}{:08X}", NEXT.fetch_add(1, Ordering::Relaxed) as u32)
}

#[async_trait]
impl ProxyHttp for S3Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: request_id(),
            identity: Identity::Anonymous,
            resource: String::new(),
            bucket_name: String::new(),
            op: Operation::Unknown,
            route: None,
            key: None,
            query: Query::default(),
            writes: false,
            copy_source: None,
            outcome: Outcome::Local,
            status: 0,
            ttfb: None,
            upload: None,
            payload: None,
            body_error: None,
            error: None,
            denied: false,
            job: None,
            floor: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.start = Instant::now();
        // Requests a client pipelines (sends before reading the answers) are answered in order;
        // without this Pingora answers the first and closes the connection.
        session.set_pipelining_enabled(true);
        crate::guard::header_done(session.as_downstream().stream());
        session.set_keepalive(Some(self.clients.idle_seconds));
        session.as_downstream_mut().set_read_timeout(Some(self.clients.body));
        session.as_downstream_mut().set_write_timeout(Some(self.clients.send));
        let req = session.req_header();
        ctx.resource = req.uri.path().to_owned();
        let gate = self.state.gate.as_ref().map(|g| g.current());
        let parsed = authorize::admit(gate.as_deref(), req, &self.state.vhost_domains, &self.state.metrics);
        let (verified, parsed) = match parsed {
            Ok(p) => p,
            Err(refused) => {
                let Refused {
                    error,
                    denied,
                    identity,
                    request,
                } = *refused;
                if self.state.records.any() {
                    ctx.job = record::job(session.req_header(), &identity);
                }
                (ctx.denied, ctx.identity) = (denied, identity);
                if let Some(r) = request {
                    ctx.op = r.op;
                    ctx.bucket_name = r.bucket.map(|b| b.to_string()).unwrap_or_default();
                    ctx.key = r.key;
                }
                ctx.fail(session, error).await?;
                return Ok(true);
            }
        };
        ctx.identity = verified.identity;
        if self.state.records.any() {
            ctx.job = record::job(session.req_header(), &ctx.identity);
        }
        let chunks = verified.chunks;
        let cacheable = parsed.cacheable();
        let method = &session.req_header().method;
        ctx.writes = !matches!(*method, http::Method::GET | http::Method::HEAD);
        ctx.op = parsed.op;
        ctx.key = parsed.key.clone();
        ctx.query = parsed.query;
        let Some(bucket) = parsed.bucket else {
            return self.service_call(session, ctx).await;
        };
        ctx.bucket_name = bucket.to_string();
        let Some(route) = self.state.router.route(bucket.as_str()) else {
            ctx.fail(session, S3Error::NoSuchBucket).await?;
            return Ok(true);
        };
        ctx.route = Some(route.clone());
        let cached = route.residency != Residency::None;
        if let (true, Some(key), true) = (cacheable, &parsed.key, cached) {
            let head = ctx.op == Operation::HeadObject;
            object::serve(&self.state, session, ctx, &route, key, head).await?;
            return Ok(true);
        }
        let origin = match &route.upstream.kind {
            UpstreamKind::Fs(fs) => {
                local::serve_fs(session, ctx, fs, &route.source.bucket).await?;
                return Ok(true);
            }
            UpstreamKind::S3(origin) => origin.clone(),
        };
        if ctx.op == Operation::DeleteObjects {
            delete::serve(
                &self.state,
                session,
                ctx,
                &route,
                &origin,
                chunks,
                &parsed.header_actions,
            )
            .await?;
            return Ok(true);
        }
        let copy = parsed.copy_source.as_ref();
        if let Err(e) = self.prepare_passthrough(session, ctx, &route, copy, chunks).await {
            ctx.fail(session, e).await?;
            return Ok(true);
        }
        ctx.outcome = Outcome::Passthrough;
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let (route, origin) = self.s3_route(ctx)?;
        let peer = origin.peer(&route.source.bucket).await;
        Ok(Box::new(
            peer.map_err(|e| Error::explain(ErrorType::ConnectError, e.to_string()))?,
        ))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(check) = ctx.payload.as_mut() {
            if let Err(e) = check.feed(body, end) {
                let why = e.to_string();
                ctx.body_error = Some(e);
                return Error::e_explain(ErrorType::InvalidHTTPHeader, why);
            }
        }
        if let Some(decoder) = ctx.upload.as_mut() {
            let mut out = BytesMut::new();
            let fed = body.take().map_or(Ok(()), |b| decoder.feed(&b, &mut out));
            if let Err(e) = fed.and_then(|()| if end { decoder.finish(&mut out) } else { Ok(()) }) {
                let why = e.to_string();
                ctx.body_error = Some(e.into());
                return Error::e_explain(ErrorType::InvalidHTTPHeader, why);
            }
            *body = Some(out.freeze());
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (route, origin) = self.s3_route(ctx)?;
        let path = origin.path_for(
            &route.source.bucket,
            ctx.key.as_ref().map(ObjectKey::as_str),
            &ctx.query.encode(),
        );
        let uri = path
            .parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "rewriting the upstream path", e))?;
        req.set_uri(uri);
        req.insert_header("host", origin.host_for(&route.source.bucket))?;
        if let Some(source) = &ctx.copy_source {
            req.insert_header("x-amz-copy-source", source)?;
        }
        if let Some(decoder) = &ctx.upload {
            let payload = upload::forward_headers(req, decoder)?;
            req.insert_header("x-amz-content-sha256", payload)?;
        }
        let payload = req
            .headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(UNSIGNED_PAYLOAD)
            .to_owned();
        origin
            .signer()
            .sign(req, &payload, SystemTime::now())
            .await
            .map_err(|e| Error::because(ErrorType::InternalError, "signing the upstream request", e))?;
        let labels = [&*route.upstream.name, ctx.op.as_str()];
        self.state.metrics.upstream.requests.with_label_values(&labels).inc();
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.status = resp.status.as_u16();
        ctx.ttfb = Some(ctx.start.elapsed());
        // Only an object's bytes are held to the floor: S3 keeps a long CopyObject or
        // CompleteMultipartUpload alive with a space now and then, a slow answer by design.
        if ctx.op == Operation::GetObject {
            let client = session.as_downstream().stream();
            ctx.floor = ctx
                .route
                .as_ref()
                .and_then(|r| r.upstream.floor)
                .map(|f| PassFloor::new(f, client));
        }
        self.invalidate(ctx);
        Ok(())
    }

    /// Holds a passed-through body to its upstream's floor ([`floor`]).
    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let (Some(floor), Some(piece), false) = (ctx.floor.as_mut(), body.as_ref(), end) else {
            return Ok(None);
        };
        let Some(why) = floor.count(piece.len(), session.as_downstream().stream()) else {
            return Ok(None);
        };
        if let Some(route) = &ctx.route {
            let labels = [&*route.upstream.name, ctx.op.as_str()];
            self.state.metrics.upstream.errors.with_label_values(&labels).inc();
        }
        Error::e_explain(ErrorType::ReadTimedout, format!("the upstream's answer: {why}"))
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        // A client that hangs up (mid-download, or a bare TCP probe) is normal: `logging` still
        // records it at debug. Errors talking to the upstream stay visible.
        match e.esource() {
            ErrorSource::Downstream => true,
            ErrorSource::Upstream => false,
            _ => matches!(e.etype(), ErrorType::WriteError | ErrorType::ConnectionClosed),
        }
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        // The upstream may have applied a write whose answer never came back.
        self.invalidate(ctx);
        if session.response_written().is_some() {
            // Bytes already went out: closing the connection is the only honest signal left.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let answer = match ctx.body_error.take() {
            // The client's body was refused: not the upstream's fault.
            Some(refused) => refused,
            None => {
                if let Some(route) = &ctx.route {
                    let labels = [&*route.upstream.name, ctx.op.as_str()];
                    self.state.metrics.upstream.errors.with_label_values(&labels).inc();
                }
                S3Error::BadGateway(e.to_string())
            }
        };
        if ctx.fail(session, answer).await.is_err() {
            ctx.status = 0;
        }
        FailToProxy {
            error_code: ctx.status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(ctx.status, |h| h.status.as_u16());
        let m = &self.state.metrics;
        let outcome = ctx.outcome.as_str();
        m.requests
            .with_label_values(&[ctx.op.as_str(), &status.to_string(), outcome])
            .inc();
        m.request_duration
            .with_label_values(&[outcome])
            .observe(ctx.start.elapsed().as_secs_f64());
        if let Some(ttfb) = ctx.ttfb {
            m.ttfb.with_label_values(&[outcome]).observe(ttfb.as_secs_f64());
        }
        let records = &self.state.records;
        if let Some(audit) = &records.audit {
            let method = &session.req_header().method;
            let write = !(method == http::Method::GET || method == http::Method::HEAD);
            if audit.wants(write, ctx.denied) {
                audit.record(record::audit(session, ctx, status));
            }
        }
        if let Some(lineage) = &records.lineage {
            if let Some(read) = record::lineage(session, ctx, status) {
                lineage.record(read);
            }
        }
        tracing::debug!(
            request_id = %ctx.request_id,
            identity = ?ctx.identity,
            method = %session.req_header().method,
            path = %ctx.resource,
            op = ctx.op.as_str(),
            status,
            outcome,
            duration_ms = ctx.start.elapsed().as_secs_f64() * 1e3,
            error = e.map(|e| e.to_string()),
            "request"
        );
    }
}

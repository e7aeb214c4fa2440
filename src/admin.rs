//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up), `/readyz`
//! (the cache is open and the S3 listener is serving; its body names a degraded disk tier), `POST /warm?bucket=B&key=K` (bring one
//! object into the cache; answers JSON when it is cached, used by `shardcache warm`), and
//! `GET /lineage?job=J[&format=csv]` (the object versions a job read).
//!
//! The first three stay open and read-only. `POST /warm` changes state and `/lineage` names
//! objects: with client authentication on they need the admin bearer token or the SigV4
//! signature of a principal the policy allows `shardcache:Warm` on the object, or
//! `shardcache:GetLineage` on the job ([`AdminAccess`]).
//!
//! It uses the proxy's shared state (metrics, the reader's warm, the gate), `lineage` and
//! `shutdown`'s readiness; it must not reach the upstreams or the cache's internals.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::auth::{RequestParts, Target, GET_LINEAGE, WARM};
use crate::proxy::{ProxyState, SharedGate};
use crate::s3::query_param;
use crate::shutdown::Readiness;
use crate::types::Identity;

/// Who may call `POST /warm` and `GET /lineage`.
#[derive(Clone)]
pub enum AdminAccess {
    /// Anyone who reaches the admin listener (client authentication is off).
    Open,
    /// Callers presenting `Authorization: Bearer <token>` (the token read from `token`, if
    /// set), or a SigV4 signature of a principal the gate's policy allows `shardcache:Warm`.
    Checked {
        /// The admin token file.
        token: Option<PathBuf>,
        /// The client gate in force.
        gate: Arc<SharedGate>,
    },
}

/// An admin call that the audit log records.
struct AdminCall {
    action: &'static str,
    bucket: Option<String>,
    key: Option<String>,
    start: std::time::Instant,
}

/// The admin HTTP app.
pub struct AdminApp {
    state: Arc<ProxyState>,
    access: AdminAccess,
    readiness: Arc<Readiness>,
}

impl AdminApp {
    /// An admin app over the proxy's shared state.
    pub fn new(state: Arc<ProxyState>, access: AdminAccess, readiness: Arc<Readiness>) -> Self {
        Self {
            state,
            access,
            readiness,
        }
    }

    /// Who the caller of a call that needs `action` on `resource` is (`anonymous` with access
    /// open, `admin-token` for the bearer token, else the SigV4 principal), or why the call is
    /// refused.
    async fn caller(&self, req: &http::request::Parts, action: &str, resource: &str) -> Result<String, Refusal> {
        let (token, gate) = match &self.access {
            AdminAccess::Open => return Ok("anonymous".into()),
            AdminAccess::Checked { token, gate } => (token, gate),
        };
        let authorization = req.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        if authorization.is_some_and(|a| a.starts_with(b"AWS4-HMAC-SHA256")) {
            return principal(gate, req, action, resource);
        }
        let Some(file) = token else {
            let why = format!(
                "this call needs the SigV4 signature of a principal allowed {} (no auth.admin_token_file is set)",
                action
            );
            return Err((StatusCode::FORBIDDEN, why, None));
        };
        let refusal = |status, why: &str| Err((status, why.to_owned(), None));
        let token = match tokio::fs::read(file).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the admin token file");
                return refusal(StatusCode::FORBIDDEN, "the admin token cannot be read");
            }
        };
        let token = token.trim_ascii();
        let presented = authorization
            .and_then(|a| a.strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii);
        match presented {
            Some(p) if !token.is_empty() && bool::from(p.ct_eq(token)) => Ok("admin-token".into()),
            Some(_) => refusal(StatusCode::FORBIDDEN, "wrong admin token"),
            None => refusal(
                StatusCode::UNAUTHORIZED,
                "this call needs Authorization: Bearer <admin token>, or a SigV4 signature",
            ),
        }
    }

    /// Records a call that changes state or names objects in the audit log (if on): who made
    /// it, and its outcome.
    fn audit(
        &self,
        session: &ServerSession,
        call: AdminCall,
        caller: Result<String, Refusal>,
        answer: &Response<Vec<u8>>,
    ) {
        let Some(audit) = &self.state.records.audit else { return };
        let (principal, denied) = match caller {
            Ok(p) => (p, false),
            Err((_, _, p)) => (p.unwrap_or_else(|| "anonymous".into()), true),
        };
        if !audit.wants(call.action == WARM, denied) {
            return;
        }
        audit.record(crate::audit::Record {
            log: "audit",
            time: crate::types::rfc3339(SystemTime::now()),
            request_id: crate::proxy::request_id(),
            principal,
            source: session.client_addr().map(|a| a.to_string()),
            operation: call.action,
            method: session.req_header().method.to_string(),
            bucket: call.bucket,
            key: call.key,
            bytes: answer.body().len() as u64,
            cache: "admin",
            status: answer.status().as_u16(),
            denied,
            latency_ms: (call.start.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            ..Default::default()
        });
    }

    async fn warm(&self, query: &str) -> Response<Vec<u8>> {
        let (Some(bucket), Some(key)) = (query_param(query, "bucket"), query_param(query, "key")) else {
            let body = json!({ "error": "POST /warm needs the query parameters bucket and key" });
            return reply_json(StatusCode::BAD_REQUEST, &body);
        };
        match self.state.warm(&bucket, &key).await {
            Ok(r) => reply_json(
                StatusCode::OK,
                &json!({
                    "bucket": bucket,
                    "key": key,
                    "size": r.size,
                    "etag": r.etag,
                    "chunks": r.chunks,
                    "cached_bytes": r.cached_bytes,
                }),
            ),
            Err(e) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
                reply_json(status, &json!({ "bucket": bucket, "key": key, "error": e.message }))
            }
        }
    }
}

/// Why an admin call is refused, and who made it if the signature verified.
type Refusal = (StatusCode, String, Option<String>);

/// The principal of a SigV4-signed call, or why it is refused: a signature that does not
/// verify, or a principal the policy does not allow `action` on `resource`.
fn principal(gate: &SharedGate, req: &http::request::Parts, action: &str, resource: &str) -> Result<String, Refusal> {
    let gate = gate.current();
    let parts = RequestParts {
        method: req.method.as_str(),
        path: req.uri.path(),
        query: req.uri.query().unwrap_or_default(),
        headers: &req.headers,
    };
    let verified = match gate.verifier.verify(&parts, SystemTime::now()) {
        Ok(v) => v,
        Err(e) => return Err((StatusCode::FORBIDDEN, e.to_string(), None)),
    };
    let name = match &verified.identity {
        Identity::Anonymous => "anonymous".to_owned(),
        Identity::Principal(p) => p.to_string(),
    };
    match gate
        .policy
        .allows(&verified.identity, Some(action), Target::Exact(resource))
    {
        true => Ok(name),
        false => Err((
            StatusCode::FORBIDDEN,
            format!("not allowed {action} on {resource}"),
            Some(name),
        )),
    }
}

/// `GET /lineage?job=J[&format=csv]`: the job's manifest, JSON (default) or CSV.
fn lineage(state: &ProxyState, query: &str) -> Response<Vec<u8>> {
    let Some(lineage) = &state.records.lineage else {
        return reply_json(
            StatusCode::NOT_FOUND,
            &json!({ "error": "lineage is off: set lineage.path" }),
        );
    };
    let Some(job) = query_param(query, "job").filter(|j| !j.is_empty()) else {
        return reply_json(StatusCode::BAD_REQUEST, &json!({ "error": "GET /lineage needs ?job=" }));
    };
    let entries = match lineage.manifest(&job) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "reading lineage");
            return reply_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({ "error": "cannot read lineage" }),
            );
        }
    };
    match query_param(query, "format").as_deref() {
        Some("csv") => reply(
            StatusCode::OK,
            "text/csv",
            crate::lineage::to_csv(&entries).into_bytes(),
        ),
        None | Some("json") => reply_json(StatusCode::OK, &json!({ "job": job, "objects": entries })),
        Some(_) => reply_json(StatusCode::BAD_REQUEST, &json!({ "error": "format is json or csv" })),
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = r.body().len().to_string().parse() {
        r.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    r
}

fn reply_json(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    let mut text = body.to_string();
    text.push('\n');
    reply(status, "application/json", text.into_bytes())
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let start = std::time::Instant::now();
        let req = session.req_header().clone();
        let (method, path) = (req.method.clone(), req.uri.path().to_owned());
        let query = req.uri.query().unwrap_or("").to_owned();
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                self.state.reader.cache().refresh_gauges();
                if let Some(peers) = self.state.router.peers() {
                    peers.refresh_gauges();
                }
                reply(StatusCode::OK, "text/plain; version=0.0.4", self.state.metrics.render())
            }
            (Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            // The admin listener starts with the S3 listener, after the cache opened.
            // Not ready once a stop has begun (the grace period), so that clients go elsewhere.
            // A degraded disk tier leaves the node ready (it serves from memory and the
            // upstream), and says so.
            (Method::GET, "/readyz") if self.readiness.is_ready() => {
                let body = match self.state.metrics.cache.store.disk_degraded.get() {
                    0 => "ready\n",
                    _ => {
                        "ready, degraded: the disk tier failed and is not used; serving from memory and the upstream\n"
                    }
                };
                reply(StatusCode::OK, "text/plain", body.as_bytes().to_vec())
            }
            (Method::GET, "/readyz") => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", b"stopping\n".to_vec()),
            (Method::POST, "/warm") => {
                let (bucket, key) = (query_param(&query, "bucket"), query_param(&query, "key"));
                let object = format!(
                    "{}/{}",
                    bucket.as_deref().unwrap_or_default(),
                    key.as_deref().unwrap_or_default()
                );
                let call = AdminCall {
                    action: WARM,
                    bucket: bucket.map(|b| b.into_owned()),
                    key: key.map(|k| k.into_owned()),
                    start,
                };
                let caller = self.caller(&req.as_owned_parts(), WARM, &object).await;
                let answer = match &caller {
                    Ok(_) => self.warm(&query).await,
                    Err((status, why, _)) => reply_json(*status, &json!({ "error": why })),
                };
                self.audit(session, call, caller, &answer);
                answer
            }
            (Method::GET, "/lineage") => {
                let job = query_param(&query, "job").unwrap_or_default().into_owned();
                let call = AdminCall {
                    action: GET_LINEAGE,
                    bucket: None,
                    key: None,
                    start,
                };
                let caller = self.caller(&req.as_owned_parts(), GET_LINEAGE, &job).await;
                let answer = match &caller {
                    Ok(_) => lineage(&self.state, &query),
                    Err((status, why, _)) => reply_json(*status, &json!({ "error": why })),
                };
                self.audit(session, call, caller, &answer);
                answer
            }
            (_, "/metrics" | "/healthz" | "/readyz" | "/warm" | "/lineage") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed\n".to_vec(),
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

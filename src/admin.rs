//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up), `/readyz`
//! (the cache is open and the S3 listener is serving), and `POST /warm?bucket=B&key=K` (bring
//! one object into the cache; answers JSON when it is cached, used by `shardcache warm`).
//!
//! The three GETs stay open and read-only. `POST /warm` changes state: with client
//! authentication on it needs the admin bearer token ([`WarmAccess`]).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::proxy::ProxyState;
use crate::s3::query_param;

/// Who may call `POST /warm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WarmAccess {
    /// Anyone who reaches the admin listener (client authentication is off).
    Open,
    /// Nobody (authentication is on and no admin token is configured).
    Closed,
    /// Callers presenting `Authorization: Bearer <token>`, the token read from this file.
    Token(PathBuf),
}

/// The admin HTTP app.
pub struct AdminApp {
    state: Arc<ProxyState>,
    warm_access: WarmAccess,
}

impl AdminApp {
    /// An admin app over the proxy's shared state.
    pub fn new(state: Arc<ProxyState>, warm_access: WarmAccess) -> Self {
        Self { state, warm_access }
    }

    /// Why a `POST /warm` carrying `authorization` is refused, if it is.
    async fn warm_refusal(&self, authorization: Option<&[u8]>) -> Option<(StatusCode, &'static str)> {
        let file = match &self.warm_access {
            WarmAccess::Open => return None,
            WarmAccess::Closed => {
                return Some((StatusCode::FORBIDDEN, "POST /warm is off: set auth.admin_token_file"));
            }
            WarmAccess::Token(file) => file,
        };
        let token = match tokio::fs::read(file).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the admin token file");
                return Some((StatusCode::FORBIDDEN, "the admin token cannot be read"));
            }
        };
        let token = token.trim_ascii();
        let presented = authorization
            .and_then(|a| a.strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii);
        match presented {
            Some(p) if !token.is_empty() && bool::from(p.ct_eq(token)) => None,
            Some(_) => Some((StatusCode::FORBIDDEN, "wrong admin token")),
            None => Some((
                StatusCode::UNAUTHORIZED,
                "POST /warm needs Authorization: Bearer <admin token>",
            )),
        }
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
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_owned());
        let query = req.uri.query().unwrap_or("").to_owned();
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                self.state.cache.refresh_gauges();
                reply(StatusCode::OK, "text/plain; version=0.0.4", self.state.metrics.render())
            }
            (Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            // The admin listener starts with the S3 listener, after the cache opened.
            (Method::GET, "/readyz") => reply(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
            (Method::POST, "/warm") => {
                let authorization = req
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes().to_vec());
                match self.warm_refusal(authorization.as_deref()).await {
                    Some((status, why)) => reply_json(status, &json!({ "error": why })),
                    None => self.warm(&query).await,
                }
            }
            (_, "/metrics" | "/healthz" | "/readyz" | "/warm") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed\n".to_vec(),
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

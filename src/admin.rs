//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/readyz` (the cache is open and the S3 listener is serving).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::cache::ChunkCache;
use crate::metrics::Metrics;

/// The admin HTTP app.
pub struct AdminApp {
    metrics: Arc<Metrics>,
    cache: ChunkCache,
}

impl AdminApp {
    /// An admin app exporting `metrics` and `cache`'s gauges.
    pub fn new(metrics: Arc<Metrics>, cache: ChunkCache) -> Self {
        Self { metrics, cache }
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

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => {
                self.cache.refresh_gauges();
                reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.render())
            }
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            // The admin listener starts with the S3 listener, after the cache opened.
            "/readyz" => reply(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

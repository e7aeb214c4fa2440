//! The audit record of a finished request.

use std::time::SystemTime;

use pingora_proxy::Session;

use super::RequestCtx;
use crate::audit::{rfc3339, Record};
use crate::types::Identity;

/// The request header that names the training job a read belongs to.
pub const JOB_HEADER: &str = "x-shardcache-job";

/// What the audit log records of `ctx`'s request, answered with `status`.
pub fn audit(session: &Session, ctx: &RequestCtx, status: u16) -> Record {
    let req = session.req_header();
    let header = |h: &http::HeaderMap, name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let answer = session.response_written();
    let answered = |name: &str| answer.and_then(|a| header(&a.headers, name));
    Record {
        log: "audit",
        time: rfc3339(SystemTime::now()),
        request_id: ctx.request_id.clone(),
        principal: match &ctx.identity {
            Identity::Anonymous => "anonymous".into(),
            Identity::Principal(p) => p.to_string(),
        },
        source: session.client_addr().map(|a| a.to_string()),
        operation: ctx.op.as_str(),
        method: req.method.to_string(),
        bucket: Some(ctx.bucket_name.clone()).filter(|b| !b.is_empty()),
        key: ctx.key.as_ref().map(|k| k.as_str().to_owned()),
        range: header(&req.headers, "range"),
        etag: answered("etag"),
        version_id: answered("x-amz-version-id"),
        bytes: session.body_bytes_sent() as u64,
        cache: ctx.outcome.as_str(),
        status,
        error: ctx.error,
        denied: ctx.denied,
        latency_ms: (ctx.start.elapsed().as_secs_f64() * 1e4).round() / 10.0,
        job: header(&req.headers, JOB_HEADER),
    }
}

//! What is recorded of a finished request: its audit record and its lineage read; and the
//! training job a request belongs to.

use std::time::SystemTime;

use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::RequestCtx;
use crate::audit::Record;
use crate::lineage::{now_ms, Read};
use crate::s3::query_param;
use crate::types::{rfc3339, Identity};

/// The request header, or query parameter (in a presigned URL, say), that names the training
/// job a request belongs to. The query parameter is set aside before routing, so the request
/// still reads through the cache.
pub const JOB: &str = crate::s3::JOB_PARAM;

/// The job of a request: its `x-shardcache-job` header, else its query parameter, else its
/// principal's name; none for an anonymous request that names none.
pub fn job(req: &RequestHeader, identity: &Identity) -> Option<String> {
    let header = req.headers.get(JOB).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let query = || query_param(req.uri.query().unwrap_or_default(), JOB).map(|j| j.into_owned());
    let principal = || match identity {
        Identity::Anonymous => None,
        Identity::Principal(p) => Some(p.to_string()),
    };
    header
        .or_else(query)
        .or_else(principal)
        .filter(|j| !j.is_empty() && j.len() <= 256)
}

/// The lineage read of a successful object GET, if it names a job.
pub fn lineage(session: &Session, ctx: &RequestCtx, status: u16) -> Option<Read> {
    let answer = session.response_written()?;
    let read = session.req_header().method == http::Method::GET && matches!(status, 200 | 206);
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Some(Read {
        job: ctx.job.clone().filter(|_| read)?,
        bucket: ctx.bucket_name.clone(),
        key: ctx.key.as_ref()?.as_str().to_owned(),
        etag: header("etag")?,
        version_id: header("x-amz-version-id").unwrap_or_default(),
        bytes: session.body_bytes_sent() as u64,
        at_ms: now_ms(),
    })
}

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
        job: ctx.job.clone(),
    }
}
